"""The soak's short version: three minutes of every scenario at once against a real server
(the toy model), with the soak's own checks on counts: descriptors, threads, event-loop
tasks and free KV blocks back at their idle values, no higher in the second half than in
the first, and no protocol failure. Memory growth is judged by the 60-minute run
(docs/reliability.md), not here: three minutes cannot measure MB per hour."""

from __future__ import annotations

import importlib.util
import json

import pytest


@pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="the load test needs the load extra")
def test_three_minutes_of_mixed_traffic_leave_nothing_behind(model_dir, tmp_path, capsys):
    # (Not imported here: locust patches the standard library on import; it runs in its own process.)
    from loadtest.soak import main

    server_args = f"--model {model_dir} --kv-cache-mb 32 --voice-adapt-steps 0"
    args = ["--minutes", "3", "--users", "5", "--every", "5", "--server-args", server_args, "--json"]
    main([*args, "--out", str(tmp_path / "soak")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    counts = {k: v for k, v in result["checks"].items() if not k.startswith("rss")}
    failed = {k: v for k, v in counts.items() if not v["ok"]}  # named in full: pytest cuts long dicts
    assert not failed, (failed, result["protocol_failures"][:3])
    assert result["events"] > 50, "the load hardly ran"
    seen = result["events_by_name"]
    for name in ("utterance", "ttfa", "cancel", "register", "hang_up", "delete"):
        assert seen.get(name, 0) > 0, f"no {name} events: {seen}"

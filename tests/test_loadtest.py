"""Locust smoke test: every scenario runs headless for a few seconds against a real server.

It keeps the locustfile from rotting: turns complete, cancels are acknowledged,
no stream errors. Underruns are not asserted on (timing belongs to the report)."""

from __future__ import annotations

import csv

from loadtest.harness import SCENARIOS, run_locust
from tests.support import ServerThread, make_engine


def test_locust_scenarios_complete_turns_without_failures(model_dir, tmp_path):
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path / "voices")
    try:
        run = run_locust(
            srv.address,
            users=len(SCENARIOS),
            seconds=12,
            scenarios=sorted(SCENARIOS),
            out_prefix=tmp_path / "smoke",
            fast=True,
            churn_voices=4,
        )
    finally:
        srv.stop()
        eng.close()
    with open(f"{tmp_path / 'smoke'}_stats.csv") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    with open(f"{tmp_path / 'smoke'}_failures.csv") as f:
        failures = list(csv.DictReader(f))
    # Underruns are timing, judged by the load-test report on a quiet machine, not here
    # (this box also runs pytest and Locust); every other failure is a broken protocol.
    broken = [f for f in failures if f["Name"] != "underrun"]
    assert not broken, run.output[-3000:]
    for scenario in ("conversation", "bark", "barge_in", "churn"):
        assert int(rows[(scenario, "ttfa")]["Request Count"]) >= 1, f"no {scenario} turn reached first audio"
    assert int(rows[("conversation", "utterance")]["Request Count"]) >= 1
    assert int(rows[("barge_in", "cancel")]["Request Count"]) >= 1
    assert {s["name"] for s in run.samples} >= {"ttfa", "utterance", "cancel"}


def test_security_cost_runs_the_same_load_plaintext_and_with_tls_and_keys(model_dir, tmp_path, capsys):
    """Both runs complete turns with no failures: the Locust users really speak TLS and send
    their key (a refused key would show as stream failures)."""
    from loadtest.security_cost import main

    server_args = f"--model {model_dir} --kv-cache-mb 32 --voice-adapt-steps 0"
    result = main(["--users", "2", "--seconds", "20", "--server-args", server_args, "--out", str(tmp_path / "s")])
    for run in ("plaintext", "tls_and_keys"):
        assert result[run]["failures"] == 0 and result[run]["utterances_per_min"] > 0, result
    assert result["ratio"]["utterances_per_min"] is not None

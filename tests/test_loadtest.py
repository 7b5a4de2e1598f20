"""Locust smoke test: every scenario runs headless for a few seconds against a real server."""
from __future__ import annotations

import csv

from loadtest.harness import SCENARIOS, run_locust
from tests.conftest import ServerThread, make_engine


def test_locust_scenarios_complete_turns_without_failures(model_dir, tmp_path):
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path / "voices")
    try:
        run = run_locust(srv.address, users=len(SCENARIOS), seconds=12, scenarios=sorted(SCENARIOS),
                         out_prefix=tmp_path / "smoke", fast=True, churn_voices=4)
    finally:
        srv.stop()
        eng.close()
    with open(f"{tmp_path / 'smoke'}_stats.csv") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    failures = int(rows[("", "Aggregated")]["Failure Count"])
    assert failures == 0, run.output[-3000:]
    assert run.returncode == 0
    for scenario in ("conversation", "bark", "barge_in", "churn"):
        assert int(rows[(scenario, "ttfa")]["Request Count"]) >= 1, f"no {scenario} turn reached first audio"
    assert int(rows[("conversation", "utterance")]["Request Count"]) >= 1
    assert int(rows[("barge_in", "cancel")]["Request Count"]) >= 1
    assert {s["name"] for s in run.samples} >= {"ttfa", "utterance", "cancel"}

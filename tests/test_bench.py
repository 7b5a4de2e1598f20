"""The benchmark script keeps running and keeps its JSON contract (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("audio_process", [False, True], ids=["audio-thread", "audio-process"])
def test_bench_quick_prints_one_json_object(model_dir, audio_process):
    out = subprocess.run(
        [sys.executable, "-m", "engine.bench", "--quick", "--json", "--model", str(model_dir)]
        + (["--audio-process"] if audio_process else []),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout)
    for key in ("ttfa_cold_ms", "ttfa_warm_ms", "frames_per_s_1", "realtime_streams"):
        assert key in result
    assert result["ttfa_cold_ms"] > 0 and result["ttfa_warm_ms"] > 0 and result["frames_per_s_1"] > 0
    assert result["prefix_hits"] > 0  # the warm measurement really hit the cache
    assert set(result["sweep"]) == {"1", "2", "4"}
    assert result["audio_process"] is audio_process  # the codec ran where the flag said


def test_prefill_thread_bench_prints_every_setting(model_dir):
    out = subprocess.run(
        [sys.executable, "-m", "engine.bench_threads", "--json", "--reps", "1", "--rounds", "1"]
        + ["--model", str(model_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rows = json.loads(out.stdout)["rows"]
    assert {(r["other_core"], r["prefill_threads"]) for r in rows} >= {("idle", 1), ("busy", 1)}
    assert all(r["cold_prefill_ms"] > r["warm_prefill_ms"] > 0 for r in rows)  # the cache skipped the voice

"""Start-up: the warm-up burst (engine/runtime/warmup.py) and the frozen heap (engine/runtime/heap.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.runtime.warmup import LINES, warm_up
from loadtest.harness import free_port
from tests.support import ServerThread, make_engine


def test_the_warm_up_speaks_every_stream_to_its_end_and_leaves_the_engine_idle(engine, voice):
    before = engine.stats()
    report = warm_up(engine, voice, streams=len(LINES) + 2, sample_rate=48000, chunk_frames=4, gap_s=0.01)
    after = engine.stats()
    assert (report.streams, report.failed) == (len(LINES) + 2, 0)
    assert report.audio_seconds > 0.5 * report.streams * 0.2  # every line says something
    assert after.decode_frames > before.decode_frames and after.steps > before.steps
    assert (after.running, after.waiting) == (0, 0)  # nothing left behind


def test_health_says_not_serving_until_the_warm_up_is_done(model_dir, tmp_path):
    """A load balancer sends players only once health says SERVING: never before the burst ended."""
    port, seen, stop = free_port(), [], threading.Event()

    def poll() -> None:
        stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        while not stop.is_set():
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                seen.append((time.monotonic(), status))
            except grpc.RpcError:
                time.sleep(0.005)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path, port=port, warmup_streams=12)
    try:
        time.sleep(0.2)
        stop.set()
        poller.join(5)
        report = srv.servicer.warmup
        assert report is not None and report.streams == 12 and report.failed == 0
        serving = [t for t, s in seen if s == health_pb2.HealthCheckResponse.SERVING]
        assert serving and min(serving) > report.finished_at
        assert any(s == health_pb2.HealthCheckResponse.NOT_SERVING for _, s in seen)  # the poll saw the window
    finally:
        srv.stop()
        eng.close()


def test_no_warm_up_without_a_stored_voice(model_dir, tmp_path):
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path, warmup_streams=4, demo_voices=False)
    try:
        assert srv.servicer.warmup is None
    finally:
        srv.stop()
        eng.close()


def test_a_frozen_heap_leaves_start_up_objects_out_of_later_collections():
    """In a process of its own (freezing is for the whole interpreter): objects alive at the
    freeze are no longer tracked by any generation, and later ones still are."""
    code = """
import gc
from engine.runtime.heap import freeze_startup_heap
old = [[i] for i in range(10000)]
frozen = freeze_startup_heap()
new = [[i] for i in range(10)]
tracked = {id(o) for o in gc.get_objects()}
print(frozen >= 10000, id(old[5]) in tracked, id(new[5]) in tracked)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False", "True"]


def test_start_up_settings_out_of_range_are_refused_with_the_flag_to_fix():
    from service.config import ServiceConfig

    with pytest.raises(ValueError, match=r"warmup_streams \(serve --warmup-streams\) must be 0 or more"):
        ServiceConfig(warmup_streams=-1)
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match=r"start_hold_s \(serve --start-hold-s\) must be 0 or more"):
            ServiceConfig(start_hold_s=bad)
    assert ServiceConfig(warmup_streams=0, start_hold_s=0.0).warmup_streams == 0

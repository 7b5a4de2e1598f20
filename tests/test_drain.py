"""SIGTERM drains the server (`serve` in a subprocess, the toy model): health turns
NOT_SERVING at once (and /ready 503), new streams and voice changes get UNAVAILABLE, a conversation finishes
the turn it is in and then ends with UNAVAILABLE, one that never finishes its turn is ended
at the drain deadline, and the process exits 0 within it."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from loadtest.harness import free_port
from service.gen import npc_voice_pb2 as pb
from service.gen import npc_voice_pb2_grpc as pb_grpc

DRAIN_S = 8.0


def start(model_dir, voices_dir, metrics_port: int) -> tuple[subprocess.Popen, str]:
    argv = [sys.executable, "-m", "service", "serve", "--port", "0", "--model", str(model_dir)]
    argv += ["--voices-dir", str(voices_dir), "--kv-cache-mb", "16", "--drain-seconds", str(DRAIN_S)]
    argv += ["--metrics-port", str(metrics_port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if m := re.search(r"serving on 127\.0\.0\.1:(\d+)", line):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, f"127.0.0.1:{m[1]}"
    raise AssertionError("server never came up")


class Talk:
    """A Converse stream fed from a queue, its responses collected on a thread."""

    def __init__(self, stub):
        self.requests: queue.Queue = queue.Queue()
        self.kinds: list[str] = []
        self.status: grpc.StatusCode | None = None
        self.requests.put(pb.ConverseRequest(config=pb.SessionConfig(voice_id="guard", sample_rate_hz=16000)))
        self.call = stub.Converse(iter(self.requests.get, None), timeout=60)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for resp in self.call:
                self.kinds.append(resp.WhichOneof("kind"))
            self.status = grpc.StatusCode.OK
        except grpc.RpcError as err:
            self.status = err.code()

    def say(self, text: str, turn: str) -> None:
        self.requests.put(pb.ConverseRequest(text=pb.TextFragment(text=text, turn_id=turn)))

    def flush(self, turn: str) -> None:
        self.requests.put(pb.ConverseRequest(flush=pb.Flush(turn_id=turn)))

    def wait_for(self, kind: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while kind not in self.kinds:
            assert time.monotonic() < deadline and self.status is None, (kind, self.kinds, self.status)
            time.sleep(0.02)


def ready(metrics_port: int) -> int:
    """The HTTP status of /ready, which load balancers without gRPC health checks probe."""
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/ready", timeout=5).status
    except urllib.error.HTTPError as err:
        return err.code


def test_sigterm_finishes_the_turn_in_progress_and_exits_0_within_the_deadline(model_dir, tmp_path):
    metrics_port = free_port()
    proc, address = start(model_dir, tmp_path / "voices", metrics_port)
    try:
        assert ready(metrics_port) == 200
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.NpcVoiceStub(channel)
            finishing, hanging = Talk(stub), Talk(stub)
            finishing.say("Hold the gate until dawn. ", "t1")
            hanging.say("Stay here and watch the road. ", "t1")
            finishing.wait_for("audio")
            hanging.wait_for("audio")
            finishing.say("Nobody passes without", "t1")  # the turn is half-sent when the signal comes
            hanging.say("and do not let", "t1")  # ... and this one's will never be finished
            time.sleep(0.2)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 5
            while (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                != health_pb2.HealthCheckResponse.NOT_SERVING
            ):
                assert time.monotonic() < deadline, "health never turned NOT_SERVING"
                time.sleep(0.05)
            assert ready(metrics_port) == 503
            try:
                list(stub.Synthesize(pb.SynthesizeRequest(voice_id="guard", text="Hi."), timeout=10))
                raise AssertionError("a new stream was accepted while draining")
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            try:
                stub.DeleteVoice(pb.DeleteVoiceRequest(voice_id="guard"), timeout=10)
                raise AssertionError("a voice change was accepted while draining")
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
            finishing.say(" the word.", "t1")  # the rest of the turn, then its end
            finishing.flush("t1")
            finishing.say("A new turn is not spoken.", "t2")
            finishing.thread.join(30)
            assert finishing.status == grpc.StatusCode.UNAVAILABLE
            done = finishing.kinds
            assert "flush_done" in done and done.index("flush_done") > done.index("audio")
            assert done.count("utterance_done") >= 2  # both sentences of the turn were spoken
            hanging.thread.join(DRAIN_S + 10)  # never finishes its turn: ended at the deadline
            assert hanging.status == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - sent > DRAIN_S - 1
            finishing.requests.put(None)
            hanging.requests.put(None)
        assert proc.wait(DRAIN_S + 10) == 0
        assert time.monotonic() - sent < DRAIN_S + 5
    finally:
        if proc.poll() is None:
            proc.kill()

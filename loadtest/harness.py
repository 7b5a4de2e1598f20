"""Start a server and run Locust headless against it: the pieces `run` and `report` share."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.gen import npc_voice_pb2 as pb
from service.gen import npc_voice_pb2_grpc as pb_grpc
from service.tls import open_channel

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
SCENARIOS = {
    "conversation": "ConversationUser",
    "barks": "BarkUser",
    "barge_in": "BargeInUser",
    "churn": "ChurnUser",
    "lifecycle": "LifecycleUser",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m service serve` in a subprocess with its own voices directory."""

    def __init__(self, extra_args: list[str] | None = None, log_path: Path | None = None, **client):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._voices = tempfile.TemporaryDirectory(prefix="npc-voices-")
        if log_path:
            log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path or os.devnull, "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "serve",
                "--port",
                str(self.port),
                "--voices-dir",
                self._voices.name,
                *(extra_args or []),
            ],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.channel = open_channel(self.address, **client)  # client: ca, server_name, api_key
        self.stub = pb_grpc.NpcVoiceStub(self.channel)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()  # never leak a server that failed to come up
            raise

    def _wait_ready(self, timeout: float = 300.0) -> None:
        """The shipped model's first start tunes the codec to three demo voices (a minute or
        more on a busy machine). wait_for_ready: each check waits for the connection, rather
        than failing at once while the channel backs off between attempts (its backoff grows
        to minutes, so a slow start could be missed)."""
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see its log")
            try:
                if (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=2, wait_for_ready=True).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                time.sleep(0.3)
        raise TimeoutError("server did not become healthy")

    def stats(self) -> pb.ServerStats:
        return self.stub.GetStats(pb.GetStatsRequest())

    def stop(self) -> None:
        self.channel.close()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()
        self._voices.cleanup()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class LocustRun:
    returncode: int
    csv_prefix: Path
    samples: list[dict]
    output: str


def run_locust(
    host: str,
    users: int,
    seconds: float,
    scenarios: list[str],
    out_prefix: Path,
    html: bool = False,
    fast: bool = False,
    churn_voices: int | None = None,
    env: dict[str, str] | None = None,
) -> LocustRun:
    """Run Locust headless; returns its exit code, CSV prefix and the per-event samples."""
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    samples_path = out_prefix.with_name(out_prefix.name + "_samples.jsonl")
    samples_path.unlink(missing_ok=True)
    env = dict(os.environ, **(env or {}), NPC_LOADTEST_SAMPLES=str(samples_path), PYTHONPATH=str(ROOT))
    if fast:
        env["NPC_LOADTEST_FAST"] = "1"
    if churn_voices is not None:
        env["NPC_LOADTEST_CHURN_VOICES"] = str(churn_voices)
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{int(seconds)}s",
        "--host",
        host,
        "--csv",
        str(out_prefix),
        "--only-summary",
        "--stop-timeout",
        "5",
        *(["--html", str(out_prefix) + ".html"] if html else []),
        *[SCENARIOS[s] for s in scenarios],
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 120)
    samples = [json.loads(line) for line in samples_path.read_text().splitlines()] if samples_path.exists() else []
    return LocustRun(done.returncode, out_prefix, samples, done.stdout + done.stderr)

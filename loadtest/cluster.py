"""A cluster on loopback: Redis as the shared voice store, replicas of the service, and
HAProxy in front of them with the configuration in deploy/haproxy.cfg.

Used by the cluster test and the scale-out sweep (`python -m loadtest.scaleout`). The
processes are the real programs (redis-server and haproxy from Debian); only the
replicas' addresses differ from a deployment: they are written over the backend's
`server` lines of the shipped configuration.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from loadtest.harness import ROOT, ServerProcess, free_port

HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"


def have_cluster_tools() -> str | None:
    """Why the cluster cannot run here, or None."""
    missing = [tool for tool in ("redis-server", "haproxy") if shutil.which(tool) is None]
    try:
        import redis  # noqa: F401
    except ImportError:
        missing.append("the redis Python package (the cluster extra)")
    return f"missing: {', '.join(missing)}" if missing else None


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not open port {port}")


class RedisProcess:
    """redis-server on a free loopback port, persisting to its own folder (append-only
    file), so a restart on the same port comes back with the same data."""

    def __init__(self, port: int | None = None, directory: Path | None = None):
        self.port = port or free_port()
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="npc-redis-")
        self.dir = Path(directory or self._tmp.name)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        args += ["--appendonly", "yes", "--save", "", "--loglevel", "warning"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc, "redis-server")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> RedisProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def haproxy_config(port: int, replicas: list[tuple[str, int]], text: str | None = None) -> str:
    """deploy/haproxy.cfg listening on `port`, its `server` lines replaced by one per
    replica: (gRPC address, metrics port, where /ready is checked)."""
    lines = (text if text is not None else HAPROXY_CFG.read_text()).splitlines()
    servers = [i for i, line in enumerate(lines) if line.strip().startswith("server ")]
    if not servers:
        raise ValueError("the configuration has no server lines to replace")
    indent = lines[servers[0]][: len(lines[servers[0]]) - len(lines[servers[0]].lstrip())]
    new = [f"{indent}server replica{i + 1} {addr} port {check}" for i, (addr, check) in enumerate(replicas)]
    out = [line for i, line in enumerate(lines[: servers[-1] + 1]) if i not in servers[1:]]
    out[servers[0] : servers[0] + 1] = new
    out += lines[servers[-1] + 1 :]
    return "\n".join(re.sub(r"^(\s*bind )\S+", rf"\g<1>127.0.0.1:{port}", line) for line in out) + "\n"


class Balancer:
    """haproxy with the shipped configuration in front of the given replica addresses."""

    def __init__(self, replicas: list[tuple[str, int]], log_path: Path | None = None):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="npc-haproxy-")
        cfg = Path(self._tmp.name) / "haproxy.cfg"
        cfg.write_text(haproxy_config(self.port, replicas))
        check = subprocess.run(["haproxy", "-c", "-q", "-f", str(cfg)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its configuration: {check.stdout}{check.stderr}")
        self._log = open(log_path or Path(self._tmp.name) / "haproxy.log", "w")
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=self._log, stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc, "haproxy")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self._log.close()
        self._tmp.cleanup()


class Cluster:
    """Redis, `n` replicas sharing it, and HAProxy in front; a context manager."""

    def __init__(self, n: int, server_args: list[str], log_dir: Path | None = None):
        self.redis = RedisProcess()
        self.replicas: list[ServerProcess] = []
        self.balancer: Balancer | None = None
        try:
            self.metrics_ports = [free_port() for _ in range(n)]
            for i, metrics in enumerate(self.metrics_ports):
                log = log_dir / f"replica{i + 1}.log" if log_dir else None
                args = [*server_args, "--voices", self.redis.url, "--metrics-port", str(metrics)]
                self.replicas.append(ServerProcess(args, log_path=log))
            replicas = list(zip([r.address for r in self.replicas], self.metrics_ports))
            self.balancer = Balancer(replicas, log_dir / "haproxy.log" if log_dir else None)
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> str:
        return self.balancer.address

    def stop(self) -> None:
        if self.balancer:
            self.balancer.stop()
        for r in self.replicas:
            r.stop()  # (idempotent: a test may have stopped one already)
        self.redis.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

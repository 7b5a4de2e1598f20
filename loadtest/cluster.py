"""A cluster on loopback: Redis as the shared voice store, replicas of the service, and
nginx in front of them with the configuration in deploy/nginx.conf.

Used by the cluster test and the scale-out sweep (`python -m loadtest.scaleout`). The
processes are the real programs (redis-server and nginx from Debian); only the replicas'
addresses differ from a deployment: they are written over the upstream's `server` lines
of the shipped configuration.
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

NGINX_CONF = ROOT / "deploy" / "nginx.conf"


def have_cluster_tools() -> str | None:
    """Why the cluster cannot run here, or None."""
    missing = [tool for tool in ("redis-server", "nginx") if shutil.which(tool) is None]
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

    def __init__(self):
        self.port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="npc-redis-")
        self.dir = Path(self._tmp.name)
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
        self._tmp.cleanup()

    def __enter__(self) -> RedisProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def nginx_config(port: int, replicas: list[str], text: str | None = None) -> str:
    """deploy/nginx.conf listening on loopback `port`, its upstream's `server` lines
    replaced by one per replica address (with the same options)."""
    lines = (text if text is not None else NGINX_CONF.read_text()).splitlines()
    servers = [i for i, line in enumerate(lines) if re.match(r"\s*server \S+:\d+", line)]
    if not servers:
        raise ValueError("the configuration has no upstream server lines to replace")
    template = lines[servers[0]]
    new = [re.sub(r"server \S+", f"server {addr}", template, count=1) for addr in replicas]
    out = [line for i, line in enumerate(lines) if i not in servers[1:]]
    out[servers[0] : servers[0] + 1] = new
    return "\n".join(re.sub(r"^(\s*listen )\d+", rf"\g<1>127.0.0.1:{port}", line) for line in out) + "\n"


class Balancer:
    """nginx with the shipped configuration in front of the given replica addresses."""

    def __init__(self, replicas: list[str], log_path: Path | None = None):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="npc-nginx-")
        prefix = Path(self._tmp.name)
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_config(self.port, replicas))
        # -p: temp files under our folder; pid and foreground on the command line, so the
        # file stays as shipped apart from the addresses.
        args = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", "stderr"]
        args += ["-g", f"daemon off; pid {prefix / 'nginx.pid'};"]
        check = subprocess.run([*args, "-t", "-q"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx refused its configuration: {check.stdout}{check.stderr}")
        self._log = open(log_path or prefix / "nginx.log", "w")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        _wait_port(self.port, self.proc, "nginx")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self._log.close()
        self._tmp.cleanup()


class Cluster:
    """Redis, `n` replicas sharing it, and nginx in front; a context manager. With `redis`
    given, the cluster uses that store and leaves it running when it stops."""

    def __init__(self, n: int, server_args: list[str], log_dir: Path | None = None, redis: RedisProcess | None = None):
        self._own_redis = redis is None
        self.redis = redis or RedisProcess()
        self.replicas: list[ServerProcess] = []
        self.balancer: Balancer | None = None
        try:
            for i in range(n):
                log = log_dir / f"replica{i + 1}.log" if log_dir else None
                self.replicas.append(ServerProcess([*server_args, "--voices", self.redis.url], log_path=log))
            log = log_dir / "nginx.log" if log_dir else None
            self.balancer = Balancer([r.address for r in self.replicas], log)
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
        if self._own_redis:
            self.redis.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

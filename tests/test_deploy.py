"""The deploy files: Kubernetes manifests and the Compose file validate against their
schemas (offline, with the schemas kubernetes-validate and check-jsonschema bundle), and
the validators are shown to reject a broken copy; every `serve` command line in them
parses with the CLI's own flags; every balancer routes on the header clients send."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.cli import parser
from service.routing import VOICE_HEADER

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (the test extra)")
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True)


def test_kubernetes_manifests_match_the_api_schemas(tmp_path):
    validate = tool("kubernetes-validate")
    done = run(validate, "--strict", *map(str, MANIFESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "broken.yaml"  # a misspelt field must fail strict validation
    broken.write_text((DEPLOY / "k8s" / "deployment.yaml").read_text().replace("readinessProbe", "readynessProbe"))
    assert run(validate, "--strict", str(broken)).returncode != 0


def test_the_compose_file_matches_the_compose_specification(tmp_path):
    check = tool("check-jsonschema")
    compose = DEPLOY / "compose.yaml"
    done = run(check, "--builtin-schema", "vendor.compose-spec", str(compose))
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text(compose.read_text().replace("stop_grace_period", "stop_grace_periode"))
    assert run(check, "--builtin-schema", "vendor.compose-spec", str(broken)).returncode != 0


def serve_lines() -> list[tuple[str, list[str]]]:
    """(where, arguments) of every `serve` command in the deploy files."""
    out = []
    for path in [*MANIFESTS, DEPLOY / "compose.yaml"]:
        for doc in yaml.safe_load_all(path.read_text()):
            stack = [doc]
            while stack:
                node = stack.pop()
                if isinstance(node, dict):
                    args = node.get("args") or node.get("command")
                    if isinstance(args, list) and args[:1] == ["serve"]:
                        out.append((path.name, args))
                    stack.extend(node.values())
                elif isinstance(node, list):
                    stack.extend(node)
    return out


def test_every_serve_command_in_the_deploy_files_parses_with_the_cli():
    lines = serve_lines()
    assert {where for where, _ in lines} >= {"deployment.yaml", "deployment-gpu.yaml", "compose.yaml"}
    for where, args in lines:
        try:
            parsed = parser().parse_args(args)
        except SystemExit:
            raise AssertionError(f"{where}: `{' '.join(args)}` does not parse") from None
        assert parsed.voices.startswith("redis://"), f"{where}: the replicas must share a voice store"
        assert parsed.metrics_port == 9464 and parsed.host == "0.0.0.0", where


def test_every_balancer_routes_on_the_header_clients_send():
    nginx_var = "$http_" + VOICE_HEADER.replace("-", "_")
    assert nginx_var in (DEPLOY / "nginx.conf").read_text()
    assert nginx_var in (DEPLOY / "k8s" / "ingress.yaml").read_text()
    assert f"balance hdr({VOICE_HEADER})" in (DEPLOY / "haproxy.cfg").read_text()

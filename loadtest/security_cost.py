"""What TLS and API keys cost: the same load against a plaintext server and a server with
TLS and keys, one after the other in one run, and the ratios.

    python -m loadtest.security_cost --users 4 --seconds 60
    python -m loadtest.security_cost --users 4 --seconds 60 --server-args="--model DIR" --json

Certificates (a throw-away CA and a server certificate, by openssl) and a keys file are
made in a temporary folder. Figures per run: time to first audio p50 and p95 (ms),
utterances per minute, underruns; the ratio row divides the secure run by the plaintext
one, so machine noise common to both cancels.
"""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
from pathlib import Path

import numpy as np

from loadtest.certs import make_ca, make_leaf
from loadtest.harness import ROOT, ServerProcess, run_locust
from service.auth import add_key


def figures(samples: list[dict], seconds: float) -> dict:
    ttfa = [s["ms"] for s in samples if s["name"] == "ttfa" and not s["failed"]]
    return {
        "ttfa_p50_ms": round(float(np.percentile(ttfa, 50)), 1) if ttfa else None,
        "ttfa_p95_ms": round(float(np.percentile(ttfa, 95)), 1) if ttfa else None,
        "utterances_per_min": round(sum(s["name"] == "utterance" for s in samples) * 60 / seconds, 1),
        "underruns": sum(s["name"] == "underrun" for s in samples),
        "failures": sum(s["failed"] and s["name"] != "underrun" for s in samples),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0, help="per run")
    ap.add_argument("--scenario", action="append", help="default: conversation and barks")
    ap.add_argument("--server-args", default="", help='extra `serve` arguments, e.g. "--model DIR"')
    ap.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results" / "security")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    scenarios = args.scenario or ["conversation", "barks"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ca = make_ca(d, "ca")
        make_leaf(d, "server", "ca", "DNS:npc.test")
        token = add_key(d / "keys.json", "loadtest", ["speak"])
        admin = add_key(d / "keys.json", "harness", ["speak", "admin"])
        secure_args = ["--tls-cert", str(d / "server.pem"), "--tls-key", str(d / "server.key")]
        secure_args += ["--keys", str(d / "keys.json")]
        client = {"ca": str(ca), "server_name": "npc.test"}
        env = {"NPC_LOADTEST_CA": str(ca), "NPC_LOADTEST_SERVER_NAME": "npc.test", "NPC_LOADTEST_API_KEY": token}
        runs = {}
        for name, extra, kw, locust_env in (
            ("plaintext", [], {}, {}),
            ("tls_and_keys", secure_args, {**client, "api_key": admin}, env),
        ):
            out = args.out.with_name(f"{args.out.name}_{name}")
            with ServerProcess(shlex.split(args.server_args) + extra, **kw) as server:
                run = run_locust(server.address, args.users, args.seconds, scenarios, out, fast=True, env=locust_env)
            runs[name] = figures(run.samples, args.seconds)
    plain, secure = runs["plaintext"], runs["tls_and_keys"]
    ratio = {k: round(secure[k] / plain[k], 3) if plain[k] and secure[k] is not None else None for k in plain}
    result = {"users": args.users, "seconds": args.seconds, "scenarios": scenarios, **runs, "ratio": ratio}
    if args.json:
        print(json.dumps(result))
    else:
        keys = list(plain)
        print(f"{args.users} users, {args.seconds:.0f} s per run, {', '.join(scenarios)}")
        print(f"{'run':<14} " + " ".join(f"{k:>18}" for k in keys))
        for name, row in (*runs.items(), ("secure/plain", ratio)):
            print(f"{name:<14} " + " ".join(f"{'-' if row[k] is None else row[k]:>18}" for k in keys))
    return result


if __name__ == "__main__":
    main()

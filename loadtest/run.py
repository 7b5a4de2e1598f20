"""Start a server, run Locust headless for a set time and user count, write Locust's CSV and HTML.

    python -m loadtest.run --users 8 --duration 60 --scenario conversation
    python -m loadtest.run --users 4 --scenario churn --server-args="--kv-cache-mb 16"
    python -m loadtest.run --host 127.0.0.1:50051 ...   # against a server you started yourself

Writes <out>_stats.csv, <out>_failures.csv, <out>_stats_history.csv, <out>.html
and <out>_samples.jsonl (default out: loadtest/results/run).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from loadtest.harness import ROOT, SCENARIOS, ServerProcess, run_locust


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds")
    ap.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS) + ["all"], help="repeatable; default conversation"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results" / "run")
    ap.add_argument("--host", help="use a running server instead of starting one")
    ap.add_argument("--server-args", default="", help='extra `serve` arguments, e.g. "--max-batch 1"')
    args = ap.parse_args()
    scenarios = args.scenario or ["conversation"]
    if "all" in scenarios:
        scenarios = sorted(SCENARIOS)
    server = (
        None
        if args.host
        else ServerProcess(shlex.split(args.server_args), log_path=args.out.with_name(args.out.name + "_server.log"))
    )
    try:
        host = args.host or server.address
        print(f"locust: {args.users} users, {args.duration:.0f} s, {', '.join(scenarios)} against {host}")
        run = run_locust(host, args.users, args.duration, scenarios, args.out, html=True)
        print(run.output[-4000:])
        if server is not None:
            st = server.stats()
            looked = st.prefix_hits + st.prefix_misses
            print(
                f"server: prefix hits {st.prefix_hits}/{looked} blocks, evictions {st.prefix_evictions}, "
                f"preemptions {st.preemptions}"
            )
    finally:
        if server is not None:
            server.stop()
    print(f"wrote {args.out}_stats.csv, {args.out}.html, {args.out}_samples.jsonl")


if __name__ == "__main__":
    main()

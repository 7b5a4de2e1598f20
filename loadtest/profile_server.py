"""Where the server's CPU goes under load: py-spy on a real server while the lean driver talks to it.

    python -m loadtest.profile_server --users 8,16 --seconds 30 --out docs/profile   # flame graphs + table
    python -m loadtest.profile_server --users 16 --json

For each user count: start a server, run loadtest/driver.py against it, and sample the
server with two py-spy processes at once (--nonblocking, so the server is never paused):
one writes a flame graph SVG, the other raw stacks that are sorted here into parts of the
pipeline. Core-seconds are samples / rate over the busy Python threads; the server's own CPU
from /proc is printed beside them, and the difference is native threads py-spy does not see
(gRPC's C core, OpenMP workers). A third samples only the thread holding the GIL: where one
part's GIL seconds come near its core-seconds, that part runs Python (or waits for it) more
than it computes, and every part's GIL seconds together can never pass one core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from loadtest.harness import ROOT, ServerProcess
from loadtest.report import process_cpu_s, run_lean

# (part, substrings of a stack, first match wins): ordered from the most specific.
PARTS = [
    ("LM forward", ("model_runner.py",)),
    ("sampling and stop rule", ("family.py", "sampler.py", "/flow_head.py")),
    ("codec and vocoder", ("audio_worker.py", "audio_process.py")),
    ("resampling, crossfade, PCM", ("streaming.py", "outputs.py", "resample")),
    ("engine loop and scheduler", ("runtime/engine.py", "scheduler.py", "block_manager.py")),
    ("service: segmenting, turns, events", ("service/",)),
    ("gRPC and asyncio", ("grpc", "asyncio")),
]


# Leaf frames of a thread that is blocked, not working. py-spy --nonblocking cannot always tell
# (it counted a drain thread's Condition.wait and the event loop's epoll as active), so these
# samples are dropped here; /proc's CPU figure beside the table is the check.
WAITING = ("Condition.wait (", "EpollSelector.select (", "Connection._recv (", "Event.wait (")


def part_of(stack: str) -> str:
    for name, needles in PARTS:
        if any(n in stack for n in needles):
            return name
    return "other Python"


def breakdown(raw: Path, rate: int) -> dict[str, float]:
    """Core-seconds per part, from py-spy's raw output (`frame;frame;... count` per line)."""
    seconds: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and not stack.rpartition(";")[2].startswith(WAITING):
            seconds[part_of(stack)] += int(count) / rate
    return dict(seconds.most_common())


def profile(users: int, seconds: float, out_dir: Path, rate: int, server_args: list[str]) -> dict:
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed (it comes with the `bench` extra)")
    out_dir.mkdir(parents=True, exist_ok=True)
    svg, raw = out_dir / f"profile_{users}_users.svg", out_dir / f"profile_{users}_users.txt"
    gil = out_dir / f"profile_{users}_users_gil.txt"
    with ServerProcess(server_args, log_path=out_dir / f"profile_{users}_server.log") as server:
        run_lean(server.address, users, 10, out_dir / f"warmup_{users}")  # voices warm, allocator settled
        pid = server.proc.pid
        common = ["record", "--pid", str(pid), "--subprocesses", "--rate", str(rate), "--nonblocking"]
        common += ["--duration", str(int(seconds))]
        spies = [
            subprocess.Popen([spy, *common, *extra, "--format", fmt, "-o", str(path)], stdout=subprocess.DEVNULL)
            for fmt, path, extra in (("flamegraph", svg, []), ("raw", raw, []), ("raw", gil, ["--gil"]))
        ]
        cpu0, wall0 = process_cpu_s(pid), time.monotonic()
        samples, driver = run_lean(server.address, users, seconds, out_dir / f"profile_{users}")
        server_cpu, wall = process_cpu_s(pid) - cpu0, time.monotonic() - wall0
        for p in spies:
            p.wait(timeout=seconds + 60)
    parts, gil_parts = breakdown(raw, rate), breakdown(gil, rate)
    cores = os.cpu_count() or 1
    return {
        "users": users,
        "seconds": round(wall, 1),
        "server_core_s": round(server_cpu, 1),
        "python_core_s": round(sum(parts.values()), 1),
        "driver_core_s": driver["cpu_s"],
        "machine_core_s": round(wall * cores, 1),
        "parts_core_s": {k: round(v, 2) for k, v in parts.items()},
        "parts_gil_s": {k: round(gil_parts.get(k, 0.0), 2) for k in parts},
        "gil_s": round(sum(gil_parts.values()), 1),
        "underruns": sum(1 for s in samples if s["name"] == "underrun"),
        "turns": sum(1 for s in samples if s["name"] == "ttfa"),
        "flame_graph": str(svg),
    }


def table(results: list[dict]) -> str:
    parts = list(dict.fromkeys(k for r in results for k in r["parts_core_s"]))
    head = "| part | " + " | ".join(f"{r['users']} users: core-s (share) / GIL-s" for r in results) + " |"
    lines = [head, "|---|" + "---|" * len(results)]
    for part in parts:
        cells = []
        for r in results:
            v, g = r["parts_core_s"].get(part, 0.0), r["parts_gil_s"].get(part, 0.0)
            cells.append(f"{v:.1f} ({v / r['python_core_s']:.0%}) / {g:.1f}")
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    for label, key in (
        ("Python threads seen by py-spy", "python_core_s"),
        ("GIL held", "gil_s"),
        ("server process (/proc)", "server_core_s"),
        ("lean driver", "driver_core_s"),
        ("machine (wall x cores)", "machine_core_s"),
    ):
        lines.append(f"| {label} | " + " | ".join(f"{r[key]:.1f}" for r in results) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", default="8,16")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results" / "profile")
    ap.add_argument("--server-args", default="", help="extra `serve` arguments")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import shlex

    results = [
        profile(int(u), args.seconds, args.out, args.rate, shlex.split(args.server_args)) for u in args.users.split(",")
    ]
    print(json.dumps(results) if args.json else table(results))
    return results


if __name__ == "__main__":
    main()

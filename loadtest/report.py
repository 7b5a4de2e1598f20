"""Concurrency sweep with Locust: how many NPCs can talk at once, and how fast first audio comes.

    python -m loadtest.report                    # full sweep, ~15 min on 2 cores
    python -m loadtest.report --quick --json     # 1,2,4 users, 15 s each

For each server configuration (the real one, then two baselines: prefix cache
off, and batching off, i.e. one stream decoded at a time) it starts a server,
runs the conversation scenario at 1, 2, 4, 8, 16, 32 users (stopping a
configuration once it saturates), and writes report.md, report.json and plots to
--out. A user "holds real time" when none of its turns had an underrun.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from loadtest.harness import ROOT, ServerProcess, run_locust
from service.gen import npc_voice_pb2 as pb

CONFIGS = {
    "batched + prefix cache": [],
    "prefix cache off": ["--no-prefix-cache"],
    "batching off": ["--max-batch", "1"],
    # serve as the library's ServiceConfig admits: by a count of 64 alone
    "admission off": ["--max-sessions", "64", "--starts-per-s", "0", "--min-slack-ms", "0", "--limit-raise-s", "0"],
}
TTFA_LIMIT_MS = 500.0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def measure(
    address: str,
    read_stats: Callable[[], list[pb.ServerStats]],
    users: int,
    seconds: float,
    out: Path,
    env: dict[str, str] | None = None,
    driver: str = "locust",
    server_pids: list[int] | None = None,
    ramp_s: float | None = None,
) -> dict:
    """One point of the conversation scenario against `address`; the prefix-cache and
    preemption counts are summed over the servers `read_stats` reads (one, or a cluster's).

    `driver`: "locust" or "lean" (loadtest/driver.py). The lean driver reports its own CPU;
    with `server_pids`, the servers' CPU over the point is measured too; `ramp_s`: its users
    start within this many seconds (Locust starts them all at once)."""

    def totals() -> dict[str, int]:
        stats = read_stats()
        return {k: sum(getattr(s, k) for s in stats) for k in ("prefix_hits", "prefix_misses", "preemptions")}

    before, server_cpu = totals(), sum(process_cpu_s(pid) for pid in server_pids or [])
    if driver == "lean":
        samples, run_info = run_lean(address, users, seconds, out, env=env, ramp_s=ramp_s)
    else:
        run = run_locust(address, users, seconds, ["conversation"], out, env=env)
        samples, run_info = run.samples, {}
    server_cpu = sum(process_cpu_s(pid) for pid in server_pids or []) - server_cpu
    after = totals()
    ttfa = [s["ms"] for s in samples if s["name"] == "ttfa"]
    underruns = [s for s in samples if s["name"] == "underrun"]
    heard = {s["user"] for s in samples if s["name"] == "ttfa"}  # admitted, and spoke to
    dry = {s["user"] for s in underruns}
    hits, misses = after["prefix_hits"] - before["prefix_hits"], after["prefix_misses"] - before["prefix_misses"]
    cores, wall = os.cpu_count() or 1, run_info.get("wall_s")
    return {
        "users": users,
        "turns": len(ttfa),
        "ttfa_p50_ms": percentile(ttfa, 0.5),
        "ttfa_p95_ms": percentile(ttfa, 0.95),
        "underruns": len(underruns),
        "users_with_underruns": len(dry),
        "admitted_users": len(heard),
        "realtime_users": len(heard - dry),
        "stream_errors": sum(1 for s in samples if s["name"] == "stream"),
        "refused": sum(1 for s in samples if s["name"] == "refused"),
        "utterances": sum(1 for s in samples if s["name"] == "utterance"),
        "cache_hit_ratio": hits / (hits + misses) if hits + misses else None,
        "preemptions": after["preemptions"] - before["preemptions"],
        "driver": driver,
        # Shares of the whole machine (all cores) over the point: what the load generator took
        # from the server it measures, and what the server used.
        "driver_cpu_share": run_info["cpu_s"] / (wall * cores) if wall else None,
        "server_cpu_share": server_cpu / (wall * cores) if wall and server_pids else None,
    }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process, its reaped children and its live ones
    (the server's audio process) (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # (a child that just ended)
        return 0.0
    own = sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return own + sum(process_cpu_s(int(c)) for c in children)


def run_lean(
    address: str,
    users: int,
    seconds: float,
    out: Path,
    env: dict[str, str] | None = None,
    fast: bool = False,
    ramp_s: float | None = None,
) -> tuple[list[dict], dict]:
    """loadtest/driver.py in its own process; returns its events and summary (wall and CPU seconds).
    `ramp_s`: users start within this many seconds (None: the driver's default)."""
    import subprocess
    import sys

    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "loadtest.driver", "--host", address, "--users", str(users)]
    cmd += ["--seconds", str(seconds), "--out", str(out)] + (["--fast"] if fast else [])
    cmd += [] if ramp_s is None else ["--ramp-s", str(ramp_s)]
    done = subprocess.run(
        cmd, cwd=ROOT, env=dict(os.environ, **(env or {})), capture_output=True, text=True, timeout=seconds + 120
    )
    if done.returncode != 0:
        raise RuntimeError(f"the lean driver failed: {done.stderr[-2000:]}")
    samples_path = out.with_name(out.name + "_samples.jsonl")
    samples = [json.loads(line) for line in samples_path.read_text().splitlines()]
    return samples, json.loads(done.stdout.strip().splitlines()[-1])


def saturated(point: dict) -> bool:
    p95 = point["ttfa_p95_ms"]
    return (
        point["turns"] == 0
        or (p95 is not None and p95 > 10 * TTFA_LIMIT_MS)
        or point["users_with_underruns"] * 2 > point["users"]
        or point.get("admitted_users", point["users"]) * 2 < point["users"]  # admission turns most away
    )


def summarise(points: list[dict]) -> dict:
    """max_realtime_users: the most users all served at once (none refused) with no underrun
    and p95 TTFA under the limit. overload: the points where admission refused someone, with
    the underruns of those it let in (what admission is for is keeping that at zero)."""
    ok = [
        p["users"]
        for p in points
        if p["turns"]
        and p["underruns"] == 0
        and p["stream_errors"] == 0
        and p.get("refused", 0) == 0
        and p["ttfa_p95_ms"] is not None
        and p["ttfa_p95_ms"] < TTFA_LIMIT_MS
    ]
    at8 = [p["ttfa_p95_ms"] for p in points if p["users"] == 8]
    overload = [
        {k: p.get(k) for k in ("users", "admitted_users", "refused", "underruns")} for p in points if p.get("refused")
    ]
    return {
        "max_realtime_users": max(ok, default=0),
        "p95_ttfa_ms_at_8": at8[0] if at8 else None,
        "overload": overload,
    }


def plot(results: dict[str, list[dict]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
    for name, points in results.items():
        users = [p["users"] for p in points]
        (line,) = axes[0].plot(users, [p["ttfa_p95_ms"] for p in points], marker="o", label=f"{name} p95")
        axes[0].plot(
            users, [p["ttfa_p50_ms"] for p in points], marker=".", ls="--", color=line.get_color(), label=f"{name} p50"
        )
        (line,) = axes[1].plot(users, [p["realtime_users"] for p in points], marker="o", label=name)
        axes[1].plot(
            users, [p.get("admitted_users", p["users"]) for p in points], marker=".", ls="--", color=line.get_color(),
            label=f"{name}: admitted",
        )  # fmt: skip
        (line,) = axes[2].plot(users, [p["underruns"] for p in points], marker="o", label=f"{name} underruns")
        axes[2].plot(
            users, [p.get("refused", 0) for p in points], marker="x", ls="--", color=line.get_color(),
            label=f"{name} refused at admission",
        )  # fmt: skip
        axes[3].plot(users, [p["cache_hit_ratio"] or 0 for p in points], marker="o", label=name)
    top = max((p["users"] for ps in results.values() for p in ps), default=1)
    axes[0].axhline(TTFA_LIMIT_MS, color="grey", lw=0.8, ls=":")
    users_axis = dict(xlabel="concurrent users", xscale="log", xticks=[1, 2, 4, 8, 16, 32])
    axes[0].set(title="time to first audio per turn", ylabel="ms", yscale="log", **users_axis)
    axes[1].plot([1, top], [1, top], color="grey", lw=0.8, ls=":", label="all users")
    axes[1].set(title="users admitted, and holding real time (no underrun)", ylabel="users", **users_axis)
    axes[2].set(title="underruns, and streams refused at admission", ylabel="events per point", **users_axis)
    axes[3].set(title="prefix-cache hit ratio (KV blocks)", ylim=(-0.05, 1.05), **users_axis)
    for ax in axes:
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=110)
    return ["report.png"]


def markdown(summary: dict, results: dict[str, list[dict]], pictures: list[str]) -> str:
    lines = [
        "# Load test report",
        "",
        f"Model: {summary['model']}. Machine: {summary['machine']}. Scenario: conversation (LLM-paced "
        f"tokens every 20-50 ms, 2-3 turns of 2-4 sentences, 1-3 s think time, 48 kHz PCM16). "
        f"{summary['seconds_per_point']:.0f} s per point. The load generator ({summary['driver']}) runs on "
        "the same machine as the server; its share of the machine's CPU is in each row.",
        "",
        f"**max_realtime_users: {summary['max_realtime_users']}** (most users with no underrun and p95 "
        f"time to first audio under {TTFA_LIMIT_MS:.0f} ms); **p95_ttfa_ms_at_8: "
        f"{_fmt(summary['p95_ttfa_ms_at_8'])}**.",
        "",
        "| configuration | max real-time users | p95 TTFA at 8 users (ms) |",
        "|---|---|---|",
    ]
    for name, s in summary["configs"].items():
        lines.append(f"| {name} | {s['max_realtime_users']} | {_fmt(s['p95_ttfa_ms_at_8'])} |")
    if summary["overload"]:
        past = [
            f"{p['users']} users: {p['admitted_users']} admitted, {p['refused']} refusals, {p['underruns']} underruns"
            for p in summary["overload"]
        ]
        lines += ["", "Past capacity (points where admission refused conversations): " + "; ".join(past) + "."]
    lines += [""] + [f"![sweep]({p})" for p in pictures] + [""]
    cols = [
        "users",
        "turns",
        "ttfa_p50_ms",
        "ttfa_p95_ms",
        "underruns",
        "realtime_users",
        "admitted_users",
        "cache_hit_ratio",
        "stream_errors",
        "refused",
        "driver_cpu_share",
        "server_cpu_share",
    ]
    for name, points in results.items():
        lines += [f"## {name}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_fmt(p[c]) for c in cols) + " |" for p in points]
        lines.append("")
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.2f}" if isinstance(v, float) and v < 10 else (f"{v:.0f}" if isinstance(v, float) else str(v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="1,2,4,8,16,32")
    ap.add_argument("--duration", type=float, default=40.0, help="seconds per point")
    ap.add_argument("--quick", action="store_true", help="1,2,4 users, 15 s each")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    ap.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results" / "report")
    ap.add_argument("--json", action="store_true", help="print the JSON summary")
    ap.add_argument("--server-args", default="", help='extra `serve` arguments, e.g. "--min-slack-ms 0"')
    ap.add_argument(
        "--driver",
        choices=("lean", "locust"),
        default="lean",
        help="load generator: the asyncio driver (default; its CPU share is reported) or Locust",
    )
    ap.add_argument(
        "--ramp-s",
        type=float,
        default=None,
        help="lean driver: users start within this many seconds (default 3; 0: all at the same instant)",
    )
    args = ap.parse_args()
    levels = [1, 2, 4] if args.quick else [int(x) for x in args.levels.split(",")]
    seconds = 15.0 if args.quick else args.duration
    configs = [c.strip() for c in args.configs.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    model = "?"
    bar = tqdm(total=len(levels) * len(configs), desc="load test", unit="point")
    for name in configs:
        results[name] = []
        log = args.out / f"server_{name.replace(' ', '_')}.log"
        with ServerProcess(CONFIGS[name] + shlex.split(args.server_args), log_path=log) as server:
            model = server.stub.GetCapabilities(pb.GetCapabilitiesRequest()).model
            for users in levels:
                bar.set_postfix_str(f"{name}, {users} users")
                out = args.out / f"{name.replace(' ', '_')}_{users}"
                point = measure(
                    server.address,
                    lambda: [server.stats()],
                    users,
                    seconds,
                    out,
                    driver=args.driver,
                    server_pids=[server.proc.pid],
                    ramp_s=args.ramp_s,
                )
                results[name].append(point)
                bar.update()
                if saturated(point):
                    bar.update(len(levels) - len(results[name]))
                    break
                time.sleep(2)  # let the queue drain between points
    bar.close()
    summary = {
        **summarise(results.get("batched + prefix cache", [])),
        "configs": {n: summarise(p) for n, p in results.items()},
        "model": model,
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.python_version()}",
        "seconds_per_point": seconds,
        "driver": args.driver,
        "ramp_s": args.ramp_s,
        "server_args": args.server_args,
        "points": results,
    }
    pictures = plot(results, args.out)
    (args.out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(summary, results, pictures))
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "points"}))
    else:
        print(markdown(summary, results, []))
        print(f"wrote {args.out}/report.md, report.json, report.png")


if __name__ == "__main__":
    main()

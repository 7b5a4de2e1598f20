"""A soak: mixed traffic for a long time while the server's resources are sampled.

    python -m loadtest.soak --minutes 60 --users 5 --plot docs/soak.png  # the documented run
    python -m loadtest.soak --minutes 3 --users 4 --server-args="--model DIR" --json

Locust runs every scenario at once (conversations, barks, barge-ins, voice churn, and
lifecycle users that register a voice, hang up on it mid-sentence and delete it) against a
server it starts. Every --every seconds it samples the server process: resident memory,
open file descriptors, threads, and from GetStats the free KV blocks and the event-loop
tasks. After the load it waits for the server to go idle and samples once more.

The first --warmup share of the time is a warm-up: it fills what is meant to fill (thread
pools, caches), then the server goes idle and its counts are taken. After the main run:
- resident memory grows less than --max-rss-mb-per-hour (a least-squares slope);
- descriptors, threads and tasks stay flat: with each open stream's share taken out, the
  median count of the run's second half is no higher than that of its first half
  (within --slack), and once idle the counts, and the free KV blocks, are back at their
  values after the warm-up (within --slack);
- no protocol failure: every stream ended with a status the protocol allows and no
  cancelled turn spoke after its acknowledgement (underruns are capacity, not protocol,
  and are counted apart).
It writes a plot (--plot) and the result with every sample (<out>_result.json), and prints a
table, or JSON with --json; exit status 1 on a fail.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from loadtest.harness import ROOT, SCENARIOS, ServerProcess, run_locust

COUNTS = ("fds", "threads", "tasks")


def sample(server: ServerProcess, t0: float) -> dict:
    pid = server.proc.pid
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    stats = server.stats()
    return {
        "t": round(time.monotonic() - t0, 1),
        "rss_mb": round(rss_kb / 1024, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "tasks": stats.event_loop_tasks,
        "kv_free": stats.kv_blocks_free,
        "open_streams": stats.open_streams,
    }


def wait_idle(server: ServerProcess, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = server.stats()
        if st.open_streams == 0 and st.running == 0 and st.waiting == 0:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the server did not go idle: {server.stats()}")


def judge(steady: list[dict], idle_before: dict, idle_after: dict, failures: list[dict], args) -> dict:
    """The checks on the samples after the warm-up, and the idle states around the run."""
    half = len(steady) // 2
    checks = {}
    if len(steady) >= 3:
        slope = np.polyfit([s["t"] / 3600 for s in steady], [s["rss_mb"] for s in steady], 1)[0]
        checks["rss_mb_per_hour"] = (round(float(slope), 1), slope < args.max_rss_mb_per_hour)
    streams = np.array([s["open_streams"] for s in steady], dtype=float)
    for key in COUNTS:
        if half:
            # Under load a count includes each live stream's thread and tasks, so one sample's
            # value is as much the moment's concurrency as anything held. The count per open
            # stream (least squares over the run) is taken out before the halves' medians are
            # compared; a leak still moves the whole second half.
            count = np.array([s[key] for s in steady], dtype=float)
            share = float(np.polyfit(streams, count, 1)[0]) if np.ptp(streams) > 0 else 0.0
            held = count - share * streams
            first, second = float(np.median(held[:half])), float(np.median(held[half:]))
            checks[f"{key}_second_half_median"] = (
                f"{second:.1f} vs {first:.1f} ({share:.2f} per open stream taken out)",
                second <= first + args.slack,
            )
        checks[f"{key}_idle"] = (
            f"{idle_after[key]} vs {idle_before[key]}",
            idle_after[key] <= idle_before[key] + args.slack,
        )
    free_after, free_before = idle_after["kv_free"], idle_before["kv_free"]
    checks["kv_free_idle"] = (f"{free_after} vs {free_before}", free_after >= free_before)
    checks["protocol_failures"] = (len(failures), not failures)
    return {name: {"value": value, "ok": bool(ok)} for name, (value, ok) in checks.items()}


def plot(samples: list[dict], warmup_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex=True)
    t = [s["t"] / 60 for s in samples]
    panels = [
        ("rss_mb", "resident memory (MB)"),
        ("fds", "open descriptors"),
        ("threads", "threads"),
        ("tasks", "event-loop tasks"),
    ]
    for ax, (key, title) in zip(axes.flat, panels):
        ax.plot(t, [s[key] for s in samples], lw=1.2)
        ax.axvline(warmup_s / 60, color="grey", ls="--", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("minutes (dashed: end of warm-up)")
    fig.suptitle("soak: server resources under mixed load", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--users", type=int, default=5, help="Locust users, spread over the scenarios")
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=0.2, help="share of the run before the checks start")
    ap.add_argument("--max-rss-mb-per-hour", type=float, default=20.0)
    ap.add_argument("--slack", type=int, default=2, help="counts may end this much above their idle value")
    ap.add_argument("--server-args", default="", help='extra `serve` arguments, e.g. "--model DIR"')
    ap.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results" / "soak")
    ap.add_argument("--plot", type=Path, help="write the resource plot here (PNG)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    seconds = args.minutes * 60
    log = args.out.with_name(args.out.name + "_server.log")
    scenarios, warmup_s = sorted(SCENARIOS), args.warmup * seconds
    with ServerProcess(shlex.split(args.server_args), log_path=log) as server:
        t0 = time.monotonic()
        samples, done = [sample(server, t0)], threading.Event()

        def sampler() -> None:
            while not done.wait(args.every):
                samples.append(sample(server, t0))

        def idle() -> dict:
            wait_idle(server)
            time.sleep(2.0)  # let finished streams' tasks and threads wind down
            return sample(server, t0)

        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        try:
            # The warm-up fills what is meant to fill (thread pools, caches), then goes idle:
            # the counts after the run are compared with that idle state, not with a cold start.
            run_locust(server.address, args.users, warmup_s, scenarios, args.out, fast=True, churn_voices=8)
            idle_before = idle()
            run = run_locust(
                server.address, args.users, seconds - warmup_s, scenarios, args.out, fast=True, churn_voices=8
            )
        finally:
            done.set()
            thread.join()
        idle_after = idle()
    protocol = [s for s in run.samples if s["failed"] and s["name"] != "underrun"]
    underruns = sum(1 for s in run.samples if s["name"] == "underrun")
    checks = judge([s for s in samples if s["t"] > idle_before["t"]], idle_before, idle_after, protocol, args)
    result = {
        "minutes": args.minutes,
        "users": args.users,
        "events": len(run.samples),
        "events_by_name": dict(Counter(s["name"] for s in run.samples)),
        "underruns": underruns,
        "protocol_failures": protocol[:20],
        "checks": checks,
        "passed": all(c["ok"] for c in checks.values()),
        "idle_before": idle_before,
        "idle_after": idle_after,
        "samples": samples,
    }
    # Kept beside Locust's files, so a failed run can be read afterwards, samples and all.
    args.out.with_name(args.out.name + "_result.json").write_text(json.dumps(result, indent=1) + "\n")
    if args.plot:
        plot(samples, args.warmup * seconds, args.plot)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.minutes:g} min, {args.users} users, {len(run.samples)} events, {underruns} underruns")
        print(f"{'check':<26} {'value':>16}  ok")
        for name, c in checks.items():
            print(f"{name:<26} {str(c['value']):>16}  {'yes' if c['ok'] else 'NO'}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

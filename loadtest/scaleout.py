"""Scale-out sweep: real-time conversations through nginx with 1, 2 and 3 replicas.

    python -m loadtest.scaleout                                   # ~15 min on 2 cores
    python -m loadtest.scaleout --replicas 1,2 --per-replica 1,2 --duration 15 --json

One Redis holds the voices for the whole run: --voices voices are registered through the
balancer once, and every later replica loads them (and their prompts) from the store. For
each replica count n (loadtest/cluster.py: n replicas, nginx with deploy/nginx.conf) the
conversation scenario runs at u*n users for each u in --per-replica, so the load per replica
is the same across n. A point holds real time as in loadtest.report: no underrun, no stream
error, p95 time to first audio under 500 ms. Writes scaleout.json, scaleout.md and
scaleout.png to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import time
from pathlib import Path

import grpc
from tqdm import tqdm

from engine.audio import speechlike_wave
from loadtest.cluster import Cluster, RedisProcess
from loadtest.harness import ROOT
from loadtest.report import TTFA_LIMIT_MS, measure
from service.audio_input import encode_wav
from service.gen import npc_voice_pb2 as pb
from service.gen import npc_voice_pb2_grpc as pb_grpc
from service.routing import voice_route


def register_voices(address: str, count: int) -> list[str]:
    """`count` synthetic character voices, registered through the balancer."""
    stub = pb_grpc.NpcVoiceStub(grpc.insecure_channel(address))
    ids = [f"npc-{i:02d}" for i in range(count)]
    for i, voice in enumerate(tqdm(ids, desc="registering voices", unit="voice", leave=False)):
        wav = encode_wav(speechlike_wave(5.0, 16000, f0=95.0 + 9 * i, syllable_hz=3.0 + 0.15 * i, floor=0.05), 16000)
        request = pb.RegisterVoiceRequest(voice_id=voice, reference_wav=wav, transcript="Well met, traveller.")
        stub.RegisterVoice(request, metadata=voice_route(voice), timeout=600)
    return ids


def holds(point: dict) -> bool:
    p95 = point["ttfa_p95_ms"]
    clean = bool(point["turns"]) and not point["underruns"] and not point["stream_errors"]
    return clean and p95 is not None and p95 < TTFA_LIMIT_MS


def plot(results: dict[int, list[dict]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for n, points in results.items():
        users = [p["users"] for p in points]
        label = f"{n} replica{'s' if n > 1 else ''}"
        axes[0].plot(users, [p["realtime_users"] for p in points], marker="o", label=label)
        axes[1].plot(users, [p["ttfa_p95_ms"] for p in points], marker="o", label=label)
        hits = [p["cache_hit_ratio"] or 0 for p in points]
        axes[2].plot([p["users"] / n for p in points], hits, marker="o", label=label)
    top = max(p["users"] for ps in results.values() for p in ps)
    axes[0].plot([0, top], [0, top], color="grey", lw=0.8, ls=":", label="all users")
    axes[0].set(title="users holding real time (no underrun)", xlabel="concurrent users", ylabel="users")
    axes[1].axhline(TTFA_LIMIT_MS, color="grey", lw=0.8, ls=":")
    axes[1].set(title="p95 time to first audio", xlabel="concurrent users", ylabel="ms", yscale="log")
    axes[2].set(title="prefix-cache hit ratio", xlabel="users per replica", ylim=(-0.05, 1.05))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"scale-out through nginx on one {os.cpu_count()}-core machine", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "scaleout.png", dpi=110)


def markdown(summary: dict) -> str:
    lines = [
        f"Scale-out sweep: {summary['machine']}, model {summary['model']}, {summary['voices']} voices, "
        f"{summary['seconds_per_point']:g} s per point.",
        "",
        "| replicas | users | users per replica | real-time users | p95 TTFA (ms) | underruns | prefix hit ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, points in summary["points"].items():
        for p in points:
            p95 = "-" if p["ttfa_p95_ms"] is None else f"{p['ttfa_p95_ms']:.0f}"
            hit = "-" if p["cache_hit_ratio"] is None else f"{p['cache_hit_ratio']:.3f}"
            lines.append(
                f"| {n} | {p['users']} | {p['users'] / int(n):g} | {p['realtime_users']} | {p95} | "
                f"{p['underruns']} | {hit} |"
            )
    lines += ["", "| replicas | max real-time users | vs 1 replica |", "|---|---|---|"]
    for n, best in summary["max_realtime_users"].items():
        lines.append(f"| {n} | {best} | {summary['ratio_to_one'][n]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", default="1,2,3")
    ap.add_argument("--per-replica", default="1,2,3,4", help="users per replica at each point")
    ap.add_argument("--duration", type=float, default=40.0, help="seconds per point")
    ap.add_argument("--voices", type=int, default=12)
    ap.add_argument("--server-args", default="", help='extra `serve` arguments, e.g. "--model DIR"')
    ap.add_argument("--out", type=Path, default=ROOT / "loadtest" / "results" / "scaleout")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.replicas.split(",")]
    per_replica = [int(x) for x in args.per_replica.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[int, list[dict]] = {}
    voices: list[str] = []
    model = "?"
    bar = tqdm(total=len(counts) * len(per_replica), desc="scale-out", unit="point")
    server_args = [*shlex.split(args.server_args), "--max-sessions", "64"]
    with RedisProcess() as redis:
        for n in counts:
            with Cluster(n, server_args, log_dir=args.out / f"logs_{n}", redis=redis) as cluster:
                voices = voices or register_voices(cluster.address, args.voices)
                model = cluster.replicas[0].stub.GetCapabilities(pb.GetCapabilitiesRequest()).model
                results[n] = []
                for u in per_replica:
                    bar.set_postfix_str(f"{n} replicas, {u * n} users")
                    env = {"NPC_LOADTEST_VOICES": ",".join(voices)}
                    read = lambda c=cluster: [r.stats() for r in c.replicas]  # noqa: E731
                    point = measure(cluster.address, read, u * n, args.duration, args.out / f"r{n}_u{u * n}", env=env)
                    results[n].append(point)
                    bar.update()
                    time.sleep(2)  # let the queues drain between points
    bar.close()
    best = {n: max((p["users"] for p in pts if holds(p)), default=0) for n, pts in results.items()}
    summary = {
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.python_version()}",
        "model": model,
        "voices": len(voices),
        "seconds_per_point": args.duration,
        "max_realtime_users": best,
        "ratio_to_one": {n: (round(b / best[counts[0]], 2) if best[counts[0]] else None) for n, b in best.items()},
        "points": results,
    }
    (args.out / "scaleout.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "scaleout.md").write_text(markdown(summary))
    plot(results, args.out)
    if args.json:
        print(json.dumps({k: v for k, v in summary.items() if k != "points"}))
    else:
        print(markdown(summary))
        print(f"wrote {args.out}/scaleout.md, scaleout.json, scaleout.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

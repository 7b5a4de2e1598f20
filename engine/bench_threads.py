"""Prefill on one CPU thread against all of them, with the machine idle and with another
process keeping one core busy (as the audio process does in a loaded server).

    python -m engine.bench_threads            # table
    python -m engine.bench_threads --json

Each prefill is timed around the model runner's forward: a cold one computes a new voice's
whole prompt, a warm one only the line's text after a cached voice prefix. Settings alternate
within one run, so a slow spell on a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from engine.audio import speechlike_wave
from engine.bench import TRANSCRIPT, ttfa_ms
from engine.config import PACKED_DTYPES, EngineConfig
from engine.models import default_model_dir
from engine.packed import server_packed_dtype
from engine.runtime.engine import Engine


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="model directory (default: the shipped model)")
    ap.add_argument(
        "--packed-dtype", choices=PACKED_DTYPES, help="EngineConfig.packed_dtype (default: what serve runs)"
    )
    ap.add_argument("--reps", type=int, default=5, help="cold/warm pairs per setting and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    engine = Engine(
        args.model or default_model_dir(), EngineConfig(packed_dtype=args.packed_dtype or server_packed_dtype())
    )
    timed: list[float] = []  # ms of each prefill forward
    forward = engine.runner.forward

    def timed_forward(items):
        start = time.perf_counter()
        out = forward(items)
        if any(n > 1 for _, _, n in items):
            timed.append((time.perf_counter() - start) * 1000)
        return out

    engine.runner.forward = timed_forward
    all_threads = torch.get_num_threads()
    first = engine.make_voice(speechlike_wave(10.0), 24000, TRANSCRIPT, "threads-0")
    fresh = (replace(first, key=engine.voice_key(f"threads-{i}")) for i in range(1, 10**6))
    ttfa_ms(engine, next(fresh), 0, 48000)  # warm up kernels and allocator
    settings = [(busy, n) for busy in (False, True) for n in (1, all_threads)]
    results: dict[tuple[bool, int], dict[str, list[float]]] = {s: {"cold": [], "warm": []} for s in settings}
    hog = None
    try:
        with tqdm(total=len(settings) * args.rounds, desc="settings", file=sys.stderr, disable=args.json) as bar:
            for busy in (False, True):
                if busy:  # a process that never sleeps: one core is no longer the engine's
                    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    time.sleep(0.5)
                for _ in range(args.rounds):
                    for n in (1, all_threads):
                        engine.prefill_threads = n
                        for i in range(args.reps):
                            voice = next(fresh)
                            timed.clear()
                            ttfa_ms(engine, voice, i, 48000)  # new voice: the whole prompt
                            results[busy, n]["cold"] += timed
                            timed.clear()
                            ttfa_ms(engine, voice, i + 100, 48000)  # cached voice: the text alone
                            results[busy, n]["warm"] += timed
                        bar.update()
    finally:
        if hog is not None:
            hog.kill()
        engine.close()
    rows = [
        {
            "other_core": "busy" if busy else "idle",
            "prefill_threads": n,
            "cold_prefill_ms": round(statistics.median(results[busy, n]["cold"]), 1),
            "warm_prefill_ms": round(statistics.median(results[busy, n]["warm"]), 1),
        }
        for busy, n in settings
    ]
    if args.json:
        print(json.dumps({"packed_dtype": args.packed_dtype, "rows": rows}))
    else:
        print("| other core | prefill threads | cold prefill (ms) | warm prefill (ms) |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r['other_core']} | {r['prefill_threads']} | {r['cold_prefill_ms']} | {r['warm_prefill_ms']} |")
    return {"rows": rows}


if __name__ == "__main__":
    main()

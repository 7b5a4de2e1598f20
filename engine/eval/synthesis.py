"""The model under test as the service runs it: one stream, one thread, one core."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.config import AdaptConfig, SamplingParams
from engine.eval.judge import SR


@contextmanager
def one_core():
    """Pin the calling thread, and the threads it starts meanwhile, to one CPU."""
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


def synthesize(
    model_dir: Path,
    voices: dict[str, list[dict]],
    seed: int,
    packed_dtype: str = "auto",
    expected_latents: bool = True,
    adapt: AdaptConfig = AdaptConfig(),
    **sampling,
) -> tuple[dict, float, SamplingParams]:
    """Outputs per voice (same order as its targets), the one-stream, one-thread RTF and the
    sampling used: the model's own (Engine.default_sampling) with `sampling` overrides.
    `packed_dtype` (the CPU kernels), `expected_latents` and `adapt` are EngineConfig's.
    The RTF leaves out registering the voices (the codec's adaptation to each)."""
    from engine import Engine, EngineConfig
    from engine.config import SchedulerConfig, StreamConfig

    outputs, compute, audio_s = {}, 0.0, 0.0
    # One core for all that is timed: the engine's thread (started inside, so it inherits
    # the mask) and this one, which decodes the audio, take turns on it. The engine is
    # sized for the one stream it runs (decode_attention "auto" then reads per row).
    cfg = EngineConfig(
        num_threads=1,
        packed_dtype=packed_dtype,
        scheduler=SchedulerConfig(max_running=1),
        stream=StreamConfig(expected_latents=expected_latents),
        adapt=adapt,
    )
    with one_core(), Engine(model_dir, cfg) as engine:
        torch.set_num_threads(1)
        params = engine.default_sampling(**sampling)
        for name, rs in tqdm(voices.items(), desc="synthesising", unit="voice"):
            ref = rs[0]
            voice = engine.make_voice(ref["audio"], SR, ref["text"], name)
            outputs[name] = []
            for i, r in enumerate(rs[1:]):
                start = time.perf_counter()
                chunks = [
                    e.samples
                    for e in engine.submit(voice, r["text"], replace(params, seed=seed + i))
                    if hasattr(e, "samples")
                ]
                compute += time.perf_counter() - start
                audio = np.concatenate(chunks) if chunks else np.zeros(1, np.float32)
                audio_s += len(audio) / SR
                outputs[name].append(audio)
    return outputs, compute / max(audio_s, 1e-9), params

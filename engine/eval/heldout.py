"""The template held-out set: held-out lines of the training corpus in held-out voices of
the training family (engine/train/synth_data.py --split eval), and the diagnostics that
need its teacher audio: the codec round trip and the teacher-forced LM."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from engine.audio import from_pcm16
from engine.config import CACHE_ROOT, AdaptConfig
from engine.eval.judge import SR

EVAL_DATA = CACHE_ROOT / "data" / "eval"


def eval_set(data: Path, limit: int | None) -> dict[str, list[dict]]:
    from engine.train.synth_data import load_shard

    by_voice = defaultdict(list)
    for path in sorted(data.glob("shard_*.npz")):
        for r in load_shard(path):
            r["audio"] = from_pcm16(r["audio"])
            by_voice[r["voice"]].append(r)
    if not by_voice:
        raise SystemExit(f"no eval shards in {data}: run python -m engine.train.synth_data --split eval")
    return {v: rs[: (limit + 1) if limit else None] for v, rs in sorted(by_voice.items())}


def codec_round_trip(
    codec_dir: Path, voices: dict[str, list[dict]], adapt: AdaptConfig = AdaptConfig()
) -> tuple[dict, float]:
    """Teacher audio encoded and decoded by the codec, adapted to each voice's reference as the
    engine adapts it (unless `adapt` turns that off); RTF of the decoder alone, one thread."""
    from engine.codecs.mel import MelCodec

    torch.set_num_threads(1)
    codec, outputs, compute, audio_s = MelCodec(codec_dir), {}, 0.0, 0.0
    for name, rs in tqdm(voices.items(), desc="round trip", unit="voice"):
        adapter = codec.adapt(torch.from_numpy(rs[0]["audio"]), adapt)
        outputs[name] = []
        for r in rs[1:]:
            codes = codec.encode(torch.from_numpy(r["audio"]))
            start = time.perf_counter()
            audio = codec.decode(codes, adapter).numpy()
            compute += time.perf_counter() - start
            audio_s += len(audio) / SR
            outputs[name].append(audio)
    return outputs, compute / max(audio_s, 1e-9)


def teacher_forced(model_dir: Path, voices: dict[str, list[dict]], adapt: AdaptConfig = AdaptConfig()) -> dict:
    """The LM's next-frame predictions when every frame it reads is the teacher's (its
    committed tokens, teacher timing), decoded from their expected latents by the codec
    adapted to the voice as the engine adapts it. Against free running, the gap is what
    the model's own compounding errors cost."""
    from engine.codecs.mel import MelCodec
    from engine.models.speech_lm.model import load_model
    from engine.train.lm_latents import teacher_forced_probs
    from engine.train.token_store import TOKENS, check_stamp, load_token_shard

    model, codec = load_model(model_dir), MelCodec(model_dir)
    token_dir = TOKENS / "eval"
    check_stamp(token_dir, codec.encoder_digest)
    tokens = {
        (r["voice"], r["text"]): r for path in sorted(token_dir.glob("shard_*.npz")) for r in load_token_shard(path)
    }
    outputs = {}
    for name, rs in tqdm(voices.items(), desc="teacher-forced", unit="voice"):
        ref, outputs[name] = tokens[name, rs[0]["text"]], []
        adapter = codec.adapt(torch.from_numpy(rs[0]["audio"]), adapt) if adapt.steps else None
        for r in rs[1:]:
            probs = teacher_forced_probs(model, ref, tokens[name, r["text"]])
            outputs[name].append(codec.decode_expected(probs, adapter).numpy())
    return outputs

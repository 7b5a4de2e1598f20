"""The speech LM's own predictions of teacher audio, as the codec decoder will receive them.

At serving time the codec decoder never sees clean tokens: it gets the expected
latent of each frame the LM predicts (engine.mel_codec.MelCodec.expected_latent),
which is blurred wherever the LM is unsure. A decoder trained only on clean
tokens maps that blur to muffled mels. This module runs the LM teacher-forced
over teacher lines (every frame it reads is the teacher's, prompted by another
line of the same voice, laid out as the engine runs it) and keeps, per line, the
expected latent of its next-frame predictions at the serving temperature, so
train_codec --lm can teach the decoder to turn the LM's predictions into the
teacher's mels.

Use lines the LM did not train on: on those it is as unsure as on new text.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import torch
from tqdm import tqdm

from engine.codecs.mel import MelCodec
from engine.models.speech_lm.model import SpeechLM, load_model
from engine.train.lm_data import build_example
from engine.train.snapshots import save_checkpoint
from engine.train.token_store import load_token_shard
from engine.weights import load_weights, tensor_digest


@torch.inference_mode()
def teacher_forced_probs(model: SpeechLM, ref: dict, line: dict, temperature: float = 1.0) -> torch.Tensor:
    """The LM's next-frame codebook distributions [frames, codebooks, codebook_size] over
    `line`'s audio when every frame it reads is the teacher's, prompted by `ref` (token
    records of one voice, as token_store loads them). ValueError: the line cannot be laid out."""
    cfg = model.cfg
    frames, _ = build_example(
        cfg,
        ref["ids"],
        ref["codes"][: cfg.max_reference_frames],
        line["ids"],
        line["codes"],
        line["durations"],
        cfg.mark_delay_frames,
    )
    n = len(line["codes"])
    # The position before each audio frame predicts it (speech_start predicts the first).
    hidden = model(frames[None], torch.arange(len(frames))[None])[0, -n - 1 : -1]
    return (model.logits(hidden)[:, 1:, : cfg.codebook_size] / temperature).softmax(-1)


@torch.inference_mode()
def lm_latents(
    model_dir: Path, token_shards: list[Path], voice_shards: list[Path], temperature: float | None = None, seed: int = 0
) -> dict[str, list[torch.Tensor | None]]:
    """Per token shard name, per line: the expected latents [frames, latent_dim] (float16) of the
    LM's teacher-forced next-frame predictions, or None for a line that could not be laid out.

    Each line is prompted by another line of its voice, drawn from `voice_shards` (token
    shards; a voice with one line only is prompted by itself). `temperature`: the model's
    default when None (what the service uses unless a request says otherwise)."""
    model, codec = load_model(model_dir), MelCodec(model_dir)
    cfg = model.cfg
    temp = temperature if temperature is not None else cfg.generation.temperature
    by_voice: dict[str, list[dict]] = defaultdict(list)
    for path in voice_shards:
        for r in load_token_shard(path):
            if len(r["codes"]) <= cfg.max_reference_frames:
                by_voice[r["voice"]].append(r)
    rng, out = random.Random(seed), {}
    for path in tqdm(token_shards, desc="LM predictions", unit="shard"):
        out[path.name] = []
        for r in load_token_shard(path):
            refs = [x for x in by_voice[r["voice"]] if x["text"] != r["text"]] or [r]
            try:
                probs = teacher_forced_probs(model, rng.choice(refs), r, temp)
            except ValueError:  # more units than frames (a teacher glitch)
                out[path.name].append(None)
                continue
            out[path.name].append(codec.expected_latent(probs).half())
    return out


def cached_lm_latents(model_dir: Path, data: Path, tokens: Path, work: Path) -> dict[str, list[torch.Tensor | None]]:
    """engine.train.lm_latents for the audio shards in `data` (their token shards in `tokens`),
    computed once per LM and kept in `work`."""
    from engine.train.train_lm import check_codec

    check_codec(model_dir, tokens)
    names = [p.name for p in sorted(data.glob("shard_*.npz"))]
    missing = [n for n in names if not (tokens / n).exists()]
    if missing:
        raise SystemExit(f"no committed tokens for {missing[:3]}...: run engine.train.token_store first")
    cache = work / f"lm_latents-{tensor_digest(load_weights(model_dir / 'model.safetensors'), '')}.pt"
    if cache.exists():
        return torch.load(cache)
    out = lm_latents(model_dir, [tokens / n for n in names], sorted(tokens.glob("shard_*.npz")))
    save_checkpoint(cache, out)
    return out

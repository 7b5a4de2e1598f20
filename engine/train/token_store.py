"""Tokenised training data, small enough to commit: what the speech LM trains on.

    python -m engine.train.token_store --codec engine/checkpoints/default   # tokenise new shards

Teacher audio (~1 GB per 100 shards) lives only in the cache and is made again by
engine.train.synth_data; a machine can lose it. The LM needs only each line's
phoneme ids, durations, voice and codec tokens, which take ~45 kB per 40-line
shard, so those are kept in the repository (`engine/train/tokens/<split>/`) and a
new machine trains at once instead of re-synthesising for hours.

A token dir is stamped with the digest of the codec encoder that made it: tokens
of another encoder are refused rather than mixed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.audio import from_pcm16
from engine.text.tokenizer import make_tokenizer
from engine.train.synth_data import DATA, TOKENS, load_shard, write_npz

CODEC_STAMP = "CODEC"  # digest of the encoder that made the tokens (engine.weights.tensor_digest)
_KEEP = ("text", "symbols", "voice", "speed", "shift", "durations")


def save_token_shard(path: Path, records: list[dict]) -> None:
    """Write records (each with `ids` and `codes` [frames, codebooks] < 256) atomically."""
    codes = [np.asarray(r["codes"]) for r in records]
    if any(c.size and (c.min() < 0 or c.max() > 255) for c in codes):
        raise ValueError("codes must fit in a byte (codebooks of at most 256 entries)")
    meta = [{k: r[k] for k in _KEEP} for r in records]
    write_npz(
        path,
        compressed=True,
        meta=np.frombuffer(json.dumps(meta, ensure_ascii=False).encode(), dtype=np.uint8),
        ids=np.concatenate([np.asarray(r["ids"], dtype=np.uint8) for r in records]),
        id_offsets=np.cumsum([0] + [len(r["ids"]) for r in records]),
        codes=np.concatenate(codes).astype(np.uint8),
        code_offsets=np.cumsum([0] + [len(c) for c in codes]),
    )


def load_token_shard(path: Path) -> list[dict]:
    """Records with `ids` (list of int) and `codes` (long tensor [frames, codebooks])."""
    with np.load(path) as z:
        records = json.loads(z["meta"].tobytes())
        ids, io = z["ids"], z["id_offsets"]
        codes, co = z["codes"], z["code_offsets"]
    for i, r in enumerate(records):
        r["ids"] = ids[io[i] : io[i + 1]].tolist()
        r["codes"] = torch.from_numpy(codes[co[i] : co[i + 1]].astype(np.int64))
    return records


def tokenise(codec_dir: Path, data: Path, out: Path) -> int:
    """Tokenise every audio shard in `data` that `out` does not hold yet; returns how many."""
    from engine.codecs.mel import MelCodec

    codec = MelCodec(codec_dir)
    tok = make_tokenizer("phonemes", 128)
    out.mkdir(parents=True, exist_ok=True)
    check_stamp(out, codec.encoder_digest)
    (out / CODEC_STAMP).write_text(codec.encoder_digest + "\n")
    todo = [s for s in sorted(data.glob("shard_*.npz")) if not (out / s.name).exists()]
    for shard in tqdm(todo, desc=f"tokenising {data.name}", unit="shard"):
        records = []
        for r in load_shard(shard):
            r["codes"] = codec.encode(torch.from_numpy(from_pcm16(r.pop("audio")))).numpy()
            r["ids"] = [tok.ids[c] for c in r["symbols"]]
            records.append(r)
        save_token_shard(out / shard.name, records)
    return len(todo)


def check_stamp(token_dir: Path, encoder_digest: str) -> None:
    """Refuse a codec whose encoder did not make the tokens in `token_dir`."""
    stamp = token_dir / CODEC_STAMP
    if stamp.exists() and stamp.read_text().strip() != encoder_digest:
        raise SystemExit(
            f"{token_dir} holds tokens of another codec encoder ({stamp}): use the codec that made "
            "them, or move the dir away to tokenise afresh"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codec", type=Path, required=True, help="model dir with codec.json + codec.safetensors")
    ap.add_argument("--data", type=Path, default=DATA, help="dir holding the audio splits (train/, eval/)")
    ap.add_argument("--out", type=Path, default=TOKENS)
    args = ap.parse_args()
    for split in ("train", "eval"):
        if (args.data / split).exists():
            n = tokenise(args.codec, args.data / split, args.out / split)
            print(f"{split}: {n} new shards tokenised into {args.out / split}")


if __name__ == "__main__":
    main()

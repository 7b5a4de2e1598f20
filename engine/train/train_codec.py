"""Train the mel codec (autoencoder with FSQ tokens) and its vocoder on teacher audio.

    python -m engine.train.train_codec --minutes 60        # resumes from its last checkpoint
    python -m engine.train.train_codec --init engine/checkpoints/default --freeze-encoder   # stage 2 on a new machine
    python -m engine.train.train_codec --init engine/checkpoints/default --lm engine/checkpoints/default   # stage 3
    python -m engine.train.train_codec --export engine/checkpoints/default
    python -m engine.train.train_codec --export DIR --soup-decoder engine/checkpoints/default --int8

Both networks train in one loop on random crops of the teacher shards: the
autoencoder on log-mel L1 through the token bottleneck, the vocoder on ground
truth mels with a multi-resolution STFT loss plus a mel loss, and with
--gan-weight against discriminators as well (engine.train.discriminators).
Stage 3 (--lm) keeps the encoder fixed and feeds the decoder, for a share of
each batch, the speech LM's own teacher-forced predictions of the crop
(engine.train.lm_latents) instead of the clean tokens, and the vocoder what the
decoder makes of them: at serving time those predictions are all it gets.
Checkpoints are written atomically every --save-every steps and on exit, losses
go to a CSV, and --plot draws the training curves.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.audio import from_pcm16
from engine.codecs.adapt import stft_loss
from engine.codecs.mel import MelAutoencoder, MelCodecConfig, MelFrontEnd, Vocoder, load_codec_weights, save_codec
from engine.config import CACHE_ROOT
from engine.train.discriminators import Discriminators, discriminator_loss, feature_matching_loss, generator_loss
from engine.train.snapshots import average_state_dicts, save_checkpoint
from engine.train.synth_data import DATA, TOKENS, load_shard

WORK = CACHE_ROOT / "train" / "codec"


class Crops:
    """Random fixed-length crops of the teacher audio, held in memory as int16.

    With `latents` (per shard, per line: the LM's predictions, engine.train.lm_latents)
    crops start on token frames of `frame_samples` and come with the matching latents;
    lines shorter than a crop, or without latents, are left out."""

    def __init__(
        self,
        shard_dir: Path,
        seconds: float,
        sample_rate: int,
        seed: int = 0,
        latents: dict[str, list[torch.Tensor | None]] | None = None,
        frame_samples: int = 0,
    ):
        paths = sorted(shard_dir.glob("shard_*.npz"))
        self.clips = [r["audio"] for p in paths for r in load_shard(p)]
        if not self.clips:
            raise SystemExit(f"no shards in {shard_dir}: run python -m engine.train.synth_data first")
        self.length = int(seconds * sample_rate)
        self.rng = random.Random(seed)
        self.latents: list[torch.Tensor | None] = []
        if latents is not None:
            if self.length % frame_samples:
                raise SystemExit(f"--seconds must be a whole number of token frames ({frame_samples} samples)")
            self.frames, self.frame_samples = self.length // frame_samples, frame_samples
            self.latents = [x for p in paths for x in latents[p.name]]
            keep = [
                i
                for i, x in enumerate(self.latents)
                if x is not None and len(x) >= self.frames and len(self.clips[i]) >= self.length
            ]
            self.clips, self.latents = [self.clips[i] for i in keep], [self.latents[i] for i in keep]
        self.seconds = sum(len(c) for c in self.clips) / sample_rate

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Waves [size, samples] and, with latents, theirs [size, latent_dim, frames]."""
        out = np.zeros((size, self.length), dtype=np.float32)
        lat = [] if self.latents else None
        for i in range(size):
            k = self.rng.randrange(len(self.clips))
            clip = self.clips[k]
            if lat is None:
                start = self.rng.randrange(max(1, len(clip) - self.length))
            else:
                last = min(len(self.latents[k]) - self.frames, (len(clip) - self.length) // self.frame_samples)
                first = self.rng.randrange(last + 1)
                start = first * self.frame_samples
                lat.append(self.latents[k][first : first + self.frames].float().T)
            piece = from_pcm16(clip[start : start + self.length])
            out[i, : len(piece)] = piece
        return torch.from_numpy(out), (torch.stack(lat) if lat is not None else None)


def soup_decoder(cfg: MelCodecConfig, base_dir: Path, tuned: MelAutoencoder) -> tuple[MelAutoencoder, Vocoder]:
    """The codec in `base_dir` with its decoder set to the mean of its own weights and
    `tuned`'s, a decoder trained on from it with the encoder frozen (stage 3).

    Stage 3 taught the decoder to render the LM's predictions, which lowered the shipped
    LM's held-out wer (0.100 -> 0.092 over seeds 0 and 1) but let heldout-bright drift
    toward heldout-warm (id_accuracy 0.895 -> 0.842); the halfway point kept the voices and
    took more of the words (0.086 over those seeds; docs/experiments.md). Both decoders
    read the same tokens, and one was trained on from the other, so their mean is a model of
    the same basin, not a blur of two."""
    base, vocoder = MelAutoencoder(cfg), Vocoder(cfg)
    load_codec_weights(base_dir, base, vocoder)
    mine, theirs = tuned.encoder.state_dict(), base.encoder.state_dict()
    if any(not torch.equal(mine[k], theirs[k]) for k in mine):
        raise SystemExit(
            f"--soup-decoder: the codec in {base_dir} has another encoder, so its decoder reads "
            "other tokens; average only a decoder trained on from it with --freeze-encoder or --lm"
        )
    base.decoder.load_state_dict(average_state_dicts([base.decoder.state_dict(), tuned.decoder.state_dict()]))
    return base, vocoder


def plot_curves(log_path: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(log_path)))
    steps = [int(r["step"]) for r in rows]
    gan = [(s, float(r["adv"]), float(r["disc"])) for s, r in zip(steps, rows) if r.get("adv")]
    fig, ax = plt.subplots(1, 3 if gan else 2, figsize=(16 if gan else 11, 3.8))
    ax[0].plot(steps, [float(r["ae_mel_l1"]) for r in rows], label="from clean tokens")
    lm = [(s, float(r["lm_mel_l1"])) for s, r in zip(steps, rows) if r.get("lm_mel_l1")]
    if lm:
        ax[0].plot(*zip(*lm), label="from the LM's predictions (stage 3)")
    ax[0].set(title="codec: log-mel L1 through the tokens", xlabel="step", yscale="log")
    ax[0].legend()
    ax[1].plot(steps, [float(r["voc_stft"]) for r in rows], label="multi-res STFT")
    ax[1].plot(steps, [float(r["voc_mel_l1"]) for r in rows], label="mel L1")
    ax[1].set(title="vocoder", xlabel="step", yscale="log")
    ax[1].legend()
    if gan:
        at, adv, disc = zip(*gan)
        ax[2].plot(at, adv, label="generator (adversarial)")
        ax[2].plot(at, disc, label="discriminators")
        ax[2].set(title="vocoder against its discriminators", xlabel="step")
        ax[2].legend()
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA / "train")
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--minutes", type=float, default=60.0, help="stop (with a checkpoint) after this long")
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=1.28, help="crop length")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="stage 2 (sticky once set): keep the encoder, and so every token, fixed while the decoder "
        "and vocoder go on training, so an LM trained on the tokens stays valid",
    )
    ap.add_argument(
        "--lm",
        type=Path,
        help="stage 3 (implies --freeze-encoder): the model dir of a speech LM whose "
        "teacher-forced predictions of the --data lines the decoder learns to turn into their mels; "
        "give it lines the LM did not train on",
    )
    ap.add_argument(
        "--lm-share",
        type=float,
        default=0.5,
        help="share of each stage-3 batch decoded from the LM's predictions (the rest from the clean tokens)",
    )
    ap.add_argument(
        "--tokens",
        type=Path,
        help="stage 3: the token shards of the --data lines (default: the committed ones of its split)",
    )
    ap.add_argument(
        "--gan-weight",
        type=float,
        default=0.0,
        help="train the vocoder against discriminators (engine.train.discriminators) too, their losses "
        "weighted by this against the spectral ones (0: no adversary)",
    )
    ap.add_argument("--init", type=Path, help="with no checkpoint yet, start from the codec exported in this dir")
    ap.add_argument("--export", type=Path, help="write codec.json + codec.safetensors here and exit")
    ap.add_argument("--int8", action="store_true", help="export large matrices as int8 (shipped models)")
    ap.add_argument(
        "--soup-decoder",
        type=Path,
        help="with --export: export the codec in this dir with its decoder replaced by the mean of "
        "its own and this run's (same encoder required; see soup_decoder)",
    )
    ap.add_argument("--plot", type=Path, help="draw the training curves to this PNG and exit")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = args.work / "checkpoint.pt", args.work / "losses.csv"
    if args.plot:
        plot_curves(log_path, args.plot)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = MelCodecConfig()
    front, ae, voc = MelFrontEnd(cfg), MelAutoencoder(cfg), Vocoder(cfg)
    opt_ae = torch.optim.AdamW(ae.parameters(), lr=args.lr, betas=(0.8, 0.99))
    opt_voc = torch.optim.AdamW(voc.parameters(), lr=args.lr, betas=(0.8, 0.99))
    step, state = 0, {}
    if ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=False)
        ae.load_state_dict(state["ae"]), voc.load_state_dict(state["voc"])
        opt_ae.load_state_dict(state["opt_ae"]), opt_voc.load_state_dict(state["opt_voc"])
        step = state["step"]
        args.freeze_encoder |= state.get("frozen_encoder", False)
    elif args.init:  # the optimisers' moments start afresh
        load_codec_weights(args.init, ae, voc)
        print(f"starting from the codec in {args.init}")
    if args.export:
        what = f"step {step}"
        if args.soup_decoder:
            ae, voc = soup_decoder(cfg, args.soup_decoder, ae)
            what = f"the codec in {args.soup_decoder} with its decoder averaged with step {step}'s"
        save_codec(args.export, cfg, ae.eval(), voc.eval(), int8=args.int8)
        print(f"exported {what} to {args.export}")
        return
    latents = None
    if args.lm:
        args.freeze_encoder = True
        from engine.train.lm_latents import cached_lm_latents

        latents = cached_lm_latents(args.lm, args.data, args.tokens or TOKENS / args.data.name, args.work)
    data = Crops(
        args.data, args.seconds, cfg.sample_rate, seed=step, latents=latents, frame_samples=cfg.hop * cfg.downsample
    )
    print(
        f"{len(data.clips)} clips, {data.seconds / 3600:.2f} h of audio; starting at step {step}"
        + (" (encoder frozen)" if args.freeze_encoder else "")
    )
    ae.encoder.requires_grad_(not args.freeze_encoder)
    disc = opt_disc = None
    if args.gan_weight > 0:
        disc = Discriminators()
        opt_disc = torch.optim.AdamW(disc.parameters(), lr=args.lr, betas=(0.8, 0.99))
        if "disc" in state:
            disc.load_state_dict(state["disc"]), opt_disc.load_state_dict(state["opt_disc"])
    columns = ["ae_mel_l1", "voc_stft", "voc_mel_l1", "lm_mel_l1", "disc", "adv", "fm"]
    header = ",".join(["step", "seconds", *columns])
    if log_path.exists() and open(log_path).readline().strip() != header:  # a log of an older layout
        os.replace(log_path, log_path.with_suffix(".old.csv"))
    new_log = not log_path.exists()
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(header.split(","))

    def checkpoint() -> None:
        extra = {"disc": disc.state_dict(), "opt_disc": opt_disc.state_dict()} if disc is not None else {}
        save_checkpoint(
            ckpt_path,
            {
                "ae": ae.state_dict(),
                "voc": voc.state_dict(),
                "opt_ae": opt_ae.state_dict(),
                "opt_voc": opt_voc.state_dict(),
                "step": step,
                "frozen_encoder": args.freeze_encoder,
                **extra,
            },
        )

    deadline = time.time() + args.minutes * 60
    bar = tqdm(total=args.steps, initial=step, desc="codec", unit="step")
    sums, counted, t0 = defaultdict(float), 0, time.time()
    n_lm = round(args.batch * args.lm_share) if args.lm else 0
    while step < args.steps and time.time() < deadline:
        wave, lat = data.batch(args.batch)
        with torch.no_grad():
            mel = front(wave)
        losses = {}
        if n_lm:
            with torch.no_grad():
                clean = ae.fsq.quantize(ae.encoder(mel[n_lm:]))
            decoded = ae.decoder(torch.cat([lat[:n_lm], clean]))
            losses["lm_mel_l1"] = F.l1_loss(decoded[:n_lm], mel[:n_lm])
            losses["ae_mel_l1"] = F.l1_loss(decoded[n_lm:], mel[n_lm:])
            ae_loss = (losses["lm_mel_l1"] * n_lm + losses["ae_mel_l1"] * (args.batch - n_lm)) / args.batch
        else:
            decoded = ae(mel)
            ae_loss = losses["ae_mel_l1"] = F.l1_loss(decoded, mel)
        opt_ae.zero_grad()
        ae_loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt_ae.step()
        voc_in = mel
        if n_lm:  # the vocoder hears what the decoder made of the LM's predictions
            voc_in = torch.cat([decoded[:n_lm].detach(), mel[n_lm:]])
        elif args.freeze_encoder:
            # The vocoder will hear decoded mels, which are smoother than real ones:
            # once the tokens are fixed, half of each batch trains it on those.
            half = args.batch // 2
            with torch.no_grad():
                voc_in = torch.cat([mel[:half], ae(mel[half:])])
        fake = voc(voc_in)
        losses["voc_stft"] = stft_loss(fake, wave)
        losses["voc_mel_l1"] = F.l1_loss(front(fake), mel)
        voc_loss = losses["voc_stft"] + losses["voc_mel_l1"]
        if disc is not None:
            real_scores, real_feats = disc(wave)
            fake_scores, _ = disc(fake.detach())
            losses["disc"] = discriminator_loss(real_scores, fake_scores)
            opt_disc.zero_grad()
            losses["disc"].backward()
            torch.nn.utils.clip_grad_norm_(disc.parameters(), 1.0)
            opt_disc.step()
            # (real features from before this update: one step stale, and a forward pass cheaper)
            fake_scores, fake_feats = disc(fake)
            losses["adv"] = generator_loss(fake_scores)
            losses["fm"] = feature_matching_loss(real_feats, fake_feats)
            voc_loss = voc_loss + args.gan_weight * (losses["adv"] + 2 * losses["fm"])
        opt_voc.zero_grad()
        voc_loss.backward()
        torch.nn.utils.clip_grad_norm_(voc.parameters(), 1.0)
        opt_voc.step()
        step += 1
        for k, v in losses.items():
            sums[k] += v.item()
        counted += 1
        bar.update()
        if step % 50 == 0:
            avg = {k: v / counted for k, v in sums.items()}  # (the first window after a resume is shorter)
            writer.writerow(
                [step, round(time.time() - t0, 1), *(round(avg[k], 5) if k in avg else "" for k in columns)]
            )
            log.flush()
            short = {"ae_mel_l1": "ae", "lm_mel_l1": "lm", "voc_stft": "stft", "voc_mel_l1": "mel"}
            bar.set_postfix({short.get(k, k): f"{v:.3f}" for k, v in avg.items()})
            sums, counted = defaultdict(float), 0
        if step % args.save_every == 0:
            checkpoint()
    if step % args.save_every:  # (a multiple was just saved inside the loop)
        checkpoint()
    bar.close()
    print(f"stopped at step {step}; checkpoint {ckpt_path}")


if __name__ == "__main__":
    main()

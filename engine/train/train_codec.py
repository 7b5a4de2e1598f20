"""Train the mel codec (autoencoder with FSQ tokens) and its vocoder on teacher audio.

    python -m engine.train.train_codec --minutes 60        # resumes from its last checkpoint
    python -m engine.train.train_codec --init engine/models/default --freeze-encoder   # stage 2 on a new machine
    python -m engine.train.train_codec --export models/default

Both networks train in one loop on random crops of the teacher shards: the
autoencoder on log-mel L1 through the token bottleneck, the vocoder on ground
truth mels with a multi-resolution STFT loss plus a mel loss (no adversary yet).
Checkpoints are written atomically every --save-every steps and on exit, losses
go to a CSV, and --plot draws the training curves.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.mel_codec import MelAutoencoder, MelCodecConfig, MelFrontEnd, Vocoder, load_codec_weights, save_codec
from engine.train.synth_data import DATA, load_shard

WORK = Path.home() / ".cache" / "npc-voice" / "train" / "codec"
STFT_SIZES = [(512, 128), (1024, 256), (2048, 512)]


class Crops:
    """Random fixed-length crops of the teacher audio, held in memory as int16."""

    def __init__(self, shard_dir: Path, seconds: float, sample_rate: int, seed: int = 0):
        self.clips = [r["audio"] for p in sorted(shard_dir.glob("shard_*.npz")) for r in load_shard(p)]
        if not self.clips:
            raise SystemExit(f"no shards in {shard_dir}: run python -m engine.train.synth_data first")
        self.length = int(seconds * sample_rate)
        self.rng = random.Random(seed)
        self.seconds = sum(len(c) for c in self.clips) / sample_rate

    def batch(self, size: int) -> torch.Tensor:
        out = np.zeros((size, self.length), dtype=np.float32)
        for i in range(size):
            clip = self.clips[self.rng.randrange(len(self.clips))]
            start = self.rng.randrange(max(1, len(clip) - self.length))
            piece = clip[start:start + self.length].astype(np.float32) / 32767
            out[i, : len(piece)] = piece
        return torch.from_numpy(out)


def stft_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    loss = fake.new_zeros(())
    for n_fft, hop in STFT_SIZES:
        window = torch.hann_window(n_fft, device=fake.device)
        f = torch.stft(fake, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-5)
        r = torch.stft(real, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-5)
        loss = loss + torch.linalg.norm(r - f) / torch.linalg.norm(r) + F.l1_loss(f.log(), r.log())
    return loss / len(STFT_SIZES)


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def plot_curves(log_path: Path, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(log_path)))
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    ax[0].plot(steps, [float(r["ae_mel_l1"]) for r in rows])
    ax[0].set(title="codec: log-mel L1 through the tokens", xlabel="step", yscale="log")
    ax[1].plot(steps, [float(r["voc_stft"]) for r in rows], label="multi-res STFT")
    ax[1].plot(steps, [float(r["voc_mel_l1"]) for r in rows], label="mel L1")
    ax[1].set(title="vocoder", xlabel="step", yscale="log")
    ax[1].legend()
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
    ap.add_argument("--freeze-encoder", action="store_true",
                    help="stage 2 (sticky once set): keep the encoder, and so every token, fixed while the decoder "
                         "and vocoder go on training, so an LM trained on the tokens stays valid")
    ap.add_argument("--init", type=Path, help="with no checkpoint yet, start from the codec exported in this dir")
    ap.add_argument("--export", type=Path, help="write codec.json + codec.safetensors here and exit")
    ap.add_argument("--int8", action="store_true", help="export large matrices as int8 (shipped models)")
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
    step = 0
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
        save_codec(args.export, cfg, ae.eval(), voc.eval(), int8=args.int8)
        print(f"exported step {step} to {args.export}")
        return
    data = Crops(args.data, args.seconds, cfg.sample_rate, seed=step)
    print(f"{len(data.clips)} clips, {data.seconds / 3600:.2f} h of audio; starting at step {step}"
          + (" (encoder frozen)" if args.freeze_encoder else ""))
    ae.encoder.requires_grad_(not args.freeze_encoder)
    new_log = not log_path.exists()
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "ae_mel_l1", "voc_stft", "voc_mel_l1", "seconds"])
    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {"ae": ae.state_dict(), "voc": voc.state_dict(), "opt_ae": opt_ae.state_dict(),
                                    "opt_voc": opt_voc.state_dict(), "step": step, "frozen_encoder": args.freeze_encoder})

    deadline = time.time() + args.minutes * 60
    bar = tqdm(total=args.steps, initial=step, desc="codec", unit="step")
    sums, t0 = np.zeros(3), time.time()
    while step < args.steps and time.time() < deadline:
        wave = data.batch(args.batch)
        with torch.no_grad():
            mel = front(wave)
        ae_loss = F.l1_loss(ae(mel), mel)
        opt_ae.zero_grad()
        ae_loss.backward()
        torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
        opt_ae.step()
        voc_in = mel
        if args.freeze_encoder:
            # The vocoder will hear decoded mels, which are smoother than real ones:
            # once the tokens are fixed, half of each batch trains it on those.
            half = args.batch // 2
            with torch.no_grad():
                voc_in = torch.cat([mel[:half], ae(mel[half:])])
        fake = voc(voc_in)
        spec_loss = stft_loss(fake, wave)
        mel_loss = F.l1_loss(front(fake), mel)
        opt_voc.zero_grad()
        (spec_loss + mel_loss).backward()
        torch.nn.utils.clip_grad_norm_(voc.parameters(), 1.0)
        opt_voc.step()
        step += 1
        sums += [ae_loss.item(), spec_loss.item(), mel_loss.item()]
        bar.update()
        if step % 50 == 0:
            avg = sums / 50
            writer.writerow([step, *(round(x, 5) for x in avg), round(time.time() - t0, 1)])
            log.flush()
            bar.set_postfix(ae=f"{avg[0]:.3f}", stft=f"{avg[1]:.3f}", mel=f"{avg[2]:.3f}")
            sums[:] = 0
        if step % args.save_every == 0:
            checkpoint()
    if step % args.save_every:  # (a multiple was just saved inside the loop)
        checkpoint()
    bar.close()
    print(f"stopped at step {step}; checkpoint {ckpt_path}")


if __name__ == "__main__":
    main()

"""Train the duration model (engine.models.speech_lm.durations) on the committed teacher timings.

    python -m engine.train.train_durations --export engine/checkpoints/default

Every committed token record carries the teacher's seconds per unit, so this needs
no audio and no codec: a few minutes on one core. The targets are taken at neutral
pace (times the line's speed and size shift), as the engine predicts them before
scaling them to a voice's own pace. The eval split (held-out lines and voices) is
scored at the end: mean absolute error per unit and of the whole line, in frames.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.models.speech_lm.durations import DurationConfig, DurationModel, save_durations
from engine.train.token_store import TOKENS, load_token_shard


def load_lines(token_dir: Path, frame_rate: float) -> list[tuple[list[int], torch.Tensor]]:
    """(unit ids, frames of leading silence, each unit and trailing silence at neutral pace)."""
    out = []
    for path in tqdm(sorted(token_dir.glob("shard_*.npz")), desc=f"reading {token_dir.name}", unit="shard"):
        for r in load_token_shard(path):
            pace = r["speed"] * r["shift"]  # a faster (or smaller) voice's units are shorter
            out.append((r["ids"], torch.tensor(r["durations"]) * pace * frame_rate))
    return out


def silence_frame(token_dir: Path, first: int = 3) -> list[int]:
    """The commonest code frame among the first `first` frames of each line: the teachers'
    leading silence as the codec codes it, which `generation.silence_frame` prefills."""
    counts: Counter[tuple[int, ...]] = Counter()
    for path in sorted(token_dir.glob("shard_*.npz")):
        for r in load_token_shard(path):
            counts.update(tuple(f) for f in torch.as_tensor(r["codes"])[:first].tolist())
    return list(counts.most_common(1)[0][0])


def batch(model: DurationModel, lines: list[tuple[list[int], torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    T = max(len(ids) for ids, _ in lines) + 2
    units = torch.zeros(len(lines), T, dtype=torch.long)
    frames = torch.zeros(len(lines), T)
    mask = torch.zeros(len(lines), T, dtype=torch.bool)
    for i, (ids, f) in enumerate(lines):
        units[i, : len(ids) + 2], frames[i, : len(ids) + 2], mask[i, : len(ids) + 2] = model.units(ids), f, True
    return units, frames, mask


def loss_of(model: DurationModel, lines: list) -> torch.Tensor:
    units, frames, mask = batch(model, lines)
    return F.mse_loss(model(units, mask)[mask], frames.clamp(min=0).log1p()[mask])


@torch.inference_mode()
def evaluate(model: DurationModel, lines: list) -> dict[str, float]:
    model.eval()
    unit_err = line_err = n_units = 0.0
    for ids, frames in lines:
        pred = model.frames(ids)  # as the engine predicts them
        unit_err += (pred - frames).abs().sum().item()
        n_units += len(frames)
        line_err += abs(pred.sum().item() - frames.sum().item()) / frames.sum().item()
    model.train()
    return {"mae_frames_per_unit": unit_err / n_units, "line_length_error": line_err / len(lines)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=Path, default=TOKENS, help="dir with the train/ and eval/ token shards")
    ap.add_argument("--export", type=Path, required=True, help="model dir to write durations.json + .safetensors")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    cfg = DurationConfig()
    model = DurationModel(cfg)
    train = load_lines(args.tokens / "train", cfg.frame_rate)
    held = load_lines(args.tokens / "eval", cfg.frame_rate)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.05)
    rng, t0 = random.Random(args.seed), time.time()
    bar = tqdm(range(args.steps), desc="durations", unit="step")
    for step in bar:
        loss = loss_of(model, rng.sample(train, args.batch))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    figures = evaluate(model, held)
    print(
        f"{len(train)} training lines, {args.steps} steps in {time.time() - t0:.0f} s; held-out ({len(held)} lines): "
        f"{figures['mae_frames_per_unit']:.2f} frames per unit, line length off by {figures['line_length_error']:.1%}"
    )
    save_durations(model.eval(), args.export)
    print(f"wrote the duration model to {args.export}")
    # Tied to the codec the tokens were made with.
    silence = silence_frame(args.tokens / "eval")
    print(f'the teachers\' leading silence, for config.json: "silence_frame": {silence} under "generation"')


if __name__ == "__main__":
    main()

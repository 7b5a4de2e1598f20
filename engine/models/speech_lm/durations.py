"""How long each text unit lasts, predicted from the text alone, and the pointer schedule it gives.

A pointer LM can time its own speech: channel 0 says stay, advance or stop every
frame. On text unlike its training lines that timing is where most of its errors
start (docs/experiments.md, "Timing by a duration model"), and a bark that runs past
its last phoneme says words nobody wrote. A small convolutional model reads the
units around each one and predicts its duration; the engine then moves the pointer
on that schedule and ends speech when the last unit's time is up, so the LM only
has to say each unit while the schedule holds it there.

Durations are learnt at a neutral pace (each teacher line's durations times its
speed and size shift). The engine stretches them by the model's `generation.pace`,
or, where that is 0, by each voice's own pace, read off its reference clip. It can
cap how a line ends (`trim_ending`): the teachers close a line with ~0.6 s of silence
counted in its last phoneme and final punctuation.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.weights import load_weights, save_weights

CONFIG_FILE, WEIGHTS_FILE = "durations.json", "durations.safetensors"
# A voice's pace is clamped to this range: a reference with long silences or a clipped
# end would otherwise stretch or squeeze every line.
PACE_RANGE = (0.8, 1.25)


@dataclass(frozen=True)
class DurationConfig:
    vocab: int = 128  # the LM's text_vocab: units are channel-0 ids
    dim: int = 128
    layers: int = 5
    kernel: int = 5  # with 5 layers, each unit sees 10 units either side
    dropout: float = 0.1
    frame_rate: float = 25.0

    @property
    def start(self) -> int:  # stands for the leading silence
        return self.vocab

    @property
    def end(self) -> int:  # stands for the trailing silence
        return self.vocab + 1


class DurationModel(nn.Module):
    """Units [B, T] (start, unit ids, end) -> log(1 + frames) of each [B, T]."""

    def __init__(self, cfg: DurationConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab + 2, cfg.dim)
        self.convs = nn.ModuleList(
            nn.Conv1d(cfg.dim, cfg.dim, cfg.kernel, padding=cfg.kernel // 2) for _ in range(cfg.layers)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(cfg.dim) for _ in range(cfg.layers))
        self.out = nn.Linear(cfg.dim, 1)

    def forward(self, units: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        keep = mask[..., None].float()
        x = self.embed(units) * keep
        for conv, norm in zip(self.convs, self.norms):
            y = F.gelu(conv(x.transpose(1, 2)).transpose(1, 2))
            x = norm(x + F.dropout(y, self.cfg.dropout, self.training)) * keep  # padding stays zero
        return self.out(x)[..., 0]

    def units(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([self.cfg.start, *ids, self.cfg.end], dtype=torch.long)

    @torch.inference_mode()
    def frames(self, ids: list[int]) -> torch.Tensor:
        """Frames of the leading silence, each unit and the trailing silence, at neutral pace."""
        units = self.units(ids)[None]
        frames = self(units, torch.ones_like(units, dtype=torch.bool))[0].float().exp() - 1
        return frames.clamp(min=0)

    def seconds(self, ids: list[int]) -> list[float]:
        """`frames` in seconds."""
        return (self.frames(ids) / self.cfg.frame_rate).tolist()

    def pace(self, ids: list[int], frames: int) -> float:
        """A voice's pace from its reference: how much longer than neutral its `frames` of
        audio took to say `ids`, clamped to PACE_RANGE."""
        predicted = sum(self.seconds(ids)) * self.cfg.frame_rate
        return min(max(frames / max(predicted, 1.0), PACE_RANGE[0]), PACE_RANGE[1])


def load_durations(model_dir: str | Path) -> DurationModel | None:
    """The checkpoint's duration model, or None when it has none."""
    model_dir = Path(model_dir)
    if not (model_dir / CONFIG_FILE).exists():
        return None
    model = DurationModel(DurationConfig(**json.loads((model_dir / CONFIG_FILE).read_text())))
    model.load_state_dict(load_weights(model_dir / WEIGHTS_FILE), strict=True)
    return model.float().eval()


def save_durations(model: DurationModel, model_dir: str | Path) -> None:
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / CONFIG_FILE).write_text(json.dumps(asdict(model.cfg), indent=2) + "\n")
    save_weights(model_dir / WEIGHTS_FILE, model.state_dict())


def insertion_frames(durations: list[float], num_frames: int, frame_rate: float, delay: int) -> list[int]:
    """Frame on which each unit is fed: `delay` frames before its audio starts, one unit per
    frame at most (a burst of short units is spread over the following frames), and
    always before the end of the audio.

    `durations` are seconds per unit with the leading silence first and the trailing
    silence last (as the teachers give them). ValueError: the units cannot fit."""
    starts, t = [], durations[0]
    for d in durations[1:-1]:
        starts.append(t)
        t += d
    frames, prev = [], -1
    for s in starts:
        f = max(int(math.floor(s * frame_rate)) - delay, prev + 1, 0)
        frames.append(f)
        prev = f
    overflow = frames[-1] - (num_frames - 1) if frames else 0
    if overflow > 0:  # too many units for the audio: pull the tail back, keeping order
        frames = [min(f, num_frames - 1 - (len(frames) - 1 - i)) for i, f in enumerate(frames)]
        if frames[0] < 0:
            raise ValueError(f"{len(frames)} units cannot fit in {num_frames} frames")
    return frames


def trim_ending(seconds: list[float], quiet: int, last: float, pause: float) -> list[float]:
    """`seconds` (leading silence, units, trailing silence) with the ending capped: the last
    spoken unit at `last` seconds, and the pause after it (the `quiet` trailing punctuation
    units and the trailing silence, scaled down together) at `pause`. A cap of 0 is none."""
    out = list(seconds)
    tail = len(out) - 1 - quiet  # index of the first quiet unit, or of the trailing silence
    held = sum(out[tail:])
    if pause and held > pause:
        out[tail:] = [s * pause / held for s in out[tail:]]
    if last and tail > 1:  # index 0 is the leading silence, not a unit
        out[tail - 1] = min(out[tail - 1], last)
    return out


@dataclass(frozen=True)
class Schedule:
    """When the pointer moves: unit i is fed when frame `feed[i]` is drawn, and speech ends
    in place of frame `end`. Frames count from the first drawn one: `lead` frames of
    silence before it are part of the prompt."""

    feed: list[int]
    end: int
    lead: int = 0

    def prefilled(self) -> Schedule:
        """The same timing with the frames before the first unit's moved into the prompt."""
        k = self.feed[0] if self.feed else 0
        return Schedule([f - k for f in self.feed], self.end - k, self.lead + k)


def schedule(seconds: list[float], frame_rate: float, delay: int) -> Schedule:
    """The pointer schedule of predicted durations (as `DurationModel.seconds` gives them)."""
    end = max(round(sum(seconds) * frame_rate), len(seconds) - 1)  # a frame for each unit, then the end
    return Schedule(insertion_frames(seconds, end, frame_rate, delay), end)

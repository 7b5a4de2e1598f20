"""Training sequences for the speech LM, in exactly the layout the engine runs.

    [bos, reference phonemes] [reference audio]  [phonemes to speak, speech_start]  [audio with the text fed in]
    \\____________ voice prefix _____________/  \\______ utterance prompt ______/  \\_____ generated _____/

In the generated part, channel 0 carries the id of a phoneme (or stress mark,
space, punctuation) on the frame where the model "advances" to it, which is
`delay` frames before the unit's audio starts, and text_pad elsewhere (or, for a
`hold_units` model, the held id of the unit last fed). The
model's channel-0 targets are therefore: advance where the next frame is a unit's
arrival, eos after the last audio frame, text_pad otherwise; its codebook targets
are the next frame's codes. At inference the engine does the same substitution
(engine.engine._emit), so training and serving agree frame for frame.
"""

from __future__ import annotations

import torch

from engine.models.speech_lm.config import ModelConfig
from engine.models.speech_lm.durations import insertion_frames
from engine.models.speech_lm.prompt import audio_frames, text_frames, voice_prefix

IGNORE = -100  # targets that carry no loss


def build_example(
    cfg: ModelConfig,
    ref_ids: list[int],
    ref_codes: torch.Tensor,
    ids: list[int],
    codes: torch.Tensor,
    durations: list[float],
    delay: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input frames [T, channels] and targets [T, channels] (IGNORE where there is no loss).

    `ids` are the channel-0 ids of the units to speak, `codes` [frames, codebooks] their
    audio, `durations` seconds per unit plus leading/trailing silence."""
    if len(durations) != len(ids) + 2:
        raise ValueError(f"{len(durations)} durations for {len(ids)} units (expected units + 2)")
    prefix = voice_prefix(cfg, ref_ids, ref_codes)
    prompt = text_frames(cfg, ids + [cfg.speech_start])
    speech = audio_frames(cfg, codes)
    fed = insertion_frames(durations, len(codes), cfg.frame_rate, delay)
    advance = torch.zeros(len(codes), dtype=torch.bool)
    advance[fed] = True
    speech[fed, 0] = torch.tensor(ids, dtype=torch.long)
    if cfg.hold_units:  # the frames between two arrivals hold the earlier unit
        for unit, start, end in zip(ids, fed, fed[1:] + [len(codes)]):
            speech[start + 1 : end, 0] = cfg.held(unit)
    frames = torch.cat([prefix, prompt, speech])
    targets = torch.full_like(frames, IGNORE)
    first = len(prefix) + len(prompt) - 1  # speech_start predicts the first audio frame
    nxt = frames[first + 1 :]
    targets[first:-1, 1:] = nxt[:, 1:]
    targets[first:-1, 0] = torch.where(advance, cfg.advance, cfg.text_pad)
    targets[-1, 0] = cfg.eos  # after the last audio frame, speech ends
    return frames, targets

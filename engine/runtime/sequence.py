"""One utterance inside the engine: its frames, its blocks, its sampling state."""

from __future__ import annotations

import enum
import itertools
import threading

import torch

from engine.config import SamplingParams

_ids = itertools.count()


class Status(enum.Enum):
    WAITING = "waiting"  # holds no blocks
    RUNNING = "running"  # holds blocks; prefilling until num_computed reaches len
    FINISHED = "finished"


class Sequence:
    """Frames are rows of `num_channels` token ids, stored in a growable tensor.

    The prompt is laid out voice first: `prefix_len` frames of voice prompt, then
    the text to speak. `cache_key` holds everything else that conditions the
    voice (model, codec, speaker id); it is folded into every block hash.
    """

    def __init__(
        self,
        prompt: torch.Tensor,
        prefix_len: int,
        cache_key: bytes,
        sampling: SamplingParams,
        max_frames: int,
        seed: int,
    ):
        if prompt.ndim != 2 or prompt.shape[0] == 0:
            raise ValueError("prompt must be a non-empty [T, channels] tensor")
        self.seq_id = next(_ids)
        self._buf = prompt.to(torch.long).cpu().clone()
        self.length = prompt.shape[0]
        self.prompt_len = self.length
        self.prefix_len = min(prefix_len, self.length)
        self.cache_key = cache_key
        self.sampling = sampling
        self.max_frames = max_frames
        self.min_frames = 0  # end of speech is masked before this many frames
        self.seed = seed
        # Each request owns its generator, so its draws do not depend on what else
        # is in the batch or on whether its prefix came from the cache.
        self.generator = torch.Generator().manual_seed(seed)
        self.status = Status.WAITING
        self.block_table: list[int] = []
        self.num_computed = 0  # frames whose K/V are in the pool
        self.cached_on_admit = 0  # frames the prefix cache supplied at first admission
        self.admitted = False
        self.snapshot_done = False  # partial voice-prefix block saved (see BlockManager)
        self.marks = 0  # timing marks emitted (text units the model moved past)
        self.last_advance = 0  # num_generated when the pointer last moved
        self.unit = 0  # id of the text unit the pointer is on (valid once marks > 0)
        self.preemptions = 0
        self.first_frame_at: float | None = None  # time.monotonic() of the first generated frame
        self.family_state: object = None  # a model family's own per-utterance state (its stop rule, say)
        self.cancelled = threading.Event()

    def __len__(self) -> int:
        return self.length

    @property
    def tokens(self) -> torch.Tensor:
        return self._buf[: self.length]

    @property
    def num_generated(self) -> int:
        return self.length - self.prompt_len

    @property
    def last_frame(self) -> torch.Tensor:
        return self._buf[self.length - 1]

    def append(self, frame: torch.Tensor) -> None:
        if self.length == self._buf.shape[0]:
            grown = torch.empty((self.length * 2, self._buf.shape[1]), dtype=torch.long)
            grown[: self.length] = self._buf
            self._buf = grown
        self._buf[self.length] = frame
        self.length += 1

    def generated(self, start: int = 0) -> torch.Tensor:
        return self._buf[self.prompt_len + start : self.length]

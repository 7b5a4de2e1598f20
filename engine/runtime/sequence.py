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
        self.turn_start = False  # admitted while a listener waited for it (nothing playing before it)
        self.snapshot_done = False  # partial voice-prefix block saved (see BlockManager)
        self.marks = 0  # timing marks emitted (text units the model moved past)
        self.last_advance = 0  # num_generated when the pointer last moved
        self.unit = 0  # id of the text unit the pointer is on (valid once marks > 0)
        self.preemptions = 0
        self.first_frame_at: float | None = None  # time.monotonic() of the first generated frame
        # The utterance a listener hears just before this one (a conversation's previous
        # sentence): this one's playback starts when that one's audio runs out. Once that one
        # has finished, its end is kept as a time and the link dropped (no chain of old
        # utterances stays alive).
        self.after: Sequence | None = None
        self.plays_from: float | None = None
        self.family_state: object = None  # a model family's own per-utterance state (its stop rule, say)
        # Voice guidance (SamplingParams.voice_guidance): the same utterance without its voice
        # prefix. It is never scheduled by itself: it holds blocks, is preempted and freed with
        # this sequence, and reads back every frame this one draws.
        self.guide: Sequence | None = None
        # The voice's speaker-encoder vector (VoicePrompt.speaker), read where the model runs
        # position 0; None: no vector (a guide's voiceless prompt, or a model without them).
        self.speaker: torch.Tensor | None = None
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

    def audio_end(self, rate: float) -> float | None:
        """When a listener will have heard every frame generated so far (None before the first):
        playback starts at the first frame or when the audio before it runs out, if later."""
        if self.first_frame_at is None:
            return None
        before = self.audio_before_ends(rate)
        start = self.first_frame_at if before is None else max(self.first_frame_at, before)
        return start + self.num_generated / rate

    def audio_before_ends(self, rate: float) -> float | None:
        """When the audio of the utterance heard before this one runs out, as far as it has been
        generated (None: nothing to wait for)."""
        before = self.after
        if before is not None:
            if before.cancelled.is_set():  # cut off: the listener hears this one as soon as it comes
                self.after = None
            elif before.status is Status.FINISHED:
                self.after, self.plays_from = None, before.audio_end(rate)
            else:
                return before.audio_end(rate) if before.first_frame_at is not None else float("inf")
        return self.plays_from

    def lead(self, now: float, rate: float) -> float:
        """Seconds of this utterance's audio ahead of real-time playback at `now`; -inf while a
        listener already waits for its first frame, and while nothing at all is known of when it
        plays (no frame of it or of the one before)."""
        end = self.audio_end(rate)
        if end is None:  # no frame yet: ahead by however long the audio before it lasts
            before = self.audio_before_ends(rate)
            return float("-inf") if before is None or before <= now else before - now
        return end - now

    def append(self, frame: torch.Tensor) -> None:
        if self.length == self._buf.shape[0]:
            grown = torch.empty((self.length * 2, self._buf.shape[1]), dtype=torch.long)
            grown[: self.length] = self._buf
            self._buf = grown
        self._buf[self.length] = frame
        self.length += 1

    def generated(self, start: int = 0) -> torch.Tensor:
        return self._buf[self.prompt_len + start : self.length]

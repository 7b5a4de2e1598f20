"""Configuration dataclasses of the engine, one per concern.

They are chosen by whoever runs the engine (the service, the benchmark, a test); what
a checkpoint says about itself is its family's own config (engine.models).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

# Choices of EngineConfig; command-line flags take their choices from these too.
PackedDtype = Literal["auto", "float32", "bfloat16", "int8"]
DecodeAttention = Literal["auto", "shared_prefix", "per_row"]
PACKED_DTYPES: tuple[str, ...] = get_args(PackedDtype)
DECODE_ATTENTIONS: tuple[str, ...] = get_args(DecodeAttention)

# Everything the project writes outside the repository (the toy model, training data and
# runs, evaluation judges) lives under this folder; NPC_VOICE_CACHE moves it.
CACHE_ROOT = Path(os.environ.get("NPC_VOICE_CACHE", Path.home() / ".cache" / "npc-voice"))


@dataclass(frozen=True)
class CacheConfig:
    """Paged KV pool. The pool is preallocated once from `memory_budget_mb`."""

    block_size: int = 16
    memory_budget_mb: float = 256.0
    num_blocks: int | None = None  # overrides the budget (tests use tiny pools)
    # Share of the pool that pinned (warmed) voices may hold; beyond it the least
    # recently warmed voice is unpinned.
    max_pinned_fraction: float = 0.5
    prefix_cache: bool = True  # False computes every prompt in full (a benchmark baseline)


@dataclass(frozen=True)
class SchedulerConfig:
    max_running: int = 32  # streams decoded together in one step
    max_waiting: int = 256  # beyond this, submit() raises EngineOverloaded
    prefill_chunk_tokens: int = 512  # prompt tokens prefilled per step (chunked prefill)
    max_buffered_frames: int = 100  # a stream whose reader lags this far is paused
    # While utterances wait for a slot, a stream this far ahead of real-time playback of
    # what it has sent yields its slot to them (earliest deadline first); with nothing
    # waiting, streams run ahead freely, so one-shot rendering stays fast.
    max_lead_s: float = 3.0
    # Pacing (0: off, every stream runs ahead as fast as it can). On: a step runs only when some
    # stream has less than this many seconds of audio ahead of real-time playback, and then takes
    # every stream with less than twice that. Streams then share steps instead of racing through
    # theirs at batch 1-2, which costs the engine thread several times more per frame. It also
    # holds one-shot rendering (Synthesize) to real time, so it is off unless asked for
    # (serve --pace-s).
    pace_lead_s: float = 0.0
    # Deadline first: while some stream (or a new utterance) has less than this many seconds of
    # audio ahead of playback, a step runs only the streams with less than twice that, and only
    # such utterances are admitted; the rest, far ahead, sit out those steps. A smaller batch
    # steps faster, and the stream about to run dry gets its frames sooner. With nobody short,
    # every stream runs ahead as fast as it can. 0: off.
    urgent_lead_s: float = 0.5
    # Turn starts at once: an utterance a listener waits for (nothing plays before it) is
    # admitted only while fewer than this many others began within the last `start_window_s`.
    # Its prefill and first chunks are the costliest moments of a stream, and when many fall
    # together the streams already playing run dry; this trades a little time to first audio
    # for them. 0: off.
    max_starting: int = 0
    start_window_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ("max_running", "prefill_chunk_tokens"):  # (0: nothing would ever run)
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class StreamConfig:
    """How generated frames become waveform chunks."""

    # In milliseconds of audio, rounded to whole frames of the model's codec (3 and 16 frames at 25 Hz).
    first_chunk_ms: float = 120.0  # small, so first audio comes quickly (see AudioStreamer)
    chunk_ms: float = 640.0  # the mel codec costs ~7 ms per call plus ~0.45 ms per frame (docs/benchmarks.md)
    context_frames: int = 2  # earlier frames re-decoded for the crossfade
    crossfade_ms: float = 10.0
    # Windows of all streams decoded together by one audio thread (engine.runtime.audio_worker);
    # 0: each consumer decodes its own on its own thread.
    audio_batch: int = 16
    # CPU threads of that audio thread's codec calls; 0: by codec, as measured on 2 cores with
    # the engine's decode steps on one of them (docs/benchmarks.md): the mel codec's small calls
    # on one thread (16 streams: 840-929 audio frames/s, against 805-840 on two), Mimi's large
    # convolutions on all (pocket-tts, 8 streams: 128-138 against 108-116 on one).
    audio_threads: int = 0
    # Decode in a child process rather than a thread (engine.runtime.audio_process), where the
    # codec keeps no per-stream state and runs on CPU: the process has its own interpreter
    # lock, so the engine thread's small ops and the codec's stop waiting for each other.
    audio_process: bool = False
    # Decode each frame from the expected latent of the LM's codebook distributions (at the
    # request's temperature) rather than from the drawn codes, where the codec can (the mel
    # codec): the LM still reads back the drawn codes. Fewer word errors (the model card).
    expected_latents: bool = True


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 0  # 0 disables
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # 1.0 disables; applied to audio channels
    repetition_window: int = 32  # frames looked back for the repetition penalty
    seed: int | None = None  # None: a random seed is drawn at submit
    max_frames: int | None = None  # further cap on top of the text-length guard
    ignore_eos: bool = False  # benchmarks and tests that need a fixed length
    # Classifier-free guidance on the voice: each frame's codebook logits move this far past
    # what the LM would draw with no voice prefix, away from it (0: off). The LM then runs a
    # second, voiceless copy of the utterance beside it; families without one refuse it.
    voice_guidance: float = 0.0

    def validate(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty", "voice_guidance"):
            value = getattr(self, name)
            if not math.isfinite(value):  # NaN slips past every comparison below
                raise ValueError(f"{name} must be a finite number, got {value}")
        # Ranges, not just signs: a subnormal temperature or penalty divides logits into
        # infinities, and the draw becomes noise.
        if not (self.temperature == 0 or 0.01 <= self.temperature <= 10):
            raise ValueError(f"temperature must be 0 (greedy) or in [0.01, 10], got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.1 <= self.repetition_penalty <= 10:
            raise ValueError(f"repetition_penalty must be in [0.1, 10], got {self.repetition_penalty}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        if not 0.0 <= self.voice_guidance <= 5.0:
            raise ValueError(f"voice_guidance must be in [0, 5] (0: off), got {self.voice_guidance}")


@dataclass(frozen=True)
class AdaptConfig:
    """Per-voice codec adaptation at registration (engine.codecs.adapt); codecs without it ignore this."""

    steps: int = 100  # gradient steps for the decoder, then as many for the vocoder; 0 turns adaptation off
    lr: float = 3e-3
    crop_seconds: float = 2.0  # each step fits a random crop: the time per step stays flat for long clips
    seed: int = 0  # the same clip always adapts to the same numbers
    # This share of the decoder's steps reads the LM's own rendering of the clip's transcript in
    # the new voice instead of the clip's codes: the decoder then learns the voice from what the
    # LM will actually feed it (engine.codecs.adapt). 0: the codes only. Off by default: at 0.5
    # with 200 steps, broad dev identified the voice more often at a cost in words or none, but
    # on the test split the recorded people lost both words and identity (docs/experiments.md,
    # "Adapting on the LM's rendering"); registration also takes longer.
    lm_share: float = 0.0
    # How a step on the rendering is scored against the clip: "frames", the rendering warped
    # onto the clip frame by frame (a mel warp that repeats and skips frames); "stats", with no
    # alignment, each mel band's mean and spread over a crop of the rendering against the
    # clip's (the voice's spectrum, not its timing).
    lm_match: str = "frames"

    def __post_init__(self):
        if self.lm_match not in ("frames", "stats"):
            raise ValueError(f"lm_match must be 'frames' or 'stats', got {self.lm_match!r}")

    @property
    def identity(self) -> str:
        """What a voice's stored adapter depends on besides the clip and the codec."""
        if not self.steps:
            return "noadapt"
        lm = f"+lm{self.lm_share:g}" if self.lm_share else ""
        lm += "stats" if self.lm_share and self.lm_match == "stats" else ""
        return f"adapt{self.steps}x{self.lr:g}x{self.crop_seconds:g}{lm}"


@dataclass(frozen=True)
class EngineConfig:
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    device: str = "auto"  # "auto" picks CUDA when present
    dtype: str = "auto"  # "auto": float32 on CPU, bfloat16 on CUDA
    num_threads: int | None = None  # torch threads for the engine thread on CPU (default 1)
    packed_weights: bool = True  # CPU float32: LM and codec decoder on pre-packed kernels (engine.packed)
    # dtype of those packed weights: "float32", "bfloat16", or "int8": the LM's linears on
    # int8 weights (fastest for a few streams; slower prefill and large batches, see
    # engine.packed), the codec on bfloat16. "auto" is int8 where the CPU multiplies
    # bfloat16 natively (AVX512-BF16, AMX), float32 elsewhere. Activations and the KV
    # cache stay float32.
    packed_dtype: PackedDtype = "auto"
    # Decode attention on CPU. "shared_prefix": the streams of a voice read its prefix
    # blocks once per step between them; "per_row": each stream reads its whole context
    # on its own (in place where its blocks are consecutive, as the block manager keeps
    # them), in fewer calls: ~1 ms less per one-stream step here, but from 4 streams on
    # it copies every stream's prefix and is slower (docs/architecture.md).
    # A row gets the same bits alone or batched either way. "auto": per_row where
    # scheduler.max_running <= 2 (an engine sized for one or two streams, say one
    # player's NPCs), shared_prefix otherwise.
    decode_attention: DecodeAttention = "auto"
    # Time constant of the engine and audio threads' busy fractions (EngineStats.engine_busy,
    # audio_busy; exported as metrics): long enough that one long prefill
    # does not read as overload, short enough to see a surge within seconds.
    busy_window_s: float = 5.0

    def __post_init__(self) -> None:
        # Checked here, not where the weights are packed, so a bad value fails on CUDA too.
        for name, choices in (("packed_dtype", PACKED_DTYPES), ("decode_attention", DECODE_ATTENTIONS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")

"""The public engine: submit, stream, cancel, warm a voice, read stats.

One thread owns the model, the block pool and the scheduler. Other threads talk
to it only by posting commands, so nothing in the hot loop takes a lock for
longer than a queue operation.

That thread never dies of a bug: an exception in a posted command fails what the
command was for, one in a forward pass or a sampling step fails that batch's
streams, and one in a scheduling pass fails the streams the scheduler held (its
state may be half-updated). Each failed stream ends with FinishReason.ERROR and
its request number; everything else goes on. `inject_fault` is the test hook.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from engine.codecs.base import is_stateful
from engine.config import EngineConfig, SamplingParams
from engine.packed import can_pack, native_bf16
from engine.runtime.audio_process import AudioProcess
from engine.runtime.audio_worker import AudioWorker
from engine.runtime.block_manager import BlockManager
from engine.runtime.busy import BusyMeter
from engine.runtime.cpu_threads import one_thread
from engine.runtime.family import ModelFamily, Step
from engine.runtime.model_runner import ModelRunner
from engine.runtime.outputs import (
    DoneEvent,
    EngineClosed,
    EngineError,
    EngineOverloaded,
    EngineStats,
    FinishReason,
    FrameEvent,
    Outbox,
    UtteranceStream,
)
from engine.runtime.scheduler import Scheduler
from engine.runtime.sequence import Sequence
from engine.runtime.streaming import check_rate
from engine.runtime.voice import VoicePrompt
from engine.runtime.voice_pins import VoicePins

log = logging.getLogger(__name__)
FAULT_POINTS = ("command", "schedule", "step")


class InjectedFault(RuntimeError):
    """Raised where `Engine.inject_fault` asked for it (tests of fault containment)."""


def _resolve(cfg: EngineConfig) -> tuple[torch.device, torch.dtype]:
    device = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    return device, dtype


def _packed_kernels(cfg: EngineConfig) -> tuple[torch.dtype, bool]:
    """(dtype of the packed oneDNN weights, whether the LM's linears are int8 instead)."""
    name = cfg.packed_dtype
    if name == "auto":
        name = "int8" if native_bf16() else "float32"
    if name == "int8":  # the codec's convolutions in bfloat16 only where the CPU has it natively
        return (torch.bfloat16 if native_bf16() else torch.float32), True
    return getattr(torch, name), False


class Engine:
    def __init__(self, model_dir: str | Path, config: EngineConfig | None = None):
        from engine.models import load_family  # (the families import the runtime)

        self.config = config or EngineConfig()
        self.device, self.dtype = _resolve(self.config)
        self.model_dir = Path(model_dir)
        packed = (
            _packed_kernels(self.config) if self.config.packed_weights and can_pack(self.device, self.dtype) else None
        )
        self.family: ModelFamily = load_family(model_dir, self.config, self.device, self.dtype, packed)
        self.model, self.codec, self.tokenizer = self.family.model, self.family.codec, self.family.tokenizer
        self.model_cfg = getattr(self.family, "cfg", None)  # the family's own config (tests, tools)
        self.num_params = self.family.num_params
        batch, threads = self.config.stream.audio_batch, self.config.stream.audio_threads
        if self.device.type != "cpu":
            threads = 0  # (torch's CPU thread count means nothing to a GPU codec)
        elif threads == 0:
            threads = torch.get_num_threads() if is_stateful(self.codec) else 1
        factory = getattr(self.family, "codec_factory", None)
        self.audio: AudioWorker | AudioProcess | None = None
        if batch and self.config.stream.audio_process and factory and self.device.type == "cpu":
            self.audio = AudioProcess(self.codec, factory, batch, self.config.busy_window_s)
        elif batch:
            self.audio = AudioWorker(self.codec, batch, threads, self.config.busy_window_s)
        self.runner = ModelRunner(self.model, self.config.cache, self.device, self.dtype)
        attention = self.config.decode_attention
        if attention == "auto":
            attention = "per_row" if self.config.scheduler.max_running <= 2 else "shared_prefix"
        self.runner.split_decode &= attention == "shared_prefix"
        self.blocks = BlockManager(
            self.runner.num_blocks,
            self.config.cache.block_size,
            self.runner.copy_rows,
            caching=self.config.cache.prefix_cache,
        )
        self.scheduler = Scheduler(self.config.scheduler, self.blocks)
        self._outboxes: dict[int, Outbox] = {}
        # Warm-ups: called with the sequence once its prefix is in the cache, or with an error.
        self._on_prefilled: dict[int, Callable[[Sequence, str | None], None]] = {}
        self.pins = VoicePins(self.blocks, self.config.cache.max_pinned_fraction)
        self._commands: deque[tuple[Callable[[], None], Callable[[Exception], None] | None]] = deque()
        self._faults: set[str] = set()  # inject_fault
        self._cv = threading.Condition()
        self._stop = False
        self._inflight = 0  # submitted and not finished; guarded by _cv
        # CPU threads per kind of step. Measured on 2 cores: a long prefill gains
        # from both cores, while batched decode ran faster on one (its matmuls are
        # small enough that OpenMP hand-offs cost more than they save), which also
        # leaves a core for the consumers' audio decoding and the network. An audio process
        # keeps a core busy of its own, so prefill leaves that core to it: OpenMP threads that
        # share a core with another process wait for each other at every barrier. On 2 cores
        # with one busy, a 452-frame prefill took 84 ms on one thread and 90 ms on two
        # (docs/benchmarks.md).
        cpu = self.device.type == "cpu"
        cores = torch.get_num_threads() - (self.audio.num_threads if isinstance(self.audio, AudioProcess) else 0)
        # (Public: the engine thread reads them before each step, so a caller may change them
        # between steps; engine.bench_threads compares settings on one engine that way.)
        self.prefill_threads = (self.config.num_threads or max(1, cores)) if cpu else None
        self.decode_threads = (self.config.num_threads or 1) if cpu else None
        self.counters = dict(prefill_frames=0, decode_frames=0, steps=0)
        # The engine thread's share of wall time spent scheduling and stepping.
        self.busy = BusyMeter(self.config.busy_window_s)
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self._thread.start()
        if hasattr(self.family, "speak"):
            self.family.speak = self._speak

    # ---- public API (any thread) -------------------------------------------
    @property
    def has_timings(self) -> bool:
        """Whether this model emits timing marks (the speech LM's: it has an "advance" token)."""
        return self.family.has_timings

    @property
    def guides_voice(self) -> bool:
        """Whether this model takes SamplingParams.voice_guidance."""
        return self.family.guides_voice

    @property
    def language(self) -> str:
        """What the model speaks (a BCP 47 primary tag)."""
        return self.family.language

    @property
    def model_name(self) -> str:
        return self.family.name

    def default_sampling(self, **overrides) -> SamplingParams:
        """The model's recommended sampling (its config), with `overrides` applied."""
        return replace(self.family.default_sampling(), **overrides)

    @property
    def frame_rate(self) -> float:
        """Generated frames per second of audio."""
        return self.codec.frame_rate

    @property
    def max_reference_seconds(self) -> float | None:
        """The longest reference clip this model clones from (None: no limit of its own)."""
        frames = self.family.max_reference_frames
        return frames / self.frame_rate if frames else None

    @property
    def sample_rate(self) -> int:
        """The codec's native rate; `submit` resamples to any rate in 8000-48000 Hz."""
        return self.codec.sample_rate

    def make_voice(self, wave, sample_rate: int, transcript: str, voice_id: str) -> VoicePrompt:
        """Make a voice's prompt once from a reference recording and its transcript (the
        speech LM reads both; pocket-tts clones from the audio alone).

        `wave` is mono or [channels, samples], float in [-1, 1], a numpy array or a tensor."""
        import torchaudio.functional as AF

        wave = torch.as_tensor(wave, dtype=torch.float32)
        wave = wave.mean(0) if wave.ndim == 2 else wave
        if sample_rate != self.codec.sample_rate:
            wave = AF.resample(wave, sample_rate, self.codec.sample_rate)
        limit = self.family.max_reference_frames
        if limit and len(wave) > limit * self.codec.samples_per_frame:
            raise ValueError(
                f"reference is {len(wave) / self.codec.sample_rate:.1f} s; this model clones from at most "
                f"{limit / self.frame_rate:.0f} s: cut it to a sentence or two (and its transcript)"
            )
        return self.family.make_voice(wave, transcript, self.voice_key(voice_id))

    def _speak(self, voice: VoicePrompt, text: str) -> torch.Tensor:
        """The model's own rendering of `text` in `voice`, per frame what the codec decodes
        (the expected latent, else the audio codes) [frames, dim]; a fixed seed, so a voice
        registered twice adapts to the same numbers."""
        stream = self.submit(voice, text, self.default_sampling(seed=self.config.adapt.seed))
        rows = []
        for event in stream.events():
            if isinstance(event, FrameEvent):
                rows.append(event.ids[1:] if event.latent is None else event.latent)
            elif isinstance(event, DoneEvent) and event.reason is FinishReason.ERROR:
                raise EngineError(f"speaking the reference transcript failed: {event.error}")
        if not rows:
            raise EngineError("the model said nothing for the reference transcript")
        return torch.stack(rows)

    def voice_key(self, voice_id: str) -> bytes:
        """The conditioning key `make_voice` gives a voice; a stored prompt with another key
        was made for a different model, codec, front end or adaptation and must be made again."""
        return f"{self.family.voice_identity()}|{voice_id}".encode()

    def submit(
        self,
        voice: VoicePrompt,
        text: str,
        sampling: SamplingParams | None = None,
        sample_rate: int | None = None,
        chunk_frames: int | None = None,
        after: UtteranceStream | None = None,
    ) -> UtteranceStream:
        """Queue an utterance; iterate the returned stream for audio chunks and timing marks.

        `after`: the utterance a listener hears just before this one (a conversation's previous
        sentence, submitted ahead to be ready in time). Its playback deadline then starts where
        that one's audio ends, so while others run short of audio it waits its turn instead of
        racing them as if a listener were waiting for it."""
        sampling = sampling or self.default_sampling()
        sampling.validate()
        sample_rate = check_rate(sample_rate or self.codec.sample_rate)
        with one_thread():  # (on the caller's thread)
            plan = self.family.plan(voice, text, sampling)
        prompt, limit = plan.prompt, self.model.max_positions
        max_frames = min(plan.max_frames, sampling.max_frames or plan.max_frames, limit - len(prompt))
        if max_frames < 1:
            raise ValueError(f"prompt of {len(prompt)} frames leaves no room under max_positions {limit}")
        if sampling.voice_guidance and plan.unvoiced is None:
            raise ValueError(f"voice_guidance is not supported by the {self.family.name!r} model")
        bs = self.blocks.block_size
        need = -(-(len(prompt) + max_frames) // bs)
        if plan.unvoiced is not None:  # the guide grows frame for frame with the utterance
            need += -(-(len(plan.unvoiced) + max_frames) // bs)
        usable = int(self.blocks.num_blocks * (1 - self.config.cache.max_pinned_fraction))
        if need > usable:  # could never finish, even alone, with the pins at their limit
            raise ValueError(
                f"utterance needs {need} KV blocks; at most {usable} of the pool's "
                f"{self.blocks.num_blocks} are guaranteed to one stream"
            )
        sched = self.config.scheduler
        with self._cv:
            if self._stop:
                raise EngineClosed("the engine is shutting down")
            if self._inflight >= sched.max_running + sched.max_waiting:
                raise EngineOverloaded(
                    f"{self._inflight} utterances in flight (limit {sched.max_running} running + "
                    f"{sched.max_waiting} waiting)",
                    retry_after_s=1.0,
                )
            self._inflight += 1
        seed = sampling.seed if sampling.seed is not None else random.SystemRandom().getrandbits(63)
        seq = Sequence(prompt, voice.num_frames, voice.prefix_key, sampling, max_frames, seed)
        seq.speaker = voice.speaker
        # At least one frame: an utterance that ends before any audio says nothing at all.
        seq.min_frames = min(max_frames - 1, max(1, plan.min_frames))
        seq.family_state = plan.state
        if plan.unvoiced is not None:
            seq.guide = Sequence(plan.unvoiced, 1, b"unvoiced|" + voice.prefix_key, sampling, max_frames, seed)
        seq.after = after.seq if after is not None else None
        outbox = Outbox(self._wake, self.config.scheduler.max_buffered_frames)
        stream = UtteranceStream(
            seq,
            outbox,
            self.codec,
            self.config.stream,
            sample_rate,
            chunk_frames,
            lambda: self._cancel(seq),
            plan.spans,
            plan.units,
            self._decoder_for(voice),
        )
        self._post(lambda: self._admit(seq, outbox), required=True, on_error=lambda exc: self._fail(seq, exc, outbox))
        return stream

    def _decoder_for(self, voice: VoicePrompt) -> Callable[[torch.Tensor], torch.Tensor]:
        """How a stream of `voice` decodes its windows: through the voice's adapter, on the
        shared audio thread when there is one."""
        if is_stateful(self.codec):  # the stream's own state goes with each call instead
            return self.audio.decode if self.audio else None
        return partial(self.audio.decode if self.audio else self.codec.decode, adapter=voice.adapter)

    def _cancel(self, seq: Sequence) -> None:
        """Called by UtteranceStream.cancel(), from any thread."""
        seq.cancelled.set()
        self._post(lambda: self._finish(seq, FinishReason.CANCELLED))

    def warm_voice(self, voice: VoicePrompt, timeout: float | None = None) -> bool:
        """Compute and pin a voice's prefix now. Returns whether it was already cached."""
        return self._call(lambda fut: self._warm(voice, fut)).result(timeout)

    def unpin_voice(self, voice: VoicePrompt) -> None:
        self._call(lambda fut: fut.set_result(self.pins.unpin(voice.voice_hash))).result()

    def is_cached(self, voice: VoicePrompt) -> bool:
        """Whether every frame of the voice prefix is in the prefix cache right now."""

        def probe(fut: Future) -> None:
            fut.set_result(
                self.blocks.match(voice.frames, voice.num_frames, voice.prefix_key).cached_tokens == voice.num_frames
            )

        return self._call(probe).result()

    def stats(self) -> EngineStats:
        """A snapshot read without stopping the engine; fields may be one step apart."""
        b, s = self.blocks, self.scheduler
        return EngineStats(
            b.num_blocks,
            b.num_free,
            len(s.running),
            len(s.waiting),
            b.hits,
            b.misses,
            b.evictions,
            self.counters["prefill_frames"],
            s.cached_frames,
            self.counters["decode_frames"],
            self.counters["steps"],
            s.preemptions,
            len(self.pins),
            self.pins.num_blocks,
            self.busy.read(),
            self.audio.busy.read() if self.audio else 0.0,
        )

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10)
        if self.audio is not None:
            self.audio.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def inject_fault(self, point: str) -> None:
        """Test hook: make the engine thread's next pass through `point` raise InjectedFault.
        Points: "command" (the next posted command), "schedule" (a scheduling pass), "step"
        (a forward pass), "audio" (the audio worker's next batch)."""
        if point == "audio":
            if self.audio is None:
                raise ValueError("this engine has no audio worker (StreamConfig.audio_batch=0)")
            self.audio.inject_fault()
            return
        if point not in FAULT_POINTS:
            raise ValueError(f"fault point must be one of {FAULT_POINTS + ('audio',)}, got {point!r}")
        with self._cv:
            self._faults.add(point)
            self._cv.notify()

    def _trip(self, point: str) -> None:
        if point in self._faults:  # (a set lookup: nothing to pay while no fault is armed)
            with self._cv:
                self._faults.discard(point)
            raise InjectedFault(f"injected fault at {point}")

    # ---- plumbing ------------------------------------------------------------
    def _post(
        self, command: Callable[[], None], required: bool = False, on_error: Callable[[Exception], None] | None = None
    ) -> None:
        """Queue `command` for the engine thread; if it raises, `on_error` gets the exception
        (so whoever waits on the command hears of it). Once the engine is closed nothing runs
        it: a `required` command (one a caller waits on) raises EngineClosed, any other (a
        cancel of a stream the shutdown already ended) is dropped."""
        with self._cv:
            if self._stop:
                if required:
                    raise EngineClosed("the engine is shut down")
                return
            self._commands.append((command, on_error))
            self._cv.notify()

    def _call(self, fn: Callable[[Future], None]) -> Future:
        fut: Future = Future()

        def failed(exc: Exception) -> None:
            if not fut.done():
                fut.set_exception(EngineError(f"engine command failed: {type(exc).__name__}: {exc}"))

        self._post(lambda: fn(fut), required=True, on_error=failed)
        return fut

    def _wake(self) -> None:
        with self._cv:
            self._cv.notify()

    # ---- engine thread -------------------------------------------------------
    def _admit(self, seq: Sequence, outbox: Outbox) -> None:
        self._outboxes[seq.seq_id] = outbox
        if seq.cancelled.is_set():
            self._finish(seq, FinishReason.CANCELLED)
        else:
            self.scheduler.add(seq)

    def _finish(self, seq: Sequence, reason: FinishReason, error: str | None = None) -> None:
        outbox = self._outboxes.pop(seq.seq_id, None)
        warming = self._on_prefilled.pop(seq.seq_id, None)
        try:
            self.scheduler.remove(seq)
        finally:  # the consumer hears of the end even if freeing its blocks failed
            if warming is not None:
                warming(seq, error or f"warm-up ended: {reason.value}")
            if outbox is not None:
                outbox.put(DoneEvent(reason, error))
                with self._cv:
                    self._inflight -= 1

    def _fail(self, seq: Sequence, exc: Exception, outbox: Outbox | None = None) -> None:
        """End `seq` with an error naming its request number; `outbox` if it was never admitted."""
        if outbox is not None:
            self._outboxes.setdefault(seq.seq_id, outbox)
        try:
            self._finish(seq, FinishReason.ERROR, f"engine request {seq.seq_id}: {type(exc).__name__}: {exc}")
        except Exception:  # the scheduler is broken too: the consumer was told, carry on
            log.exception("engine: freeing request %d after an error failed", seq.seq_id)

    def _contain(self, exc: Exception, where: str, seqs: list[Sequence]) -> None:
        """A bug surfaced on the engine thread: log it and fail the streams it touched."""
        log.error("engine: %s failed; failing %d stream(s)", where, len(seqs), exc_info=exc)
        for seq in seqs:
            self._fail(seq, exc)

    def _lead_at(self, now: float) -> Callable[[Sequence], float]:
        """Seconds of a stream's audio ahead of real-time playback of it at `now` (Sequence.lead:
        playback starts with its first frame, or after the utterance heard before it)."""
        rate = self.frame_rate
        return lambda seq: seq.lead(now, rate)

    def _ready(self, seq: Sequence) -> bool:
        box = self._outboxes.get(seq.seq_id)
        return box is None or box.pending_frames < self.config.scheduler.max_buffered_frames

    def _loop(self) -> None:
        while True:
            with self._cv:
                stop = self._stop
                commands, self._commands = list(self._commands), deque()
            for command, on_error in commands:  # (at a stop too: late submissions are told, not lost)
                try:
                    self._trip("command")
                    command()
                except Exception as exc:
                    log.error("engine: a posted command failed", exc_info=exc)
                    if on_error is not None:
                        on_error(exc)
            if stop:
                for seq in list(self.scheduler.running) + list(self.scheduler.waiting):
                    self._finish(seq, FinishReason.SHUTDOWN, "engine closed")
                return
            started = time.monotonic()
            try:
                self._trip("schedule")
                batch = self.scheduler.schedule(self._ready, self._lead_at(started))
            except Exception as exc:
                self._contain(exc, "a scheduling pass", list(self.scheduler.running) + list(self.scheduler.waiting))
                continue
            if not batch:
                self.busy.record(time.monotonic() - started)
                with self._cv:
                    if not self._commands and not self._stop:
                        self._cv.wait(timeout=0.05)
                continue
            self.counters["steps"] += 1
            for items, threads in (
                ([(s, len(s) - 1, 1) for s in batch.decode], self.decode_threads),
                (batch.prefill, self.prefill_threads),
            ):
                if items:
                    if threads and torch.get_num_threads() != threads:
                        torch.set_num_threads(threads)
                    try:
                        self._run(items)
                    except Exception as exc:  # after the forward (the forward itself is guarded below)
                        live = [s for s, _, _ in items if s.seq_id in self._outboxes or s.seq_id in self._on_prefilled]
                        self._contain(exc, "a step", live)
            self.busy.record(time.monotonic() - started)

    @torch.inference_mode()
    def _run(self, items: list[tuple[Sequence, int, int]]) -> None:
        try:
            self._trip("step")
            hidden = self.runner.forward(items)
        except Exception as exc:  # a failed forward fails its batch, never the engine
            self._contain(exc, "a forward pass", [seq for seq, _, _ in items])
            return
        ready = []  # rows that now sample their next frame, all in one batched draw
        for i, (seq, start, n) in enumerate(items):
            if n > 1 or start < seq.prompt_len:
                self.counters["prefill_frames"] += n
            else:
                self.counters["decode_frames"] += 1
            seq.num_computed = start + n
            self.blocks.register(seq)
            if seq.num_computed < len(seq):
                continue
            if seq.max_frames == 0:  # a warm-up: the prefix is computed, nothing to speak
                self._on_prefilled.pop(seq.seq_id)(seq, None)
                self._finish(seq, FinishReason.LENGTH)
                continue
            ready.append(i)
        if not ready:
            return
        seqs = [items[i][0] for i in ready]
        try:
            hidden = hidden[ready]
            unvoiced = self._guides(seqs, hidden)
            step = self.family.step(seqs, hidden) if unvoiced is None else self.family.step(seqs, hidden, unvoiced)
        except Exception as exc:
            self._contain(exc, "a sampling step", seqs)
            return
        self._emit(seqs, step)

    def _guides(self, seqs: list[Sequence], hidden: torch.Tensor) -> torch.Tensor | None:
        """Bring each guided row's guide up to its sequence and return every row's hidden state
        without its voice (an unguided row's own); None when no row is guided.

        Guides run in forward passes of their own, one for those that only decode and one for
        those that catch up (a first step, or after a preemption), so a row's kernels depend on
        neither what else is in the batch nor whether it is guided."""
        rows = [b for b, s in enumerate(seqs) if s.guide is not None]
        if not rows:
            return None
        unvoiced = hidden.clone()
        decoding = [len(seqs[b].guide) - seqs[b].guide.num_computed == 1 for b in rows]
        for part in ([b for b, d in zip(rows, decoding) if d], [b for b, d in zip(rows, decoding) if not d]):
            if not part:
                continue
            items = [(g, g.num_computed, len(g) - g.num_computed) for g in (seqs[b].guide for b in part)]
            unvoiced[part] = self.runner.forward(items)
            for g, start, n in items:
                g.num_computed = start + n
        return unvoiced

    def _emit(self, seqs: list[Sequence], step: Step) -> None:
        """Append each row's frame and tell its consumer (with what the codec decodes for
        it); end what ended."""
        for seq, frame, latent, mark, ended in zip(seqs, step.frames, step.latents, step.marks, step.ended):
            try:
                if ended:
                    self._finish(seq, FinishReason.EOS)
                    continue
                seq.append(frame)
                if seq.guide is not None:
                    seq.guide.append(frame)
                if seq.first_frame_at is None:
                    seq.first_frame_at = time.monotonic()
                outbox = self._outboxes[seq.seq_id]
                outbox.put(FrameEvent(frame, latent))
                if mark is not None:
                    outbox.put(mark)
                if seq.num_generated >= seq.max_frames:
                    self._finish(seq, FinishReason.LENGTH)
            except Exception as exc:
                self._fail(seq, exc)

    def _warm(self, voice: VoicePrompt, fut: Future) -> None:
        name = voice.voice_hash
        if self.pins.touch(name) or self.pins.pin(name, voice.frames, voice.prefix_key):
            fut.set_result(True)
            return
        seq = Sequence(voice.frames, voice.num_frames, voice.prefix_key, SamplingParams(), 0, 0)
        seq.speaker = voice.speaker

        def done(s: Sequence, error: str | None) -> None:  # prefilled: its blocks are in the cache now
            if error is not None:
                fut.set_exception(EngineError(f"warming voice {name} failed: {error}"))
                return
            self.pins.pin(name, voice.frames, voice.prefix_key)
            fut.set_result(False)

        self._on_prefilled[seq.seq_id] = done
        self.scheduler.add(seq)

"""One NPC conversation: text fragments in, ordered audio/marks/acks out.

Three parts run on the event loop:
- the caller feeds requests (`on_text`, `on_flush`, `on_cancel`, `on_close`);
- `speak()` plays queued utterances strictly in order, submitting the next one to
  the engine while the current one still plays, so there is no gap between them;
- `outbound` holds what is ready to send, bounded for audio, so a slow client
  stalls generation instead of growing memory.

Cancel is handled in the loop thread, between two sends: it marks the turn's
utterances cancelled, stops their engine streams, drops their unsent audio and
only then queues CancelDone, so no audio of that turn can follow the ack.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import grpc

from engine import Engine, EngineOverloaded, Finished, FinishReason, NothingToSay, SamplingParams
from engine.text.normalize import normalize
from service.errors import FINISH_STATUS, StreamError, to_stream_error
from service.gen import npc_voice_pb2 as pb
from service.lexicon import Lexicon
from service.segmenter import Segmenter
from service.utterance import Audio, Mark, MarkKind, Utterance
from service.voices import LoadedVoice

_REASONS = {
    FinishReason.EOS: pb.END_OF_SPEECH,
    FinishReason.LENGTH: pb.LENGTH_LIMIT,
    FinishReason.CANCELLED: pb.CANCELLED,
}
_MARK_KINDS = {MarkKind.WORD: pb.WORD, MarkKind.PHONEME: pb.PHONEME}


@dataclass(frozen=True)
class FlushPoint:
    """In the play queue: once everything before it is spoken, acknowledge the flush."""

    turn_id: str


@dataclass(frozen=True)
class ClosePoint:
    """In the play queue: once everything before it is spoken, end the stream (with
    `error`'s status when the server is draining)."""

    error: StreamError | None = None


@dataclass(frozen=True)
class End:
    """The last outbound item: the stream ends with OK, or with `error`'s status."""

    error: StreamError | None = None


def spoken_form(lexicon: Lexicon, text: str, language: str = "en") -> str:
    """What the engine is asked to say for `text`: the pronunciation dictionary, then, for
    English, the normaliser (it spells numbers and shorthands out in English words)."""
    text = lexicon.apply(text)
    return normalize(text) if language == "en" else text


@dataclass(frozen=True)
class SessionSettings:
    voice: LoadedVoice
    sample_rate: int
    float32: bool
    chunk_frames: int
    sampling: SamplingParams  # its seed is the session's base seed
    schedule: tuple[int, ...]
    lookahead: int = 1  # utterances submitted ahead of the one playing
    queue_chunks: int = 4  # audio chunks buffered per utterance and in the outbound queue
    overload_wait_s: float = 10.0  # how long an utterance waits for engine capacity
    first_overload_wait_s: float | None = None  # for the first utterance, if different (barks fail fast)
    max_pending_chars: int = 20000  # text received but not yet spoken (~20 min of speech)


class Outbound:
    """Messages ready to send (response payloads, then one End). Audio waits for room;
    control messages never wait."""

    def __init__(self, audio_limit: int):
        self.items: deque[tuple[object, Utterance | None]] = deque()
        self.audio_limit = audio_limit
        self._changed = asyncio.Event()

    async def put_audio(self, msg, utt: Utterance) -> None:
        while sum(1 for _, u in self.items if u is not None) >= self.audio_limit and not utt.cancelled:
            self._changed.clear()
            await self._changed.wait()
        if not utt.cancelled:
            self._push((msg, utt))

    def put(self, msg) -> None:
        self._push((msg, None))

    def has_audio(self) -> bool:
        return any(isinstance(msg, pb.AudioChunk) for msg, _ in self.items)

    def fail(self, exc: BaseException) -> None:
        """End the stream with the status of `exc`."""
        self.put(End(to_stream_error(exc)))

    async def control_room(self, limit: int = 64) -> None:
        """Wait while more than `limit` messages are unsent: a client that sends but does
        not read is not allowed to pile up acknowledgements without bound."""
        while len(self.items) > limit:
            self._changed.clear()
            await self._changed.wait()

    def purge(self, turns: set[str] | None) -> None:
        """Drop unsent messages of these turns (None: all turns)."""
        self.items = deque(
            it for it in self.items if it[1] is None or (turns is not None and it[1].turn_id not in turns)
        )
        self._changed.set()

    async def get(self) -> tuple[object, Utterance | None]:
        """The next response payload, or End, with the utterance whose audio or mark it carries."""
        while not self.items:
            self._changed.clear()
            await self._changed.wait()
        item = self.items.popleft()
        self._changed.set()
        return item

    def _push(self, item) -> None:
        self.items.append(item)
        self._changed.set()


class Conversation:
    def __init__(self, engine: Engine, lexicon: Lexicon, settings: SessionSettings):
        self.engine, self.lexicon, self.settings = engine, lexicon, settings
        self.outbound = Outbound(settings.queue_chunks)
        self.segmenter = Segmenter(settings.schedule)
        self.turn_id = ""
        self.queue: deque[Utterance | FlushPoint | ClosePoint] = deque()
        self._queued = asyncio.Event()
        self._count = 0  # utterances so far: each gets seed + its index
        self.closed = False
        self.playing: Utterance | None = None
        self.heard: Utterance | None = None  # the last utterance played
        self.last_audio_done = time.perf_counter()
        # Named turns that were cancelled: later text or flushes for them are dropped, so
        # nothing of a cancelled turn can be spoken after its CancelDone. Bounded.
        self.cancelled: OrderedDict[str, None] = OrderedDict()
        self.draining = False
        # Told of each utterance that ends (reason, seconds to first audio, rtf, characters,
        # audio seconds): metrics and the access log.
        self.on_finished: Callable[[str, float, float, int, float], None] | None = None

    # ---- requests (called from the loop) -------------------------------------------
    def on_text(self, text: str, turn_id: str) -> None:
        if turn_id in self.cancelled or (self.draining and self.closed):
            return  # a turn the player interrupted, or one after the server began to drain
        pending = len(self.segmenter.buffer) + sum(len(u.source_text) for u in self.queue if isinstance(u, Utterance))
        if pending + len(text) > self.settings.max_pending_chars:
            raise StreamError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"more than {self.settings.max_pending_chars} characters were waiting to be spoken; "
                "pace text closer to speech (UtteranceDone reports progress)",
                1.0,
            )
        if turn_id and turn_id != self.turn_id:
            self._enqueue(self.segmenter.flush())  # a new turn: the old one is spoken first
            self.segmenter.reset()
            if self.draining:  # the old turn was the last
                self._end_drained()
                return
            self.turn_id = turn_id
        self._enqueue(self.segmenter.push(text))

    def on_flush(self, turn_id: str) -> None:
        if turn_id in self.cancelled:
            self.outbound.put(pb.FlushDone(turn_id=turn_id))  # nothing of it is left
            return
        if not turn_id or turn_id == self.turn_id:
            self._enqueue(self.segmenter.flush())
        self._push(FlushPoint(turn_id or self.turn_id))
        if self.draining:  # the turn in progress is complete: nothing more is spoken
            self._end_drained()

    def on_cancel(self, turn_id: str) -> None:
        turns = {turn_id} if turn_id else None
        # Remember what was cancelled: the LLM may still be streaming it. A cancel of all
        # turns covers every named turn buffered, queued or playing now.
        named = {turn_id} if turn_id else {self.turn_id, *(self._turn_of(i) for i in [self.playing, *self.queue])}
        for tid in named - {""}:
            self.cancelled[tid] = None
        while len(self.cancelled) > 1024:
            self.cancelled.popitem(last=False)
        hit = (lambda t: True) if turns is None else (lambda t: t in turns)
        if hit(self.turn_id):
            self.segmenter.reset()
        kept = deque()
        for item in self.queue:
            if isinstance(item, Utterance) and hit(item.turn_id):
                item.cancel()
            elif isinstance(item, FlushPoint) and hit(item.turn_id):
                pass  # the cancel answers it
            else:
                kept.append(item)
        self.queue = kept
        if self.playing is not None and hit(self.playing.turn_id):
            self.playing.cancel()
        self.outbound.purge(turns)
        self.outbound.put(pb.CancelDone(turn_id=turn_id))

    @staticmethod
    def _turn_of(item: Utterance | FlushPoint | ClosePoint | None) -> str:
        return getattr(item, "turn_id", "")

    def on_close(self) -> None:
        if not self.closed:
            self.closed = True
            self._enqueue(self.segmenter.flush())
            self._push(ClosePoint())

    def drain(self) -> None:
        """The server is going away: finish the turn in progress (what is queued, and the
        current turn's text up to its Flush or the next turn), then end with UNAVAILABLE."""
        self.draining = True
        if not self.segmenter.buffer.strip():  # no turn is half-sent: end after what is queued
            self._end_drained()

    def _end_drained(self) -> None:
        if not self.closed:
            self.closed = True
            error = StreamError(
                grpc.StatusCode.UNAVAILABLE, "the server is shutting down; reconnect (to another instance)", 1.0
            )
            self._push(ClosePoint(error))

    def cancel_all(self) -> None:
        """The client went away: stop every engine stream now."""
        for item in list(self.queue) + [self.playing]:
            if isinstance(item, Utterance):
                item.cancel()
        self.queue.clear()

    # ---- playing ---------------------------------------------------------------
    async def speak(self) -> None:
        """Play the queue in order until its ClosePoint; a failure ends the stream with its status."""
        try:
            while True:
                while not self.queue:
                    self._queued.clear()
                    await self._queued.wait()
                item = self.queue.popleft()
                if isinstance(item, ClosePoint):
                    self.outbound.put(End(item.error))
                    return
                if isinstance(item, FlushPoint):
                    self.outbound.put(pb.FlushDone(turn_id=item.turn_id))
                    continue
                self.playing = item
                await self._play(item)
                self.playing, self.heard = None, item
        except Exception as exc:  # a bug too must end this stream with a status, never hang it
            self.outbound.fail(exc)

    async def _play(self, utt: Utterance) -> None:
        if not utt.started:
            await self._start(utt)
        self._prefetch()
        if utt.cancelled or not utt.started:
            return  # cancelled, or nothing in it can be spoken ("🙂")
        utt.ready_at = max(self.last_audio_done, utt.ready_at or 0.0)
        self.outbound.put(
            pb.UtteranceStarted(
                turn_id=utt.turn_id, utterance_id=utt.utterance_id, text=utt.text, source_text=utt.source_text
            )
        )
        first_sent = None
        try:
            async for event in utt.events():
                if utt.cancelled:
                    return
                if isinstance(event, Audio):
                    await self.outbound.put_audio(
                        pb.AudioChunk(
                            audio=event.data,
                            turn_id=utt.turn_id,
                            utterance_id=utt.utterance_id,
                            sample_offset=event.offset,
                            last_chunk=event.is_last,
                        ),
                        utt,
                    )
                    first_sent = first_sent or time.perf_counter()
                elif isinstance(event, Mark):
                    await self.outbound.put_audio(
                        pb.TimingMark(
                            turn_id=utt.turn_id,
                            utterance_id=utt.utterance_id,
                            kind=_MARK_KINDS[event.kind],
                            text=event.text,
                            start_ms=round(event.start_ms),
                            end_ms=round(event.end_ms),
                            char_start=event.char_start,
                            char_end=event.char_end,
                        ),
                        utt,
                    )
                elif isinstance(event, Finished) and not utt.cancelled:
                    self._done(utt, event, first_sent)
        except Exception as exc:
            raise to_stream_error(exc, f"utterance {utt.utterance_id}") from exc

    def _done(self, utt: Utterance, fin: Finished, first_sent: float | None) -> None:
        now = time.perf_counter()
        ttfa_s = (first_sent or now) - utt.ready_at
        rtf = (now - utt.submitted_at) / fin.audio_seconds if fin.audio_seconds else 0.0
        if self.on_finished is not None:
            self.on_finished(str(fin.reason), ttfa_s, rtf, len(utt.text), fin.audio_seconds)
        if fin.reason in FINISH_STATUS:
            raise StreamError(FINISH_STATUS[fin.reason], f"utterance {utt.utterance_id} failed: {fin.error}")
        self.last_audio_done = now
        self.outbound.put(
            pb.UtteranceDone(
                turn_id=utt.turn_id,
                utterance_id=utt.utterance_id,
                text=utt.text,
                audio_seconds=fin.audio_seconds,
                ttfa_ms=ttfa_s * 1000,
                real_time_factor=rtf,
                reason=_REASONS.get(fin.reason, pb.FINISH_REASON_UNSPECIFIED),
                voice_cached=utt.voice_cached,
            )
        )

    async def _start(self, utt: Utterance) -> None:
        s = self.settings
        wait = s.first_overload_wait_s if utt.index == 0 and s.first_overload_wait_s is not None else s.overload_wait_s
        deadline = time.monotonic() + wait
        while (retry := self._try_start(utt)) is not None:
            if time.monotonic() + retry > deadline:
                raise StreamError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "the engine has no room for this conversation's next utterance",
                    retry,
                )
            await asyncio.sleep(retry)

    def _try_start(self, utt: Utterance) -> float | None:
        """Submit `utt`; None when done, else seconds after which to retry. Any other
        failure (a bad request, the engine shutting down) propagates to `speak`."""
        s = self.settings
        sampling = replace(s.sampling, seed=(s.sampling.seed + utt.index) % 2**63)
        try:
            utt.start(
                self.engine,
                s.voice.prompt,
                sampling,
                s.sample_rate,
                s.chunk_frames,
                s.float32,
                s.queue_chunks,
                after=self._before(utt),
            )
        except EngineOverloaded as exc:
            return exc.retry_after_s
        except NothingToSay:
            utt.cancelled = True  # skipped: no sound in it
        return None

    def _before(self, utt: Utterance) -> Utterance | None:
        """The utterance a listener hears just before `utt`: the engine schedules `utt` by when
        that one's audio runs out."""
        order = [u for u in (self.playing, *self.queue) if isinstance(u, Utterance)]
        i = order.index(utt) if utt in order else 0
        return order[i - 1] if i else self.heard

    def _prefetch(self) -> None:
        """Submit the next utterances early; failures are retried (and reported) when they play."""
        ahead = [u for u in self.queue if isinstance(u, Utterance)][: self.settings.lookahead]
        for utt in ahead:
            try:
                self._try_start(utt)
            except Exception:  # the same call is made again when it plays, and reports then
                pass

    # ---- queue -----------------------------------------------------------------
    def _enqueue(self, pieces: list[str]) -> None:
        for piece in pieces:
            text = spoken_form(self.lexicon, piece, self.engine.language)
            utt = Utterance(self.turn_id, self._count, piece, text)
            utt.ready_at = time.perf_counter()
            self._count += 1
            self._push(utt)
        if self.playing is not None:
            self._prefetch()

    def _push(self, item) -> None:
        self.queue.append(item)
        self._queued.set()

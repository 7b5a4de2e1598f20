"""The gRPC server (grpc.aio): conversations, barks, voices, health and reflection.

Every handler turns bad input into a status with a message that says what to
fix; nothing a client sends can reach the engine unchecked, and one stream's
failure ends only that stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
import uuid
from dataclasses import replace

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from engine import Engine
from engine.runtime.heap import freeze_startup_heap
from engine.runtime.streaming import MAX_RATE, MIN_RATE, check_rate
from engine.runtime.warmup import WarmupReport, warm_up
from service.admission import Headroom, ListenerClock, SessionLimit, StartRate
from service.audio_input import MIN_SECONDS
from service.auth import TENANT, Keys
from service.config import ServiceConfig
from service.conversation import Conversation, End, SessionSettings, spoken_form
from service.demo_voices import install_demo_voices
from service.errors import StreamError, abort, to_stream_error
from service.gen import npc_voice_pb2 as pb
from service.gen import npc_voice_pb2_grpc as pb_grpc
from service.lexicon import Lexicon
from service.logs import REQUEST_ID, STARTED, access
from service.metrics import Metrics
from service.segmenter import DEFAULT_SCHEDULE
from service.voices import LoadedVoice, VoiceLibrary, VoiceNotFound, check_voice_id

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["NpcVoice"].full_name
MAX_TURN_ID = 128
MIN_RETRY_S = 0.5  # a refused start is told to wait at least this: each refusal costs a stream's setup
# Which field of a ConverseResponse / SynthesizeResponse carries each payload type
# (the two messages share field names).
_REPLY_FIELD = {f.message_type.full_name: f.name for f in pb.ConverseResponse.DESCRIPTOR.oneofs_by_name["kind"].fields}


def reply_field(msg) -> str:
    return _REPLY_FIELD[msg.DESCRIPTOR.full_name]


class NpcVoiceServicer(pb_grpc.NpcVoiceServicer):
    def __init__(self, engine: Engine, voices: VoiceLibrary, lexicon: Lexicon, config: ServiceConfig):
        self.engine, self.voices, self.lexicon, self.config = engine, voices, lexicon, config
        self.sessions = 0
        self.headroom = Headroom(config.headroom_window_s, config.min_slack_ms / 1000)
        self.limit = SessionLimit(config.max_sessions, config.limit_raise_s)
        self.starts = StartRate(config.starts_per_s, config.start_burst, config.start_hold_s)
        self.model_name = engine.model_name
        self.draining = False
        self.conversations: set[Conversation] = set()  # open Converse streams, told when draining
        self.health: health.aio.HealthServicer | None = None
        self.metrics = Metrics(self._live)
        self.metrics_port: int | None = None  # bound when config.metrics_port is set
        self.warmup: WarmupReport | None = None  # the start-up burst, when there was one

    # ---- conversations ------------------------------------------------------------
    async def Converse(self, request_iterator, context):
        # The SessionConfig is read before the stream is counted or refused: a refusal sent before
        # the client's first message went through reached some clients (grpc.aio) as a bare
        # INTERNAL from their own failed send, instead of RESOURCE_EXHAUSTED with its retry hint.
        try:
            first = await asyncio.wait_for(anext(request_iterator), self.config.first_message_timeout_s)
        except StopAsyncIteration:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "the stream ended before its SessionConfig") from None
        except asyncio.TimeoutError:
            raise StreamError(
                grpc.StatusCode.INVALID_ARGUMENT, f"no SessionConfig within {self.config.first_message_timeout_s:.0f} s"
            ) from None
        if first.WhichOneof("kind") != "config":
            raise StreamError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the first message must be a SessionConfig, got {first.WhichOneof('kind')}",
            )
        self._open_session(context)
        c = first.config
        settings = self._settings(
            c.voice_id,
            c.sample_rate_hz,
            c.encoding,
            c.chunk_ms,
            c.sampling,
            c.language,
            tuple(c.chunk_length_schedule) or DEFAULT_SCHEDULE,
        )
        conv = await self._conversation(settings, context)
        yield pb.ConverseResponse(started=await self._started(settings))
        reader = asyncio.create_task(self._read(request_iterator, conv))
        context.add_done_callback(lambda _: reader.cancel())
        try:
            async for msg in self._run(conv):
                yield pb.ConverseResponse(**{reply_field(msg): msg})
        finally:
            reader.cancel()

    async def _read(self, requests, conv: Conversation) -> None:
        try:
            async for req in requests:
                await conv.outbound.control_room()  # a client that does not read cannot pile up acks
                kind = req.WhichOneof("kind")
                turn = getattr(req, kind).turn_id if kind in ("text", "flush", "cancel") else ""
                if len(turn) > MAX_TURN_ID:
                    raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, f"turn_id longer than {MAX_TURN_ID} characters")
                if kind in ("text", "flush") and conv.closed:
                    if conv.draining:
                        continue  # the server ended the conversation, not the client: not its fault
                    raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, f"{kind} after Close")
                if kind == "text":
                    self._check_text(req.text.text, "text fragment")
                    conv.on_text(req.text.text, turn)
                elif kind == "flush":
                    conv.on_flush(turn)
                elif kind == "cancel":
                    conv.on_cancel(turn)  # still honoured after Close: barge-in on the last words
                elif kind == "close":
                    conv.on_close()
                elif kind == "config":
                    raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "SessionConfig may only be the first message")
                else:
                    raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, "empty ConverseRequest")
            conv.on_close()  # the client half-closed (a no-op after Close)
        except Exception as exc:  # a bug too must end this stream with a status, never hang it
            conv.outbound.fail(exc)

    async def Synthesize(self, request, context):
        self._open_session(context)
        r = request
        self._check_text(r.text, "text")
        if not self.engine.tokenizer.encode(spoken_form(self.lexicon, r.text, self.engine.language)):
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, f"nothing to speak in {r.text!r}")
        # A bark fails fast when the engine is full; its later sentences may wait.
        settings = self._settings(
            r.voice_id,
            r.sample_rate_hz,
            r.encoding,
            r.chunk_ms,
            r.sampling,
            r.language,
            DEFAULT_SCHEDULE,
            first_overload_wait_s=0.0,
        )
        conv = await self._conversation(settings, context)
        yield pb.SynthesizeResponse(started=await self._started(settings))
        conv.on_text(r.text, "")
        conv.on_close()
        async for msg in self._run(conv):
            yield pb.SynthesizeResponse(**{reply_field(msg): msg})

    async def drain(self) -> None:
        """Stop taking work: health says NOT_SERVING, new streams and voice changes get
        UNAVAILABLE, and each open conversation ends after its turn in progress."""
        self.draining = True
        await self.set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        for conv in list(self.conversations):
            conv.drain()

    async def set_health(self, status: int) -> None:
        """What health checks answer, for the whole server and for the NpcVoice service alike."""
        if self.health is not None:
            for name in ("", SERVICE_NAME):
                await self.health.set(name, status)

    def end_all(self) -> None:
        """The drain deadline passed: every stream still open ends with UNAVAILABLE now."""
        for conv in list(self.conversations):
            conv.outbound.fail(
                StreamError(grpc.StatusCode.UNAVAILABLE, "the server shut down before this turn ended; reconnect", 1.0)
            )

    # ---- tenants: a key's voices are stored as "<tenant>.<id>" (service/auth.py) ---------
    def _own(self, voice_id: str) -> str:
        """Where the caller's voice `voice_id` is stored."""
        check_voice_id(voice_id)
        tenant = TENANT.get()
        return f"{tenant}.{voice_id}" if tenant else voice_id

    def _find(self, voice_id: str) -> LoadedVoice:
        """The caller's voice, else a shared one (the demo voices); another tenant's never."""
        check_voice_id(voice_id)
        if TENANT.get():
            try:
                return self.voices.get(self._own(voice_id))
            except VoiceNotFound:
                pass
        return self.voices.get(voice_id)

    def _visible(self, stored: str) -> str:
        """The id the caller knows a stored voice by, or "" if it is not the caller's to see."""
        tenant, _, rest = stored.rpartition(".")
        if not tenant:
            return stored
        return rest if tenant == TENANT.get() else ""

    def _refuse_when_draining(self) -> None:
        if self.draining:
            raise StreamError(
                grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry on another instance", 1.0
            )

    def _live(self) -> dict:
        st = self.engine.stats()
        return {
            "open_streams": self.sessions,
            "session_limit": self.limit.value(),
            "limit_cuts": self.limit.cuts,
            "waiting": st.waiting,
            "running": st.running,
            "kv_free": st.free_blocks,
            "kv_total": st.num_blocks,
            "registrations": self.voices.pending,
            "voices": len(self.voices.list()),
            "store_down": int(self.voices.store_down),
            "engine_busy": st.engine_busy,
            "audio_busy": st.audio_busy,
            "headroom": self.headroom.least(),
            "hits": st.prefix_hits,
            "misses": st.prefix_misses,
            "evictions": st.prefix_evictions,
        }

    def _finished(self, reason: str, ttfa_s: float, rtf: float, chars: int, audio_s: float) -> None:
        self.metrics.utterances.labels(reason).inc()
        self.metrics.ttfa.observe(ttfa_s)
        if rtf:
            self.metrics.rtf.observe(rtf)
        fields = {"event": "utterance", "request_id": REQUEST_ID.get(), "reason": reason, "chars": chars}
        fields["audio_s"] = round(audio_s, 3)
        access.info("utterance", extra={"fields": {**fields, "ttfa_ms": round(ttfa_s * 1000, 1), "rtf": round(rtf, 3)}})

    async def _conversation(self, settings: SessionSettings, context) -> Conversation:
        """A stream whose request checked out starts here, if the start rate allows (a malformed
        request is refused before it can spend a start that another stream could use). A start
        whose turn comes within `start_hold_s` waits for it before SessionStarted."""
        limit = self.limit.value()
        share = limit / self.limit.ceiling
        wait = self.starts.take(share=share)
        if wait > self.starts.hold_s:
            burst, per_s = self.starts.scaled(share)
            scaled = "" if share == 1 else f", scaled to the session limit of {limit}"
            raise StreamError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server is starting other streams: it admits {burst} at once and {per_s:.3g} a second "
                f"after that (start_burst, starts_per_s{scaled})",
                max(wait - self.starts.hold_s, MIN_RETRY_S),
            )
        if wait:
            self.metrics.start_hold.observe(wait)
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:  # the client left during its hold
                self.starts.refund()
                raise
        conv = Conversation(self.engine, self.lexicon, settings)
        conv.on_finished = self._finished
        self.conversations.add(conv)
        context.add_done_callback(lambda _: self.conversations.discard(conv))
        # When the RPC ends for any reason (including a client that vanished while a
        # write was blocked), stop its engine work now rather than when the generator
        # happens to be collected.
        context.add_done_callback(lambda _: conv.cancel_all())
        return conv

    async def _run(self, conv: Conversation):
        """Yield response payloads until the conversation ends; stop every engine stream on the way out."""
        speaker = asyncio.create_task(conv.speak())
        # Each chunk's lateness against the listener's real-time playback (service/admission.py).
        per_second = conv.settings.sample_rate * (4 if conv.settings.float32 else 2)
        listener = ListenerClock()
        try:
            while True:
                starved = not conv.outbound.has_audio()  # (else a slow client, not the server, held it)
                msg, utt = await conv.outbound.get()
                if isinstance(msg, End):
                    break
                if isinstance(msg, pb.AudioChunk):
                    slack = listener.chunk(msg.utterance_id, utt.submitted_at, len(msg.audio) / per_second)
                    if slack is not None:
                        self.metrics.lateness.observe(max(0.0, -slack))
                        if starved:
                            self.headroom.record(slack)
                            if slack < 0 and self.limit.dry(self.sessions):
                                log.warning(
                                    "listeners ran dry again with %d streams open: admitting at most %d (of %d) "
                                    "until %g s pass with none run dry",
                                    self.sessions,
                                    self.limit.value(),
                                    self.limit.ceiling,
                                    self.limit.raise_s,
                                )
                yield msg
            if msg.error is not None:
                raise msg.error
        finally:
            speaker.cancel()
            conv.cancel_all()

    # ---- voices --------------------------------------------------------------------
    async def RegisterVoice(self, request, context):
        self._refuse_when_draining()  # one already running completes: its write is atomic
        r = request
        voice = await asyncio.to_thread(
            self.voices.register,
            self._own(r.voice_id),
            r.reference_wav,
            r.transcript,
            r.display_name,
            r.language or self.engine.language,
            r.overwrite,
        )
        return await self._voice_pb(voice)

    async def GetVoice(self, request, context):
        return await self._voice_pb(self._find(request.voice_id))

    async def ListVoices(self, request, context):
        shared_first = lambda stored: "." in stored  # the caller's own voices shadow shared ones
        voices = {
            public: v
            for v in sorted(self.voices.list(), key=lambda v: shared_first(v.info.voice_id))
            if (public := self._visible(v.info.voice_id))
        }
        broken = {
            public: e
            for k, e in sorted(self.voices.broken.items(), key=lambda kv: shared_first(kv[0]))
            if (public := self._visible(k))
        }
        return pb.ListVoicesResponse(
            voices=[await self._voice_pb(v) for _, v in sorted(voices.items())],
            broken=[pb.BrokenVoice(voice_id=k, error=e) for k, e in sorted(broken.items())],
        )

    async def DeleteVoice(self, request, context):
        self._refuse_when_draining()
        try:
            await asyncio.to_thread(self.voices.delete, self._own(request.voice_id))
        except VoiceNotFound:
            raise VoiceNotFound(f"no voice {request.voice_id!r}") from None  # (not the stored name)
        return pb.DeleteVoiceResponse()

    async def WarmVoice(self, request, context):
        voice = self._find(request.voice_id)
        start = time.perf_counter()
        was_cached = await asyncio.to_thread(self.engine.warm_voice, voice.prompt, 60.0)
        return pb.WarmVoiceResponse(was_cached=was_cached, elapsed_ms=(time.perf_counter() - start) * 1000)

    async def GetCapabilities(self, request, context):
        return pb.Capabilities(
            model=self.model_name,
            timings_available=self.engine.has_timings,
            phoneme_overrides=self.lexicon.phonemes_supported,
            native_sample_rate_hz=self.engine.sample_rate,
            min_sample_rate_hz=MIN_RATE,
            max_sample_rate_hz=MAX_RATE,
            languages=[self.engine.language],
            max_text_chars=self.config.max_text_chars,
            min_reference_seconds=MIN_SECONDS,
            max_reference_seconds=self.voices.max_reference_seconds,
        )

    async def GetStats(self, request, context):
        st = self.engine.stats()
        return pb.ServerStats(
            open_streams=self.sessions,
            running=st.running,
            waiting=st.waiting,
            kv_blocks_total=st.num_blocks,
            kv_blocks_free=st.free_blocks,
            prefix_hits=st.prefix_hits,
            prefix_misses=st.prefix_misses,
            prefix_evictions=st.prefix_evictions,
            prefill_frames=st.prefill_frames,
            cached_frames=st.cached_frames,
            decode_frames=st.decode_frames,
            preemptions=st.preemptions,
            pinned_voices=st.pinned_voices,
            prefix_cache_enabled=self.engine.config.cache.prefix_cache,
            max_batch=self.engine.config.scheduler.max_running,
            event_loop_tasks=len(asyncio.all_tasks()),
            session_limit=self.limit.value(),
        )

    # ---- helpers -------------------------------------------------------------------
    def _open_session(self, context) -> None:
        """Count a stream against max_sessions until its RPC is done, however it ends."""
        self._refuse_when_draining()
        limit = self.limit.value()
        if self.sessions >= limit:
            why = (
                "(max_sessions)"
                if limit == self.limit.ceiling
                else f"(of {self.limit.ceiling}, lowered after listeners ran dry again; one more every "
                f"{self.limit.raise_s:g} s with none run dry)"
            )
            raise StreamError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"the server is at its limit of {limit} open streams {why}", 1.0
            )
        self._refuse_past_headroom()
        self.sessions += 1

        def release(_) -> None:
            self.sessions -= 1

        context.add_done_callback(release)

    def _refuse_past_headroom(self) -> None:
        """RESOURCE_EXHAUSTED while a listener's audio came close to running dry within the
        headroom window: streams admitted earlier must keep real time, so a new one waits rather
        than slow them all. With no stream open there is nothing to protect."""
        h = self.headroom
        if self.sessions and h.full():
            least = h.least()
            came = (
                f"ran dry for {-least * 1000:.0f} ms"
                if least < 0
                else f"came within {least * 1000:.0f} ms of running dry"
            )
            raise StreamError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the server is at capacity: with {self.sessions} open streams, a listener's audio {came} "
                f"in the last {h.window_s:g} s (the margin kept is {h.min_slack_s * 1000:.0f} ms)",
                h.window_s,
            )

    async def _voice_pb(self, voice: LoadedVoice) -> pb.Voice:
        i = voice.info
        cached = await asyncio.to_thread(self.engine.is_cached, voice.prompt)
        return pb.Voice(
            voice_id=i.voice_id.rpartition(".")[2],
            display_name=i.display_name,
            transcript=i.transcript,
            reference_seconds=i.reference_seconds,
            prompt_frames=voice.prompt.num_frames,
            cached=cached,
            created_at=i.created_at,
            demo=i.demo,
        )

    def _check_text(self, text: str, what: str) -> None:
        if not text:
            raise StreamError(grpc.StatusCode.INVALID_ARGUMENT, f"{what} is empty")
        if len(text) > self.config.max_text_chars:
            raise StreamError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{what} has {len(text)} characters; the limit is {self.config.max_text_chars}",
            )

    def _settings(
        self,
        voice_id,
        rate,
        encoding,
        chunk_ms,
        sampling,
        language,
        schedule,
        first_overload_wait_s: float | None = None,
    ) -> SessionSettings:
        bad = grpc.StatusCode.INVALID_ARGUMENT
        if not voice_id:
            raise StreamError(bad, "voice_id is required")
        voice = self._find(voice_id)
        try:
            rate = check_rate(rate or self.config.default_sample_rate)
        except ValueError as exc:
            raise StreamError(bad, f"sample_rate_hz: {exc}") from None
        if encoding not in (pb.AUDIO_ENCODING_UNSPECIFIED, pb.PCM16, pb.FLOAT32):
            raise StreamError(bad, f"unknown audio encoding {encoding}")
        chunk_ms = chunk_ms or self.config.default_chunk_ms
        if not 20 <= chunk_ms <= 2000:
            raise StreamError(bad, f"chunk_ms {chunk_ms} is outside 20-2000")
        speaks = self.engine.language
        if language and language.split("-")[0].lower() != speaks:
            raise StreamError(bad, f"language {language!r} is not supported; this model speaks {speaks}")
        if any(not 1 <= n <= 1000 for n in schedule):
            raise StreamError(bad, "chunk_length_schedule entries must be 1-1000 characters")
        params = self.engine.default_sampling(
            seed=sampling.seed if sampling.HasField("seed") else random.getrandbits(62)
        )
        for name in ("temperature", "top_k", "top_p", "repetition_penalty", "voice_guidance"):
            if sampling.HasField(name):
                params = replace(params, **{name: getattr(sampling, name)})
        try:
            params.validate()
        except ValueError as exc:
            raise StreamError(bad, f"sampling: {exc}") from None
        if params.voice_guidance and not self.engine.guides_voice:
            raise StreamError(bad, "sampling: voice_guidance is not supported by this model; leave it unset or 0")
        frames = chunk_frames(self.engine, chunk_ms)
        return SessionSettings(
            voice,
            rate,
            encoding == pb.FLOAT32,
            frames,
            params,
            tuple(schedule),
            first_overload_wait_s=first_overload_wait_s,
        )

    async def _started(self, s: SessionSettings) -> pb.SessionStarted:
        cached = await asyncio.to_thread(self.engine.is_cached, s.voice.prompt)
        return pb.SessionStarted(
            session_id=f"{random.getrandbits(64):016x}",
            format=pb.AudioFormat(
                sample_rate_hz=s.sample_rate, encoding=pb.FLOAT32 if s.float32 else pb.PCM16, channels=1
            ),
            chunk_ms=round(s.chunk_frames * 1000 / self.engine.frame_rate),
            voice_cached=cached,
            timings_available=self.engine.has_timings,
            model=self.model_name,
        )


class _StatusInterceptor(grpc.aio.ServerInterceptor):
    """Turns whatever a handler raises into its status (service.errors), with a retry hint
    when given, and counts each RPC by method and status."""

    def __init__(self, metrics: Metrics, keys: Keys | None):
        self.metrics, self.keys = metrics, keys

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(f"/{SERVICE_NAME}/"):
            return handler
        parse = _lenient(handler.request_deserializer)
        call = _Call(handler_call_details.method.rsplit("/", 1)[-1], self.metrics, self.keys)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, call), parse, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream, call), parse, handler.response_serializer
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _streaming(handler.stream_stream, call, stream_in=True), parse, handler.response_serializer
            )
        return handler


class _Call:
    """What an RPC does around its handler: its key, its request id, and its end, counted
    in the metrics and logged as one line. Per-call state lives in the handler's frame and
    context variables, not here."""

    def __init__(self, method: str, metrics: Metrics, keys: Keys | None):
        self.method, self.metrics, self.keys = method, metrics, keys

    def authorize(self, context) -> None:
        """Check the caller's key (when the server has keys) and take its tenant."""
        key = self.keys.check(self.method, context.invocation_metadata()) if self.keys else None
        TENANT.set(key.tenant if key else "")

    def begin(self, context) -> tuple[tuple[str, str], ...]:
        """Take the caller's x-request-id (or make one), for the logs and the trailers."""
        given = dict(context.invocation_metadata() or ()).get("x-request-id", "")
        request_id = "".join(c for c in given if c.isprintable())[:64] or uuid.uuid4().hex[:16]
        REQUEST_ID.set(request_id)
        STARTED.set(time.perf_counter())
        trailers = (("x-request-id", request_id),)
        context.set_trailing_metadata(trailers)
        return trailers

    def end(self, code: grpc.StatusCode) -> None:
        self.metrics.rpcs.labels(self.method, code.name).inc()
        ms = round((time.perf_counter() - STARTED.get()) * 1000, 1)
        fields = {"event": "rpc", "request_id": REQUEST_ID.get(), "method": self.method, "code": code.name, "ms": ms}
        access.info("rpc", extra={"fields": fields})


class _Malformed:
    """A request message that did not parse. grpcio would answer UNKNOWN with the parser's
    exception; the handler answers INVALID_ARGUMENT instead."""

    def __init__(self, error: Exception):
        self.error = StreamError(grpc.StatusCode.INVALID_ARGUMENT, f"the request message does not parse: {error}")


def _lenient(deserialize):
    def parse(data: bytes):
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError, invalid UTF-8 in a string field, ...
            return _Malformed(exc)

    return parse


async def _checked(requests):
    async for request in requests:
        if isinstance(request, _Malformed):
            raise request.error
        yield request


def _unary(fn, call: _Call):
    async def handler(request, context):
        trailers = call.begin(context)
        try:
            call.authorize(context)
            if isinstance(request, _Malformed):
                raise request.error
            response = await fn(request, context)
        except Exception as exc:
            call.end(to_stream_error(exc).code)
            await abort(context, exc, trailers)
        call.end(grpc.StatusCode.OK)
        return response

    return handler


def _streaming(fn, call: _Call, stream_in: bool = False):
    async def handler(request, context):
        trailers = call.begin(context)
        try:
            call.authorize(context)
            if isinstance(request, _Malformed):
                raise request.error
            async for response in fn(_checked(request) if stream_in else request, context):
                yield response
        except asyncio.CancelledError:
            call.end(grpc.StatusCode.CANCELLED)  # the client went away
            raise
        except Exception as exc:
            call.end(to_stream_error(exc).code)
            await abort(context, exc, trailers)
        call.end(grpc.StatusCode.OK)

    return handler


def chunk_frames(engine: Engine, chunk_ms: float) -> int:
    """Whole frames of the model's codec in a chunk of `chunk_ms` (at least one)."""
    return max(1, round(chunk_ms * engine.frame_rate / 1000))


async def _warm_up(engine: Engine, voices: VoiceLibrary, config: ServiceConfig) -> WarmupReport | None:
    """The warm-up burst (engine.runtime.warmup), while health still says NOT_SERVING."""
    stored = voices.list()
    if not config.warmup_streams or not stored:
        return None
    voice, n = stored[0], config.warmup_streams
    chunk = chunk_frames(engine, config.default_chunk_ms)
    report = await asyncio.to_thread(warm_up, engine, voice.prompt, n, config.default_sample_rate, chunk)
    log.info(
        "warm-up: %d streams in voice %s, %.1f s of audio in %.1f s (%d failed)",
        report.streams,
        voice.info.voice_id,
        report.audio_seconds,
        report.seconds,
        report.failed,
    )
    return report


async def start_server(engine: Engine, config: ServiceConfig) -> tuple[grpc.aio.Server, int, NpcVoiceServicer]:
    """Build and start the server; returns it, the bound port and the servicer."""
    sys.setswitchinterval(config.switch_interval_ms / 1000)
    voices = VoiceLibrary(config.voice_store, engine, config.max_pending_registrations)
    if config.demo_voices:
        install_demo_voices(voices, engine.sample_rate, engine.model_dir)
    lexicon = Lexicon(
        config.lexicon_path, phonemes_supported=engine.tokenizer.reads_phonemes, check_every_s=config.lexicon_check_s
    )
    servicer = NpcVoiceServicer(engine, voices, lexicon, config)
    server = grpc.aio.server(
        interceptors=[_StatusInterceptor(servicer.metrics, config.keys)],
        options=[
            # 30 s reference WAVs up to 139 kHz 16-bit or 93 kHz 24-bit stereo (docs/protocol.md)
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.keepalive_time_ms", 20000),
            ("grpc.keepalive_timeout_ms", 10000),
            ("grpc.http2.max_pings_without_data", 0),
        ],
    )
    pb_grpc.add_NpcVoiceServicer_to_server(servicer, server)
    health_servicer = servicer.health = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # (the health servicer says SERVING until told otherwise)
    await servicer.set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    address = f"{config.host}:{config.port}"
    if config.tls:
        port = server.add_secure_port(address, config.tls.credentials())
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind {config.host}:{config.port}")
    await server.start()
    servicer.warmup = await _warm_up(engine, voices, config)
    if config.freeze_heap:
        log.info("start-up done: %d objects exempted from garbage collection", freeze_startup_heap())
    if config.metrics_port is not None:
        servicer.metrics_port = servicer.metrics.serve(config.host, config.metrics_port, lambda: not servicer.draining)
        log.info("metrics on http://%s:%d/metrics", config.host, servicer.metrics_port)
    await servicer.set_health(health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "listening on %s:%d (%s) with %d voices (%d broken)",
        config.host,
        port,
        ("mutual TLS" if config.tls.client_ca else "TLS") if config.tls else "plaintext",
        len(voices.list()),
        len(voices.broken),
    )
    return server, port, servicer

"""The gRPC service end to end: a real server on loopback, real engine, real audio bytes."""

from __future__ import annotations

import math
import queue
import threading
import time

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from engine.audio import speechlike_wave
from engine.models.speech_lm.toy import make_toy_model
from service.audio_input import encode_wav
from service.cli import parser as cli_parser
from service.config import ServiceConfig
from service.fragments import llm_tokens
from service.gen import npc_voice_pb2 as pb
from tests.support import SMALL, ServerThread, eventually, make_engine, wait_idle

LINE = "Over here! The bridge is out, so we take the ford at dawn."


def cfg(voice: str = "guard", **kw) -> pb.ConverseRequest:
    return pb.ConverseRequest(config=pb.SessionConfig(voice_id=voice, **kw))


def text(t: str, turn: str = "") -> pb.ConverseRequest:
    return pb.ConverseRequest(text=pb.TextFragment(text=t, turn_id=turn))


def kinds(responses) -> list[str]:
    return [r.WhichOneof("kind") for r in responses]


def status_of(call_fn) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call_fn()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            list(result)
    return info.value


class Session:
    """An interactive Converse call: send at will, read responses on a thread."""

    def __init__(self, stub, first: pb.ConverseRequest, **call_kw):
        self._out: queue.Queue = queue.Queue()
        self._out.put(first)
        self.responses: queue.Queue = queue.Queue()
        self.call = stub.Converse(iter(self._out.get, None), **call_kw)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        try:
            for resp in self.call:
                self.responses.put(resp)
        except grpc.RpcError as exc:
            self.responses.put(exc)
        self.responses.put(None)

    def send(self, *msgs) -> None:
        for m in msgs:
            self._out.put(m)

    def end(self) -> None:
        self._out.put(None)

    def next(self, timeout: float = 30.0):
        item = self.responses.get(timeout=timeout)
        if isinstance(item, Exception):
            raise item
        return item

    def until(self, kind: str, timeout: float = 60.0) -> list:
        seen = []
        while True:
            resp = self.next(timeout)
            assert resp is not None, f"stream ended before {kind}; saw {kinds(seen)}"
            seen.append(resp)
            if resp.WhichOneof("kind") == kind:
                return seen


def check_utterances(responses, rate: int, width: int) -> dict[int, int]:
    """Audio arrives in order per utterance with offsets that add up; returns samples per utterance."""
    sent: dict[int, int] = {}
    done: dict[int, pb.UtteranceDone] = {}
    order = []
    for r in responses:
        kind = r.WhichOneof("kind")
        if kind == "utterance_started":
            order.append(r.utterance_started.utterance_id)
        elif kind == "audio":
            a = r.audio
            assert a.utterance_id == order[-1], "audio of one utterance interleaved with another"
            assert len(a.audio) % width == 0
            assert a.sample_offset == sent.get(a.utterance_id, 0), "sample offsets must add up"
            sent[a.utterance_id] = a.sample_offset + len(a.audio) // width
        elif kind == "utterance_done":
            done[r.utterance_done.utterance_id] = r.utterance_done
    assert order and set(done) == set(order) == set(sent)
    for uid, d in done.items():
        assert abs(d.audio_seconds * rate - sent[uid]) < 1, "UtteranceDone.audio_seconds must match the samples sent"
        assert d.reason in (pb.END_OF_SPEECH, pb.LENGTH_LIMIT) and d.ttfa_ms >= 0 and d.real_time_factor > 0
    last = [r.audio for r in responses if r.WhichOneof("kind") == "audio" and r.audio.last_chunk]
    assert sorted(a.utterance_id for a in last) == sorted(order), "each utterance ends with one last_chunk"
    return sent


@pytest.mark.parametrize("rate,encoding,width", [(16000, pb.PCM16, 2), (48000, pb.FLOAT32, 4)])
def test_token_by_token_conversation_streams_ordered_audio(server, rate, encoding, width):
    reqs = [cfg(sample_rate_hz=rate, encoding=encoding, sampling=pb.SamplingConfig(seed=3))]
    reqs += [text(t) for t in llm_tokens(LINE)] + [pb.ConverseRequest(close=pb.Close())]
    responses = list(server.stub.Converse(iter(reqs)))
    started = responses[0].started
    assert kinds(responses)[0] == "started" and started.format.sample_rate_hz == rate
    assert started.format.encoding == encoding and started.format.channels == 1
    assert not started.timings_available and "mark" not in kinds(responses)  # this model gives none
    check_utterances(responses, rate, width)
    spoken = [r.utterance_started.text for r in responses if r.WhichOneof("kind") == "utterance_started"]
    assert spoken[0] == "Over here!" and " ".join(spoken) == LINE  # cut at the sentence end
    audio = b"".join(r.audio.audio for r in responses if r.WhichOneof("kind") == "audio")
    samples = np.frombuffer(audio, dtype="<i2" if width == 2 else "<f4").astype(np.float32)
    samples = samples / (32767 if width == 2 else 1)
    assert np.isfinite(samples).all() and 0.01 < np.abs(samples).max() <= 1.0


def test_same_seed_gives_the_same_audio_and_guidance_changes_it(server):
    def run(seed, **sampling):
        reqs = [
            cfg(sampling=pb.SamplingConfig(seed=seed, **sampling)),
            text("Halt, who goes there?"),
            pb.ConverseRequest(close=pb.Close()),
        ]
        responses = list(server.stub.Converse(iter(reqs)))
        fmt = responses[0].started.format
        assert fmt.sample_rate_hz == 48000 and fmt.encoding == pb.PCM16  # the session defaults
        check_utterances(responses, 48000, 2)
        return b"".join(r.audio.audio for r in responses if r.WhichOneof("kind") == "audio")

    first = run(11)
    seconds = len(first) / 2 / 48000
    assert 0.2 < seconds < 20, f"{seconds:.2f} s of audio for a four-word line"
    assert np.abs(np.frombuffer(first, "<i2")).max() > 300  # sound, not silence
    assert run(11) == first
    assert run(12) != first  # the seed is what made the two runs agree
    guided = run(11, voice_guidance=1.0)
    assert guided != first and run(11, voice_guidance=1.0) == guided


def test_flush_is_acknowledged_after_its_audio(server):
    s = Session(server.stub, cfg(sample_rate_hz=16000))
    s.send(text("Hold the line", "t1"), text(" until I say so", "t1"), pb.ConverseRequest(flush=pb.Flush(turn_id="t1")))
    seen = s.until("flush_done")
    ks = kinds(seen)
    assert seen[-1].flush_done.turn_id == "t1"
    assert "audio" in ks and ks.index("utterance_done") < ks.index("flush_done")
    assert [r.utterance_started.text for r in seen if r.WhichOneof("kind") == "utterance_started"] == [
        "Hold the line until I say so"
    ]
    s.send(pb.ConverseRequest(close=pb.Close()))
    s.end()
    assert s.next() is None  # nothing was buffered: the stream ends cleanly


def test_cancel_stops_the_turn_and_nothing_follows_its_ack(server):
    s = Session(server.stub, cfg(sample_rate_hz=16000, chunk_ms=40))
    long_turn = " ".join(["The bridge is out and the ford is deep, so we wait for dawn."] * 6)
    s.send(text(long_turn, "a"), pb.ConverseRequest(flush=pb.Flush(turn_id="a")))
    s.until("audio")
    s.send(pb.ConverseRequest(cancel=pb.Cancel(turn_id="a")))
    seen = s.until("cancel_done")
    assert seen[-1].cancel_done.turn_id == "a"
    s.send(text("Yes!", "b"), pb.ConverseRequest(flush=pb.Flush(turn_id="b")))
    after = s.until("flush_done")
    assert after[-1].flush_done.turn_id == "b"  # the cancelled turn's flush got no FlushDone
    for r in after:
        kind = r.WhichOneof("kind")
        if kind in ("audio", "mark", "utterance_started", "utterance_done"):
            assert getattr(r, kind).turn_id == "b", f"{kind} of the cancelled turn after CancelDone"
    s.send(pb.ConverseRequest(close=pb.Close()))
    s.end()
    assert s.next() is None
    stats = wait_idle(server.engine)
    assert stats.free_blocks + stats.pinned_blocks <= stats.num_blocks


@pytest.mark.parametrize("cancel", ["a", ""], ids=["named", "all"])
def test_a_cancelled_turn_stays_silent_while_the_llm_keeps_streaming_it(server, cancel):
    s = Session(server.stub, cfg(sample_rate_hz=8000))
    s.send(text("The bridge is out and the ford is deep, so we wait. ", "a"))
    s.until("audio")
    s.send(pb.ConverseRequest(cancel=pb.Cancel(turn_id=cancel)))  # "": cancel every turn
    assert s.until("cancel_done")[-1].cancel_done.turn_id == cancel
    # The LLM has not noticed the barge-in yet: more of turn "a", then its flush.
    s.send(
        text("We wait for dawn, and then we cross.", "a"),
        pb.ConverseRequest(flush=pb.Flush(turn_id="a")),
        text("Yes?", "b"),
        pb.ConverseRequest(flush=pb.Flush(turn_id="b")),
    )
    after = s.until("flush_done")
    assert after[-1].flush_done.turn_id == "a" and all(r.WhichOneof("kind") != "audio" for r in after)
    after = s.until("flush_done")
    assert after[-1].flush_done.turn_id == "b"
    assert {
        getattr(r, r.WhichOneof("kind")).turn_id
        for r in after
        if r.WhichOneof("kind") in ("audio", "utterance_started", "utterance_done")
    } == {"b"}
    s.send(pb.ConverseRequest(close=pb.Close()))
    s.end()
    assert s.next() is None


def test_unspeakable_pieces_are_skipped_and_the_conversation_goes_on(server):
    reqs = [
        cfg(sample_rate_hz=8000),
        text("🙂 "),
        pb.ConverseRequest(flush=pb.Flush()),
        text("Hello there."),
        pb.ConverseRequest(close=pb.Close()),
    ]
    responses = list(server.stub.Converse(iter(reqs)))
    ks = kinds(responses)
    assert "flush_done" in ks and [
        r.utterance_started.text for r in responses if r.WhichOneof("kind") == "utterance_started"
    ] == ["Hello there."]
    err = status_of(lambda: server.stub.Synthesize(pb.SynthesizeRequest(voice_id="guard", text="🙂🙂")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "nothing to speak" in err.details()


def test_close_speaks_what_is_buffered_then_ends(server):
    reqs = [cfg(), text("No boundary here"), text(" and no flush either"), pb.ConverseRequest(close=pb.Close())]
    responses = list(server.stub.Converse(iter(reqs)))
    assert [r.utterance_started.text for r in responses if r.WhichOneof("kind") == "utterance_started"] == [
        "No boundary here and no flush either"
    ]
    assert kinds(responses)[-1] == "utterance_done"


def test_second_session_of_a_voice_reports_the_cached_prefix(server):
    before = server.engine.stats()
    first = list(
        server.stub.Converse(iter([cfg("merchant"), text("Fine wares!"), pb.ConverseRequest(close=pb.Close())]))
    )
    mid = server.engine.stats()
    second = list(
        server.stub.Converse(iter([cfg("merchant"), text("Fair prices!"), pb.ConverseRequest(close=pb.Close())]))
    )
    after = server.engine.stats()
    assert second[0].started.voice_cached
    done = [r.utterance_done for r in second if r.WhichOneof("kind") == "utterance_done"]
    assert done and done[0].voice_cached
    prompt_frames = server.stub.GetVoice(pb.GetVoiceRequest(voice_id="merchant")).prompt_frames
    assert after.cached_frames - mid.cached_frames >= prompt_frames  # the whole voice prefix was reused
    assert after.prefix_hits > mid.prefix_hits >= before.prefix_hits
    assert first  # (the first session paid the prefill)


def test_synthesize_streams_a_bark(server):
    responses = list(
        server.stub.Synthesize(pb.SynthesizeRequest(voice_id="sprite", text="I need 10k gold!", sample_rate_hz=22050))
    )
    assert kinds(responses)[0] == "started" and kinds(responses)[-1] == "utterance_done"
    started = [r.utterance_started for r in responses if r.WhichOneof("kind") == "utterance_started"]
    assert started[0].text == "I need ten thousand gold!" and started[0].source_text == "I need 10k gold!"
    check_utterances(responses, 22050, 2)


@pytest.mark.parametrize(
    "first,code,fragment",
    [
        (cfg("nobody"), grpc.StatusCode.NOT_FOUND, "no voice"),
        (cfg(sample_rate_hz=96000), grpc.StatusCode.INVALID_ARGUMENT, "8000-48000"),
        (cfg(sample_rate_hz=4000), grpc.StatusCode.INVALID_ARGUMENT, "8000-48000"),
        (cfg(chunk_ms=5), grpc.StatusCode.INVALID_ARGUMENT, "chunk_ms"),
        (cfg(language="fr"), grpc.StatusCode.INVALID_ARGUMENT, "language"),
        (cfg(sampling=pb.SamplingConfig(top_p=0)), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
        (cfg(sampling=pb.SamplingConfig(temperature=float("nan"))), grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        (cfg(sampling=pb.SamplingConfig(temperature=float("inf"))), grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        (cfg(sampling=pb.SamplingConfig(temperature=1e-45)), grpc.StatusCode.INVALID_ARGUMENT, "temperature must be 0"),
        (cfg(sampling=pb.SamplingConfig(temperature=3e38)), grpc.StatusCode.INVALID_ARGUMENT, "[0.01, 10]"),
        (cfg(sampling=pb.SamplingConfig(repetition_penalty=1e-40)), grpc.StatusCode.INVALID_ARGUMENT, "[0.1, 10]"),
        (cfg(sampling=pb.SamplingConfig(top_p=-0.0)), grpc.StatusCode.INVALID_ARGUMENT, "top_p"),
        (cfg(sampling=pb.SamplingConfig(voice_guidance=6)), grpc.StatusCode.INVALID_ARGUMENT, "voice_guidance"),
        (
            cfg(sampling=pb.SamplingConfig(repetition_penalty=float("nan"))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "repetition_penalty must be a finite number",
        ),
        (cfg(voice=""), grpc.StatusCode.INVALID_ARGUMENT, "voice_id"),
        (text("hello"), grpc.StatusCode.INVALID_ARGUMENT, "first message must be a SessionConfig"),
    ],
)
def test_bad_session_config_gets_a_clear_status(server, first, code, fragment):
    err = status_of(lambda: server.stub.Converse(iter([first, text("Hi."), pb.ConverseRequest(close=pb.Close())])))
    assert err.code() == code and fragment in err.details()


@pytest.mark.parametrize(
    "bad,fragment",
    [
        (text(""), "empty"),
        (text("x" * 4001), "limit is 4000"),
        (cfg(), "only be the first"),
        (pb.ConverseRequest(), "empty ConverseRequest"),
        (text("hi", turn="t" * 129), "turn_id longer than 128"),
    ],
)
def test_bad_message_mid_stream_ends_only_that_stream(server, bad, fragment):
    healthy = Session(server.stub, cfg(sample_rate_hz=8000))
    healthy.send(text("Stay close to me, and keep your torch lit.", "h"))
    err = status_of(lambda: server.stub.Converse(iter([cfg(), text("Fine."), bad])))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.details()
    healthy.send(pb.ConverseRequest(close=pb.Close()))
    healthy.end()
    rest = []
    while (r := healthy.next()) is not None:
        rest.append(r)
    check_utterances(rest, 8000, 2)


def test_text_piling_up_faster_than_speech_is_refused(server):
    reqs = [cfg(sample_rate_hz=8000)] + [text("Onward, and onward again. " * 150) for _ in range(6)]
    err = status_of(lambda: server.stub.Converse(iter(reqs)))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "waiting to be spoken" in err.details()
    wait_idle(server.engine)


def test_synthesize_rejects_bad_requests(server):
    for req, code in [
        (pb.SynthesizeRequest(voice_id="guard", text=""), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.SynthesizeRequest(voice_id="guard", text="   "), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.SynthesizeRequest(voice_id="ghost", text="Hi"), grpc.StatusCode.NOT_FOUND),
        (pb.SynthesizeRequest(voice_id="guard", text="Hi", encoding=7), grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        assert status_of(lambda: server.stub.Synthesize(req)).code() == code


def test_disconnect_mid_utterance_frees_the_engine(server):
    s = Session(server.stub, cfg(sample_rate_hz=8000))
    s.send(text(" ".join(["Run to the gate and bar it behind you."] * 8)), pb.ConverseRequest(flush=pb.Flush()))
    s.until("audio")
    assert server.engine.stats().running >= 1
    s.call.cancel()  # the game quit mid-line
    stats = wait_idle(server.engine, timeout=5.0)
    assert stats.running == 0 and stats.waiting == 0


def test_slow_reader_pauses_generation(server):
    # A small HTTP/2 window on the client makes the transport push back quickly.
    options = [("grpc.http2.lookahead_bytes", 16384), ("grpc.http2.bdp_probe", 0)]
    with grpc.insecure_channel(server.address, options=options) as channel:
        from service.gen import npc_voice_pb2_grpc as pb_grpc

        stub = pb_grpc.NpcVoiceStub(channel)
        reqs = [
            cfg(sample_rate_hz=48000, encoding=pb.FLOAT32, sampling=pb.SamplingConfig(seed=1)),
            text(" ".join(["Keep walking, the night is long and the road is longer."] * 10)),
            pb.ConverseRequest(flush=pb.Flush()),
        ]
        before = server.engine.stats().decode_frames
        call = stub.Converse(iter(reqs))
        first = [next(call), next(call)]  # started, and the first utterance is under way
        assert kinds(first) == ["started", "utterance_started"]
        samples = []
        # Then stop reading. The pipeline (transport window, service queue, engine outbox)
        # fills in ~1-2 s on a busy machine; the ten sentences would take ~7 s unpaused.
        for _ in range(16):
            time.sleep(0.25)
            samples.append(server.engine.stats().decode_frames)
        assert samples[-1] == samples[-3], f"generation kept running for a reader that stopped: {samples}"
        # Reading again resumes generation, and the line is spoken to the end.
        rest = list(call)  # the request stream half-closed after its flush: the call ends when all is spoken
    assert kinds(rest)[-1] == "flush_done"
    sent = check_utterances(first[1:] + rest, 48000, 4)
    assert len(sent) == 10  # every sentence spoken, each to its UtteranceDone
    # Standing still was a pause, not the end: the counter stood short of what the whole line took.
    line = wait_idle(server.engine).decode_frames - before
    assert samples[-1] - before < line, f"the line was already generated while the reader slept: {samples}, {line}"


def test_voice_management_and_errors(server):
    stub = server.stub
    listed = {v.voice_id for v in stub.ListVoices(pb.ListVoicesRequest()).voices}
    assert {"guard", "merchant", "sprite"} <= listed
    wav = encode_wav(speechlike_wave(4.0, 16000, f0=190.0, floor=0.05), 16000)
    v = stub.RegisterVoice(
        pb.RegisterVoiceRequest(voice_id="bard", reference_wav=wav, transcript="A song for the road!")
    )
    assert v.voice_id == "bard" and abs(v.reference_seconds - 4.0) < 0.01 and v.prompt_frames > 0
    dup = status_of(
        lambda: stub.RegisterVoice(pb.RegisterVoiceRequest(voice_id="bard", reference_wav=wav, transcript="Again"))
    )
    assert dup.code() == grpc.StatusCode.ALREADY_EXISTS
    warm = stub.WarmVoice(pb.WarmVoiceRequest(voice_id="bard"))
    assert not warm.was_cached and stub.WarmVoice(pb.WarmVoiceRequest(voice_id="bard")).was_cached
    assert stub.GetVoice(pb.GetVoiceRequest(voice_id="bard")).cached
    stub.DeleteVoice(pb.DeleteVoiceRequest(voice_id="bard"))
    for call in (
        lambda: stub.GetVoice(pb.GetVoiceRequest(voice_id="bard")),
        lambda: stub.DeleteVoice(pb.DeleteVoiceRequest(voice_id="bard")),
        lambda: stub.WarmVoice(pb.WarmVoiceRequest(voice_id="bard")),
    ):
        assert status_of(call).code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "wav,transcript,fragment",
    [
        (b"RIFF....WAVEjunk", "Hello there.", "not a readable WAV"),
        (b"", "Hello there.", "empty"),
        (encode_wav(np.zeros(16000 * 5, np.float32), 16000), "Hello there.", "silent"),
        (
            encode_wav(0.3 * np.sin(np.arange(16000 * 5) * 0.1).astype(np.float32), 16000),
            "Hello there.",
            "constant level",
        ),
        (encode_wav(speechlike_wave(2.0, 16000, floor=0.05), 16000), "Hello there.", "3-30 s"),
        (encode_wav(speechlike_wave(31.0, 16000, floor=0.05), 16000), "Hello there.", "3-30 s"),
        (encode_wav(speechlike_wave(4.0, 16000, floor=0.05), 16000), "  ", "transcript is empty"),
    ],
)
def test_register_voice_rejects_unusable_references(server, wav, transcript, fragment):
    err = status_of(
        lambda: server.stub.RegisterVoice(
            pb.RegisterVoiceRequest(voice_id="bad", reference_wav=wav, transcript=transcript)
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.details()


def test_register_voice_rejects_bad_ids(server):
    wav = encode_wav(speechlike_wave(4.0, 16000, floor=0.05), 16000)
    for vid in ("", "Guard", "a b", "../etc", "x" * 65):
        err = status_of(
            lambda: server.stub.RegisterVoice(
                pb.RegisterVoiceRequest(voice_id=vid, reference_wav=wav, transcript="Hi there.")
            )
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "voice_id" in err.details()


def test_health_reflection_and_capabilities(server):
    health = health_pb2_grpc.HealthStub(server.channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest(service="npcvoice.v1.NpcVoice")).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    refl = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in resp.list_services_response.service}
    assert {"npcvoice.v1.NpcVoice", "grpc.health.v1.Health"} <= names
    caps = server.stub.GetCapabilities(pb.GetCapabilitiesRequest())
    assert caps.native_sample_rate_hz == 24000 and caps.max_sample_rate_hz == 48000 and not caps.timings_available
    assert (caps.min_reference_seconds, caps.max_reference_seconds) == (3.0, 30.0)  # this model sets no limit


def test_a_models_reference_limit_is_announced_and_checked_before_any_work(tmp_path):
    """The capabilities name the longest reference the model clones from, and RegisterVoice
    refuses a longer one up front with that limit in its message."""
    model = make_toy_model(tmp_path / "m", seed=0, **SMALL, max_reference_frames=100)  # 4 s at 25 frames/s
    with make_engine(model) as eng:
        srv = ServerThread(eng, tmp_path / "voices", demo_voices=False)
        try:
            assert srv.stub.GetCapabilities(pb.GetCapabilitiesRequest()).max_reference_seconds == 4.0
            ask = lambda seconds: srv.stub.RegisterVoice(
                pb.RegisterVoiceRequest(
                    voice_id="long",
                    reference_wav=encode_wav(speechlike_wave(seconds, 16000, floor=0.05), 16000),
                    transcript="Hello there.",
                )
            )
            err = status_of(lambda: ask(5.0))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "3-4 s" in err.details()
            assert ask(3.5).voice_id == "long"
        finally:
            srv.stop()


def close_then_admitted(srv: ServerThread, holder: Session) -> None:
    """`holder` closes its conversation and reads it to the end; a new one is then admitted and speaks."""
    holder.send(pb.ConverseRequest(close=pb.Close()))
    holder.end()
    while holder.next() is not None:
        pass
    ok = list(srv.stub.Converse(iter([cfg(), text("Now there is room."), pb.ConverseRequest(close=pb.Close())])))
    assert "audio" in kinds(ok)


def test_session_limit_gives_resource_exhausted_with_retry_hint(model_dir, tmp_path):
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path, max_sessions=1)
    try:
        holder = Session(srv.stub, cfg())
        holder.until("started")
        err = status_of(lambda: srv.stub.Converse(iter([cfg(), text("Hi.")])))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 1" in err.details()
        md = dict(err.trailing_metadata())
        assert int(md["retry-after-ms"]) > 0
        status = status_pb2.Status.FromString(md["grpc-status-details-bin"])
        info = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(info) and info.retry_delay.seconds + info.retry_delay.nanos > 0
        close_then_admitted(srv, holder)
    finally:
        srv.stop()
        eng.close()


def test_past_the_measured_headroom_new_streams_are_refused_and_admitted_again_once_it_returns(model_dir, tmp_path):
    """Admission by load, not count: once a listener's audio came within the kept margin of
    running dry, a new conversation is refused with RESOURCE_EXHAUSTED saying so and a retry hint
    of the window; once that moment has left the window, the same request is admitted."""
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path, min_slack_ms=50, headroom_window_s=1.0)
    try:
        holder = Session(srv.stub, cfg())
        holder.until("started")
        # What the sender records when a chunk it waited for left 10 ms before the listener
        # would have run dry (the clock that measures it: tests/test_admission.py).
        srv.servicer.headroom.record(0.010)
        err = status_of(lambda: list(srv.stub.Converse(iter([cfg(), text("Hi.")]))))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
        assert "at capacity" in err.details() and "within 10 ms of running dry" in err.details(), err.details()
        assert int(dict(err.trailing_metadata())["retry-after-ms"]) == 1000
        time.sleep(1.1)  # the thin moment leaves the window
        ok = list(srv.stub.Converse(iter([cfg(), text("Now there is room."), pb.ConverseRequest(close=pb.Close())])))
        assert "audio" in kinds(ok)
        # (with no stream open there is nothing to protect: admitted whatever the measure reads)
        srv.servicer.headroom.record(-1.0)
        close_then_admitted(srv, holder)
    finally:
        srv.stop()
        eng.close()


def test_a_listener_run_dry_again_lowers_the_session_limit_until_a_quiet_spell_raises_it(model_dir, tmp_path):
    """Two conversations open, and a thin moment on record from 4 s before (one alone changes
    nothing: tests/test_admission.py). The engine thread then stalls (as under a noisy
    neighbour) while one of them speaks, so its listener really runs dry: the limit on open
    streams falls to one. GetStats and /metrics say so, and a new conversation is refused with
    RESOURCE_EXHAUSTED saying why, even after the other closes. After `limit_raise_s` with no
    listener run dry, the limit is two again and the same request is admitted. The engine is
    paced (serve --pace-s), so a stream is never far enough ahead of its listener to outlast
    a 2 s stall."""
    eng = make_engine(model_dir, pace_lead_s=0.3)
    srv = ServerThread(eng, tmp_path, limit_raise_s=10.0)

    def limit() -> int:
        return srv.stub.GetStats(pb.GetStatsRequest()).session_limit

    try:
        speaker, other = Session(srv.stub, cfg()), Session(srv.stub, cfg())
        speaker.until("started")
        other.until("started")
        srv.servicer.limit.dry(2, now=time.monotonic() - 4.0)
        assert limit() == 64
        speaker.send(text(LINE, "t1"), pb.ConverseRequest(flush=pb.Flush(turn_id="t1")))
        speaker.until("audio")
        eng._post(lambda: time.sleep(2.0))  # the engine thread stops making audio for 2 s
        eventually(lambda: limit() == 1, timeout=5.0)
        assert srv.servicer.metrics.registry.get_sample_value("npc_voice_session_limit_cuts_total") == 1
        err = status_of(lambda: list(srv.stub.Converse(iter([cfg(), text("Hi.")]))))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
        assert "limit of 1 open streams (of 64, lowered after listeners ran dry again" in err.details(), err.details()
        other.send(pb.ConverseRequest(close=pb.Close()))
        other.end()
        while other.next() is not None:
            pass
        assert status_of(lambda: list(srv.stub.Converse(iter([cfg(), text("Hi.")])))).code() == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        eventually(lambda: limit() == 2, timeout=15.0)
        close_then_admitted(srv, speaker)
    finally:
        srv.stop()
        eng.close()


def test_streams_past_the_start_rate_are_refused_with_the_wait_and_admitted_after_it(model_dir, tmp_path):
    """Two starts at once, then one every two seconds: the third new stream in a row is refused
    with RESOURCE_EXHAUSTED naming the limits and a retry hint; after the hint, it is admitted.
    Malformed requests are refused for what they are and spend no start."""
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path, starts_per_s=0.5, start_burst=2)
    try:
        for _ in range(3):
            bad = status_of(lambda: list(srv.stub.Converse(iter([cfg("nobody"), text("Hi.")]))))
            assert bad.code() == grpc.StatusCode.NOT_FOUND, bad.details()
        first = Session(srv.stub, cfg())
        first.until("started")
        second = list(srv.stub.Synthesize(pb.SynthesizeRequest(voice_id="guard", text="Halt!")))
        assert any(r.WhichOneof("kind") == "audio" for r in second)
        err = status_of(lambda: list(srv.stub.Converse(iter([cfg(), text("Hi.")]))))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
        assert "2 at once and 0.5 a second" in err.details(), err.details()
        wait_ms = int(dict(err.trailing_metadata())["retry-after-ms"])
        assert 500 <= wait_ms <= 2000
        time.sleep(wait_ms / 1000)
        ok = list(srv.stub.Converse(iter([cfg(), text("Now there is room."), pb.ConverseRequest(close=pb.Close())])))
        assert "audio" in kinds(ok)
        first.send(pb.ConverseRequest(close=pb.Close()))
        first.end()
    finally:
        srv.stop()
        eng.close()


def test_a_start_within_the_hold_waits_for_its_turn_instead_of_being_refused(model_dir, tmp_path):
    """One start at once, then two a second, held up to 0.6 s: the second stream in a row is
    started half a second late (SessionStarted waits; its text, sent at once, is kept) and
    speaks; the third, a second away, is refused with the rest as its hint."""
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path, starts_per_s=2.0, start_burst=1, start_hold_s=0.6)
    try:
        first = Session(srv.stub, cfg())
        first.until("started")
        sent = time.monotonic()
        held = Session(srv.stub, cfg())
        held.send(text("The gate is shut.", "t1"), pb.ConverseRequest(flush=pb.Flush(turn_id="t1")))
        err = status_of(lambda: list(srv.stub.Converse(iter([cfg(), text("Hi.")]))))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
        assert 500 <= int(dict(err.trailing_metadata())["retry-after-ms"]) <= 1000
        held.until("started")
        assert time.monotonic() - sent >= 0.4  # it waited for its token
        assert "audio" in kinds(held.until("flush_done"))
        hold = srv.servicer.metrics.registry.get_sample_value("npc_voice_start_hold_seconds_sum")
        assert 0.4 <= hold <= 0.6
        for s in (first, held):
            s.send(pb.ConverseRequest(close=pb.Close()))
            s.end()
    finally:
        srv.stop()
        eng.close()


def test_a_start_cancelled_during_its_hold_gives_its_turn_back(model_dir, tmp_path):
    """One start at once, then two a second, held up to 0.6 s. A held stream whose client
    cancels gives its booked turn back: the next start is held in its place (~0.5 s) instead
    of being refused behind a stream that is gone (it would have waited ~1 s)."""
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path, starts_per_s=2.0, start_burst=1, start_hold_s=0.6)
    try:
        first = Session(srv.stub, cfg())
        first.until("started")
        held = Session(srv.stub, cfg())
        deadline = time.monotonic() + 5
        while not srv.servicer.metrics.registry.get_sample_value("npc_voice_start_hold_seconds_count"):
            assert time.monotonic() < deadline, "the second start was never held"
            time.sleep(0.01)
        held.call.cancel()
        time.sleep(0.1)  # the server sees the cancellation
        after = Session(srv.stub, cfg())
        after.until("started")  # held in the freed place, not refused
        for s in (first, after):
            s.send(pb.ConverseRequest(close=pb.Close()))
            s.end()
        held.end()
    finally:
        srv.stop()
        eng.close()


def test_a_served_conversation_feeds_the_headroom_measure_with_the_chunks_its_sender_waited_for(model_dir, tmp_path):
    """The toy model runs far ahead of real time, so every chunk the sender had to wait for
    still left with audio to spare: the measure is finite (something was recorded) and positive."""
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path)
    try:
        line = "Hold the gate until dawn, and do not open it for anyone who comes up the road. " * 3
        out = list(srv.stub.Converse(iter([cfg(), text(line), pb.ConverseRequest(close=pb.Close())])))
        assert kinds(out).count("audio") > 3
        assert 0 < srv.servicer.headroom.least() < math.inf
    finally:
        srv.stop()
        eng.close()


def test_busy_meter_rises_with_work_and_decays_while_idle():
    from engine.runtime.busy import BusyMeter

    meter = BusyMeter(tau_s=0.2)
    for _ in range(20):
        start = time.monotonic()
        while time.monotonic() - start < 0.02:
            pass
        meter.record(time.monotonic() - start)  # all of the time since the last record
    assert meter.read() > 0.8
    for _ in range(20):
        time.sleep(0.02)
        meter.record(0.0)
    assert meter.read() < 0.2
    meter.record(0.0)
    time.sleep(0.3)
    assert meter.read() < 0.2 * math.exp(-1)  # no record while waiting: read decays anyway


def test_registrations_beyond_the_queue_get_resource_exhausted(model_dir, tmp_path):
    import threading

    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path, max_pending_registrations=1, demo_voices=False)
    wav = encode_wav(speechlike_wave(4.0, 16000, f0=190.0, floor=0.05), 16000)
    ask = lambda vid: srv.stub.RegisterVoice(
        pb.RegisterVoiceRequest(
            voice_id=vid,
            reference_wav=wav,
            transcript="A song for the road!",
        )
    )
    busy = srv.servicer.voices._tokenising  # held here: the first registration waits in the queue
    busy.acquire()
    done = []
    first = threading.Thread(target=lambda: done.append(ask("bard")))
    try:
        first.start()
        while srv.servicer.voices._pending < 1:
            threading.Event().wait(0.01)
        err = status_of(lambda: ask("piper"))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "already in progress" in err.details()
        assert int(dict(err.trailing_metadata())["retry-after-ms"]) > 0
    finally:
        busy.release()
        first.join(60)
    try:
        assert done[0].voice_id == "bard" and ask("piper").voice_id == "piper"
    finally:
        srv.stop()
        eng.close()


def test_voices_survive_a_restart_and_corrupt_entries_are_reported(model_dir, tmp_path):
    wav = encode_wav(speechlike_wave(5.0, 22050, f0=150.0, floor=0.05), 22050)
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path)
    frames = srv.stub.RegisterVoice(
        pb.RegisterVoiceRequest(voice_id="keeper", reference_wav=wav, transcript="The keys stay with me.")
    ).prompt_frames
    srv.stop()
    (tmp_path / "mangled.voice").write_bytes(b"PK\x03\x04 this is not a voice")
    assert not list(tmp_path.glob(".tmp-*")), "a finished write leaves no temporary file"
    srv = ServerThread(eng, tmp_path)
    try:
        listing = srv.stub.ListVoices(pb.ListVoicesRequest())
        assert {v.voice_id: v.prompt_frames for v in listing.voices}["keeper"] == frames
        assert [b.voice_id for b in listing.broken] == ["mangled"] and listing.broken[0].error
        err = status_of(lambda: srv.stub.Converse(iter([cfg("mangled"), text("Hi.")])))
        assert err.code() == grpc.StatusCode.DATA_LOSS
        out = list(srv.stub.Converse(iter([cfg("keeper"), text("Still here."), pb.ConverseRequest(close=pb.Close())])))
        assert "audio" in kinds(out)
    finally:
        srv.stop()
        eng.close()


def test_word_and_phoneme_marks_from_a_model_with_timings(tmp_path):
    model = make_toy_model(tmp_path / "m", seed=1, advance=4, **SMALL)
    eng = make_engine(model)
    srv = ServerThread(eng, tmp_path / "voices")
    try:
        line = "Take the ford at dawn."
        responses = list(
            srv.stub.Synthesize(
                pb.SynthesizeRequest(voice_id="guard", text=line, sampling=pb.SamplingConfig(seed=5, temperature=2.0))
            )
        )
        assert responses[0].started.timings_available
        marks = [r.mark for r in responses if r.WhichOneof("kind") == "mark"]
        done = [r.utterance_done for r in responses if r.WhichOneof("kind") == "utterance_done"][0]
        words = [m for m in marks if m.kind == pb.WORD]
        phones = [m for m in marks if m.kind == pb.PHONEME]
        assert words and phones
        expected = ["Take", "the", "ford", "at", "dawn"]
        assert [w.text for w in words] == expected[: len(words)]  # in order, none skipped or repeated
        for m in marks:  # a character-level model: each phoneme unit is one character of the line
            assert line[m.char_start : m.char_end] == m.text
            assert 0 <= m.start_ms <= m.end_ms <= done.audio_seconds * 1000 + 1
        assert all(a.start_ms <= b.start_ms for a, b in zip(words, words[1:]))
        assert all(a.end_ms == b.start_ms for a, b in zip(phones, phones[1:]))
    finally:
        srv.stop()
        eng.close()


def test_pronunciation_dictionary_reloads_without_restart(model_dir, tmp_path):
    lexicon = tmp_path / "lexicon.json"
    lexicon.write_text('{"Gimli": "gim lee"}')
    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path / "voices", lexicon_path=lexicon, lexicon_check_s=0.0)

    def spoken(line):
        rs = srv.stub.Synthesize(pb.SynthesizeRequest(voice_id="guard", text=line, sampling=pb.SamplingConfig(seed=0)))
        return [r.utterance_started.text for r in rs if r.WhichOneof("kind") == "utterance_started"][0]

    try:
        assert spoken("Ask Gimli.") == "Ask gim lee."
        lexicon.write_text('{"gimli": "ghim-lie", "HP": "hit points"}')
        assert spoken("Ask GIMLI about 5 HP.") == "Ask ghim-lie about five hit points."
        lexicon.write_text("{not json")
        assert spoken("Ask Gimli.") == "Ask ghim-lie."  # a broken edit keeps the last good dictionary
    finally:
        srv.stop()
        eng.close()


@pytest.mark.parametrize(
    "method, kind, payload",
    [
        ("GetVoice", "unary", b"\xff\xff\xff\xff"),  # not a protobuf message at all
        ("GetVoice", "unary", b"\x0a\x02\xff\xfe"),  # voice_id (field 1) holding invalid UTF-8
        ("Synthesize", "stream_out", b"\x12\x03\xc3\x28\x41"),  # text (field 2), invalid UTF-8
        ("Converse", "stream", b"\x0a\x05\x0a\x03\xff\xfe\xfd"),  # a SessionConfig whose voice_id is not UTF-8
    ],
)
def test_a_request_that_does_not_parse_gets_invalid_argument(server, method, kind, payload):
    path, raw = f"/npcvoice.v1.NpcVoice/{method}", lambda b: b
    if kind == "unary":
        call = lambda: server.channel.unary_unary(path, raw, raw)(payload, timeout=10)
    elif kind == "stream_out":
        call = lambda: list(server.channel.unary_stream(path, raw, raw)(payload, timeout=10))
    else:
        call = lambda: list(server.channel.stream_stream(path, raw, raw)(iter([payload]), timeout=10))
    err = status_of(call)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not parse" in err.details()
    assert server.stub.GetCapabilities(pb.GetCapabilitiesRequest()).model  # the server is fine


def test_a_converse_stream_with_a_bad_message_mid_way_ends_with_invalid_argument(server):
    path, raw = "/npcvoice.v1.NpcVoice/Converse", lambda b: b
    good = [cfg().SerializeToString(), text("Hello there. ").SerializeToString()]
    call = lambda: list(server.channel.stream_stream(path, raw, raw)(iter(good + [b"\xff\xff"]), timeout=30))
    err = status_of(call)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not parse" in err.details()


def test_an_utterance_whose_event_loop_has_closed_stops_quietly():
    """A worker thread still draining when the server's loop closes must end, not raise."""
    import asyncio
    import threading

    from service.utterance import Utterance

    utt = Utterance("", 0, "Hi.", "Hi.")
    loop = asyncio.new_event_loop()
    utt._queue = loop.run_until_complete(asyncio.sleep(0, result=asyncio.Queue()))
    utt._slots = threading.Semaphore(2)
    loop.close()
    assert utt._put(loop, "an event") is False


def test_an_engine_fault_gives_internal_with_the_request_and_spares_the_next_call(server):
    """A bug inside the engine (injected into one forward pass) ends that call with INTERNAL
    naming the engine request; the server and the next call are unaffected."""
    req = pb.SynthesizeRequest(voice_id="guard", text="Hold the gate until dawn.")
    wait_idle(server.engine)  # (an earlier test's cancelled stream may still be stepping: it would take the fault)
    server.engine.inject_fault("step")
    err = status_of(lambda: list(server.stub.Synthesize(req)))
    assert err.code() == grpc.StatusCode.INTERNAL and "engine request" in err.details()
    assert kinds(list(server.stub.Synthesize(req)))[-1] == "utterance_done"
    wait_idle(server.engine)


def test_metrics_parse_and_move_with_a_conversation(model_dir, tmp_path):
    """/metrics over HTTP parses as Prometheus text, and its counters move with traffic."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path / "voices", metrics_port=0)
    try:

        def scrape() -> dict:
            url = f"http://127.0.0.1:{srv.servicer.metrics_port}/metrics"
            body = urllib.request.urlopen(url, timeout=10).read().decode()
            return {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body)
                for s in family.samples
            }

        before = scrape()
        assert before[("npc_voice_kv_blocks_total", ())] == eng.stats().num_blocks
        sent = [cfg(), text("Hold the gate until dawn. Nobody passes."), pb.ConverseRequest(close=pb.Close())]
        done = [r for r in srv.stub.Converse(iter(sent)) if r.WhichOneof("kind") == "utterance_done"]
        with pytest.raises(grpc.RpcError):
            srv.stub.GetVoice(pb.GetVoiceRequest(voice_id="nobody"))
        after = scrape()
        moved = lambda key: after.get(key, 0) - before.get(key, 0)
        assert moved(("npc_voice_utterances_total", (("reason", "eos"),))) + moved(
            ("npc_voice_utterances_total", (("reason", "length"),))
        ) == len(done)
        assert moved(("npc_voice_ttfa_seconds_count", ())) == len(done) >= 1
        assert moved(("npc_voice_chunk_lateness_seconds_count", ())) >= len(done)
        assert moved(("npc_voice_rpcs_total", (("code", "OK"), ("method", "Converse")))) == 1
        assert moved(("npc_voice_rpcs_total", (("code", "NOT_FOUND"), ("method", "GetVoice")))) == 1
        assert after[("npc_voice_open_streams", ())] == 0
        assert after[("npc_voice_voices_loaded", ())] == len(srv.servicer.voices.list()) == 3  # the demo voices
        assert after[("npc_voice_voice_store_down", ())] == 0
    finally:
        srv.stop()
        eng.close()


def test_the_grafana_dashboard_plots_only_metrics_the_server_exports(model_dir, tmp_path):
    import json
    import re
    import urllib.request
    from pathlib import Path

    from prometheus_client.parser import text_string_to_metric_families

    eng = make_engine(model_dir)
    srv = ServerThread(eng, tmp_path / "voices", metrics_port=0)
    try:
        list(srv.stub.Synthesize(pb.SynthesizeRequest(voice_id="guard", text="Halt!")))
        body = urllib.request.urlopen(f"http://127.0.0.1:{srv.servicer.metrics_port}/metrics", timeout=10).read()
        exported = {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    finally:
        srv.stop()
        eng.close()
    dashboard = json.loads((Path(__file__).parent.parent / "deploy" / "grafana-dashboard.json").read_text())
    used = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"npc_voice_\w+", t["expr"])}
    assert len(dashboard["panels"]) >= 8 and used and used <= exported, used - exported


def test_each_rpc_and_utterance_logs_one_json_line_with_the_request_id_and_no_text(server, caplog):
    import json
    import logging

    from service.logs import JsonFormatter

    line = "Hold the gate until dawn."
    with caplog.at_level(logging.INFO, logger="npc_voice.access"):
        responses = server.stub.Synthesize(
            pb.SynthesizeRequest(voice_id="guard", text=line), metadata=(("x-request-id", "game-42"),)
        )
        list(responses)
        trailers = dict(responses.trailing_metadata())
        with pytest.raises(grpc.RpcError) as missing:
            server.stub.GetVoice(pb.GetVoiceRequest(voice_id="nobody"))
    assert trailers["x-request-id"] == "game-42"
    made_up = dict(missing.value.trailing_metadata())["x-request-id"]
    assert len(made_up) == 16
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "npc_voice.access"]
    rpcs = [x for x in lines if x["event"] == "rpc"]
    assert [(x["method"], x["code"], x["request_id"]) for x in rpcs] == [
        ("Synthesize", "OK", "game-42"),
        ("GetVoice", "NOT_FOUND", made_up),
    ]
    utterances = [x for x in lines if x["event"] == "utterance"]
    assert utterances and all(x["request_id"] == "game-42" and x["chars"] > 0 for x in utterances)
    assert not any("gate" in json.dumps(x) for x in lines)  # text length only, never the words


def test_the_server_sets_the_interpreters_switch_interval(model_dir, tmp_path):
    """ServiceConfig.switch_interval_ms (serve --switch-interval-ms) is the process's thread switch
    interval once the server runs: how long the engine thread may wait for the interpreter lock."""
    import sys

    before = sys.getswitchinterval()
    with make_engine(model_dir) as eng:
        srv = ServerThread(eng, tmp_path / "voices", demo_voices=False, switch_interval_ms=0.7)
        try:
            assert sys.getswitchinterval() == pytest.approx(0.0007)
            args = cli_parser().parse_args(["serve", "--switch-interval-ms", "0.3"])
            assert args.switch_interval_ms == 0.3
            assert cli_parser().parse_args(["serve"]).switch_interval_ms == ServiceConfig().switch_interval_ms
            for bad in (0.0, -1.0, float("nan")):  # refused where the setting is made, with what to fix
                with pytest.raises(ValueError, match="switch_interval_ms .* must be above 0"):
                    ServiceConfig(switch_interval_ms=bad)
        finally:
            srv.stop()
            sys.setswitchinterval(before)

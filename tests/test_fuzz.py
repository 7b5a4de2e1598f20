"""Property-based fuzzing of every request message of every RPC, against a real server.

Generated with hypothesis: every field, with unicode of every category (RTL, control,
combining), floats including NaN, infinities and subnormals, integers up to the type's
limit, unknown enum values, Converse streams as random orders of config, text, flush,
cancel and close with random turn ids, and raw bytes: messages cut, flipped and holding
invalid UTF-8 or surrogates, which protobuf itself cannot build. The properties:
- only documented status codes come back (never INTERNAL or UNKNOWN);
- nothing is logged at ERROR on the server (no traceback);
- afterwards the server speaks a normal conversation, and its open streams, running and
  waiting utterances and free KV blocks are back at their idle values.
At least 2,000 cases in all; the same cases each run (derandomised, so CI is stable).
Set FUZZ_SEED to draw others.
"""

from __future__ import annotations

import logging
import os
import struct

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.audio import speechlike_wave
from engine.config import AdaptConfig, CacheConfig, EngineConfig, SchedulerConfig
from engine.runtime.engine import Engine
from service.audio_input import encode_wav
from service.gen import npc_voice_pb2 as pb
from tests.support import ServerThread, wait_idle

DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
MAX_RESPONSES = 25  # read this many, then hang up: a client that leaves early is part of the fuzz
SEED = os.environ.get("FUZZ_SEED")


def fuzz(n: int):
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=SEED is None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


class ErrorLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def fuzzed(model_dir, tmp_path_factory):
    cfg = EngineConfig(
        cache=CacheConfig(block_size=16, num_blocks=256),
        scheduler=SchedulerConfig(max_running=8),
        adapt=AdaptConfig(steps=0),  # registrations in milliseconds: the fuzz is about the protocol
        num_threads=1,
    )
    engine = Engine(model_dir, cfg)
    srv = ServerThread(engine, tmp_path_factory.mktemp("fuzz-voices"), max_sessions=16)
    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    srv.errors = errors
    srv.idle = wait_idle(engine)
    yield srv
    logging.getLogger().removeHandler(errors)
    srv.stop()
    engine.close()


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def drain(responses) -> None:
    """Read up to MAX_RESPONSES, then cancel the call."""
    for i, _ in enumerate(responses):
        if i + 1 >= MAX_RESPONSES:
            responses.cancel()
            return


def check(srv, code: grpc.StatusCode) -> None:
    assert code in DOCUMENTED or code == grpc.StatusCode.CANCELLED, code
    assert not srv.errors.records, [r.getMessage() for r in srv.errors.records]


# ---- strategies ----------------------------------------------------------------------
# Each field is mostly valid and sometimes anything: a request that fails on its first bad
# field never reaches the code behind it, so most cases must get past validation.
def mostly(valid: st.SearchStrategy, anything: st.SearchStrategy) -> st.SearchStrategy:
    # (hypothesis favours the simplest draw, 0, so 0 must mean valid)
    return st.integers(0, 3).flatmap(lambda n: anything if n == 3 else valid)


uint32 = st.integers(0, 2**32 - 1)
uint64 = st.integers(0, 2**64 - 1)
float32 = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)
unicode = st.text(st.characters(exclude_categories=["Cs"]), max_size=60)  # surrogates: see raw_messages
LINES = ["Halt! Who goes there?", "The bridge is out. Take the ford.", "I need 10k gold by 7:45!", "Run!"]
speech = mostly(st.sampled_from(LINES), st.just("") | unicode)
voice_ids = mostly(st.sampled_from(["guard", "merchant", "sprite"]), st.sampled_from(["nobody", "", "GUARD"]) | unicode)
rates = mostly(st.sampled_from([0, 8000, 16000, 22050, 48000]), st.sampled_from([7999, 48001]) | uint32)
encodings = mostly(st.integers(0, 2), st.integers(3, 2**31 - 1))  # unknown values of an open enum
chunk_ms = mostly(st.sampled_from([0, 20, 200, 2000]), st.sampled_from([19, 2001]) | uint32)
languages = mostly(st.sampled_from(["", "en"]), st.sampled_from(["EN", "en-US", "fr"]) | unicode)
turn_ids = mostly(st.sampled_from(["", "t1", "t2"]), st.just("x" * 129) | unicode)


@st.composite
def samplings(draw) -> pb.SamplingConfig | None:
    if draw(st.booleans()):
        return None
    fields = {
        "temperature": mostly(st.floats(0.0, 2.0), float32),
        "top_p": mostly(st.floats(0.05, 1.0), float32),
        "repetition_penalty": mostly(st.floats(0.5, 2.0), float32),
        "top_k": mostly(st.integers(0, 100), uint32),
        "seed": uint64,
    }
    return pb.SamplingConfig(**{k: draw(v) for k, v in fields.items() if draw(st.booleans())})


def session_configs() -> st.SearchStrategy[pb.SessionConfig]:
    return st.builds(
        pb.SessionConfig,
        voice_id=voice_ids,
        sample_rate_hz=rates,
        encoding=encodings,
        chunk_ms=chunk_ms,
        sampling=samplings(),
        language=languages,
        chunk_length_schedule=mostly(st.lists(st.integers(50, 2000), max_size=3), st.lists(uint32, max_size=4)),
    )


converse_messages = st.one_of(
    st.builds(pb.ConverseRequest, config=session_configs()),
    st.builds(pb.ConverseRequest, text=st.builds(pb.TextFragment, text=speech, turn_id=turn_ids)),
    st.builds(pb.ConverseRequest, flush=st.builds(pb.Flush, turn_id=turn_ids)),
    st.builds(pb.ConverseRequest, cancel=st.builds(pb.Cancel, turn_id=turn_ids)),
    st.builds(pb.ConverseRequest, close=st.just(pb.Close())),
    st.just(pb.ConverseRequest()),
)
GOOD_WAV = encode_wav(speechlike_wave(3.5, 16000, f0=150.0, floor=0.05), 16000)
wavs = mostly(st.just(GOOD_WAV), st.sampled_from([GOOD_WAV[:44], GOOD_WAV[: len(GOOD_WAV) // 3], b""]) | st.binary())


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field, written by hand so it may hold anything."""
    length, out = len(payload), bytearray()
    while True:
        out.append((length & 0x7F) | (0x80 if length > 0x7F else 0))
        length >>= 7
        if not length:
            break
    return bytes([number << 3 | 2]) + bytes(out) + payload


@st.composite
def raw_messages(draw) -> bytes:
    kind = draw(st.sampled_from(["surrogate", "bad_utf8", "cut", "flip", "noise", "bad_float"]))
    if kind == "surrogate":  # a lone surrogate, UTF-8-encoded as some clients would
        return field(2, draw(unicode).encode() + "\ud800".encode("utf-8", "surrogatepass"))
    if kind == "bad_utf8":
        return field(2, b"Hi \xc3\x28 there")
    if kind == "noise":
        return draw(st.binary(max_size=64))
    if kind == "bad_float":  # SynthesizeRequest.sampling (6) with temperature (1) as raw float bits
        return field(1, b"guard") + field(2, b"Hi.") + field(6, b"\x0d" + struct.pack("<I", draw(uint32)))
    good = pb.SynthesizeRequest(voice_id="guard", text=draw(speech), sampling=draw(samplings())).SerializeToString()
    if kind == "cut":
        return good[: draw(st.integers(0, len(good)))]
    i = draw(st.integers(0, max(len(good) - 1, 0)))
    return good[:i] + bytes([draw(st.integers(0, 255))]) + good[i + 1 :]


# ---- the fuzz ------------------------------------------------------------------------
@fuzz(450)
@given(
    req=st.builds(
        pb.SynthesizeRequest,
        voice_id=voice_ids,
        text=speech,
        sample_rate_hz=rates,
        encoding=encodings,
        chunk_ms=chunk_ms,
        sampling=samplings(),
        language=languages,
    )
)
def test_synthesize(fuzzed, req):
    check(fuzzed, code_of(lambda: drain(fuzzed.stub.Synthesize(req, timeout=30))))


@fuzz(600)
@given(
    messages=st.lists(converse_messages, max_size=8),
    config_first=mostly(st.just(True), st.just(False)),
    config=session_configs(),
)
def test_converse(fuzzed, messages, config_first, config):
    sent = ([pb.ConverseRequest(config=config)] if config_first else []) + messages
    check(fuzzed, code_of(lambda: drain(fuzzed.stub.Converse(iter(sent), timeout=30))))


@fuzz(250)
@given(
    req=st.builds(
        pb.RegisterVoiceRequest,
        voice_id=mostly(st.sampled_from(["fuzz-a", "fuzz-b", "guard"]), voice_ids),
        display_name=unicode,
        reference_wav=wavs,
        transcript=mostly(st.just("The gate is shut until dawn."), st.just("") | unicode),
        language=languages,
        overwrite=st.booleans(),
    )
)
def test_register_voice(fuzzed, req):
    check(fuzzed, code_of(lambda: fuzzed.stub.RegisterVoice(req, timeout=30)))


@fuzz(400)
@given(method=st.sampled_from(["GetVoice", "WarmVoice", "DeleteVoice"]), voice_id=voice_ids)
def test_voice_calls(fuzzed, method, voice_id):
    if method == "DeleteVoice" and voice_id in ("guard", "merchant", "sprite"):
        voice_id = "fuzz-a"  # keep the demo voices for the other cases
    request = getattr(pb, f"{method}Request")(voice_id=voice_id)
    check(fuzzed, code_of(lambda: getattr(fuzzed.stub, method)(request, timeout=30)))


@fuzz(300)
@given(payload=raw_messages(), method=st.sampled_from(["Synthesize", "GetVoice", "RegisterVoice", "Converse"]))
def test_raw_bytes(fuzzed, payload, method):
    path, raw = f"/npcvoice.v1.NpcVoice/{method}", lambda b: b
    if method == "Synthesize":
        call = lambda: drain(fuzzed.channel.unary_stream(path, raw, raw)(payload, timeout=30))
    elif method == "Converse":
        call = lambda: drain(fuzzed.channel.stream_stream(path, raw, raw)(iter([payload]), timeout=30))
    else:
        call = lambda: fuzzed.channel.unary_unary(path, raw, raw)(payload, timeout=30)
    check(fuzzed, code_of(call))


@fuzz(50)
@given(method=st.sampled_from(["ListVoices", "GetCapabilities", "GetStats"]), noise=st.binary(max_size=16))
def test_queries(fuzzed, method, noise):
    # Unknown fields are skipped by protobuf: these answer OK, or refuse bytes that do not parse.
    path, raw = f"/npcvoice.v1.NpcVoice/{method}", lambda b: b
    check(fuzzed, code_of(lambda: fuzzed.channel.unary_unary(path, raw, raw)(noise, timeout=30)))


def test_after_the_fuzz_the_server_is_idle_and_speaks(fuzzed):
    """Runs last in this module: every stream the fuzz opened is gone, and it still works."""
    stats = wait_idle(fuzzed.engine, timeout=30)
    served = fuzzed.stub.GetStats(pb.GetStatsRequest())
    assert served.open_streams == 0 and served.running == 0 and served.waiting == 0
    for voice in fuzzed.servicer.voices.list():  # WarmVoice pinned some: pins hold blocks by design
        fuzzed.engine.unpin_voice(voice.prompt)
    assert wait_idle(fuzzed.engine).free_blocks == fuzzed.idle.free_blocks, stats
    cfg = pb.SessionConfig(voice_id="guard", sample_rate_hz=16000)
    sent = [
        pb.ConverseRequest(config=cfg),
        pb.ConverseRequest(text=pb.TextFragment(text="Halt! Who goes there?")),
        pb.ConverseRequest(close=pb.Close()),
    ]
    kinds = [r.WhichOneof("kind") for r in fuzzed.stub.Converse(iter(sent), timeout=60)]
    assert kinds[0] == "started" and "audio" in kinds and kinds[-1] == "utterance_done"
    assert not fuzzed.errors.records

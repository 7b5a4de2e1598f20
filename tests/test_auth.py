"""API keys on a real server: roles, tenants, reloads, and what the errors reveal."""

from __future__ import annotations

import json
import os
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine.audio import speechlike_wave
from service.audio_input import encode_wav
from service.auth import ROLES, Keys, add_key
from service.gen import npc_voice_pb2 as pb
from tests.support import ServerThread, make_engine

WAV = encode_wav(speechlike_wave(3.5, 16000, f0=140.0, floor=0.05), 16000)


@pytest.fixture(scope="module")
def keyed(model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("auth")
    path = d / "keys.json"
    tokens = {
        "speak": add_key(path, "speaker", ["speak"]),
        "voices": add_key(path, "voice-admin", ["voices"]),
        "admin": add_key(path, "ops", ["admin"]),
        "a": add_key(path, "game-a", ["speak", "voices"], tenant="game-a"),
        "b": add_key(path, "game-b", ["speak", "voices"], tenant="game-b"),
    }
    eng = make_engine(model_dir)
    srv = ServerThread(eng, d / "voices", keys=Keys(path, check_every_s=0.0))
    srv.tokens, srv.keys_path = tokens, path
    yield srv
    srv.stop()
    eng.close()


def as_key(token: str | None) -> tuple:
    return (("authorization", f"Bearer {token}"),) if token else ()


def status(call) -> grpc.StatusCode:
    try:
        out = call()
        if hasattr(out, "__iter__") and not isinstance(out, (bytes, str)):
            list(out)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def every_call(stub, md, voice_id: str = "guard") -> dict:
    """One call of each service method with metadata `md`."""
    talk = [
        pb.ConverseRequest(config=pb.SessionConfig(voice_id=voice_id, sample_rate_hz=16000)),
        pb.ConverseRequest(text=pb.TextFragment(text="Halt!")),
        pb.ConverseRequest(close=pb.Close()),
    ]
    return {
        "Converse": lambda: stub.Converse(iter(talk), metadata=md),
        "Synthesize": lambda: stub.Synthesize(pb.SynthesizeRequest(voice_id=voice_id, text="Halt!"), metadata=md),
        "GetVoice": lambda: stub.GetVoice(pb.GetVoiceRequest(voice_id=voice_id), metadata=md),
        "ListVoices": lambda: stub.ListVoices(pb.ListVoicesRequest(), metadata=md),
        "WarmVoice": lambda: stub.WarmVoice(pb.WarmVoiceRequest(voice_id=voice_id), metadata=md),
        "RegisterVoice": lambda: stub.RegisterVoice(
            pb.RegisterVoiceRequest(voice_id="scratch", reference_wav=WAV, transcript="A voice.", overwrite=True),
            metadata=md,
        ),
        "DeleteVoice": lambda: stub.DeleteVoice(pb.DeleteVoiceRequest(voice_id="scratch"), metadata=md),
        "GetStats": lambda: stub.GetStats(pb.GetStatsRequest(), metadata=md),
        "GetCapabilities": lambda: stub.GetCapabilities(pb.GetCapabilitiesRequest(), metadata=md),
    }


def test_a_missing_or_wrong_key_is_unauthenticated_and_health_stays_open(keyed):
    for md in [(), as_key("npv_not-a-key"), (("authorization", "Basic abc"),)]:
        for method, call in every_call(keyed.stub, md).items():
            assert status(call) == grpc.StatusCode.UNAUTHENTICATED, (method, md)
    health = health_pb2_grpc.HealthStub(keyed.channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_role_is_allowed_exactly_its_methods(keyed, role):
    for method, call in every_call(keyed.stub, as_key(keyed.tokens[role])).items():
        code = status(call)
        if method in ROLES[role] or method == "GetCapabilities":
            assert code not in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), (method, code)
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (method, code)


def test_tenants_cannot_see_warm_use_or_delete_each_others_voices(keyed):
    a, b, stub = as_key(keyed.tokens["a"]), as_key(keyed.tokens["b"]), keyed.stub
    stub.RegisterVoice(pb.RegisterVoiceRequest(voice_id="bard", reference_wav=WAV, transcript="A song."), metadata=a)
    mine = stub.GetVoice(pb.GetVoiceRequest(voice_id="bard"), metadata=a)
    assert mine.voice_id == "bard"
    for method in ("GetVoice", "WarmVoice", "Synthesize", "Converse", "DeleteVoice"):
        call = every_call(stub, b, voice_id="bard")[method]
        if method == "DeleteVoice":
            call = lambda: stub.DeleteVoice(pb.DeleteVoiceRequest(voice_id="bard"), metadata=b)
        assert status(call) == grpc.StatusCode.NOT_FOUND, method
    listed_b = {v.voice_id for v in stub.ListVoices(pb.ListVoicesRequest(), metadata=b).voices}
    listed_a = {v.voice_id for v in stub.ListVoices(pb.ListVoicesRequest(), metadata=a).voices}
    assert "bard" in listed_a and "bard" not in listed_b and "guard" in listed_b  # the shared demo voices
    shared_key = as_key(keyed.tokens["speak"])  # a key with no tenant sees the shared voices only
    assert "bard" not in {v.voice_id for v in stub.ListVoices(pb.ListVoicesRequest(), metadata=shared_key).voices}
    # B may have its own "bard"; A's is untouched by it, and A deleting its own leaves B's.
    stub.RegisterVoice(pb.RegisterVoiceRequest(voice_id="bard", reference_wav=WAV, transcript="Mine."), metadata=b)
    assert stub.GetVoice(pb.GetVoiceRequest(voice_id="bard"), metadata=a).transcript == "A song."
    stub.DeleteVoice(pb.DeleteVoiceRequest(voice_id="bard"), metadata=a)
    assert stub.GetVoice(pb.GetVoiceRequest(voice_id="bard"), metadata=b).transcript == "Mine."
    # A tenant cannot delete a shared voice; it can only make its own of the same name.
    assert status(lambda: stub.DeleteVoice(pb.DeleteVoiceRequest(voice_id="guard"), metadata=a)) == (
        grpc.StatusCode.NOT_FOUND
    )


def test_keys_are_stored_as_hashes_and_a_changed_file_is_reloaded(keyed):
    text = keyed.keys_path.read_text()
    assert all(token not in text for token in keyed.tokens.values())
    assert oct(os.stat(keyed.keys_path).st_mode & 0o777) == "0o600"
    late = add_key(keyed.keys_path, "late", ["admin"])
    deadline = time.monotonic() + 10
    while status(lambda: keyed.stub.GetStats(pb.GetStatsRequest(), metadata=as_key(late))) != grpc.StatusCode.OK:
        assert time.monotonic() < deadline, "the new key was never picked up"
        time.sleep(0.05)
    doc = json.loads(keyed.keys_path.read_text())
    doc["keys"] = [k for k in doc["keys"] if k["name"] != "late"]
    keyed.keys_path.write_text(json.dumps(doc))
    os.utime(keyed.keys_path, (time.time() + 5, time.time() + 5))  # a new mtime even within one tick
    deadline = time.monotonic() + 10
    while status(lambda: keyed.stub.GetStats(pb.GetStatsRequest(), metadata=as_key(late))) == grpc.StatusCode.OK:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.05)


def test_bad_keys_files_are_refused_with_a_reason(tmp_path):
    bad = tmp_path / "keys.json"
    bad.write_text(json.dumps({"keys": [{"name": "x", "sha256": "abc", "roles": ["speak"]}]}))
    with pytest.raises(ValueError, match="64 hex digits"):
        Keys(bad)
    with pytest.raises(ValueError, match="roles must be some of"):
        add_key(tmp_path / "other.json", "x", ["root"])

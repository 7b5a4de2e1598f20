"""The shared voice store: voice libraries of several replicas on one real redis-server.

Each library here stands for one replica (its own engine where the model differs). What
one registers, overwrites or deletes, the others see within the sync interval; a
conflicting registration fails everywhere; a model that lacks a voice's prompt makes it
once for every replica of that model; and the store going down keeps loaded voices
speaking while changes fail with StoreUnavailable."""

from __future__ import annotations

import pytest

from engine.audio import speechlike_wave
from loadtest.cluster import RedisProcess, have_cluster_tools
from service.audio_input import encode_wav
from service.voice_store import RedisStore, StoreUnavailable
from service.voices import VoiceExists, VoiceLibrary, VoiceNotFound
from tests.support import eventually, make_engine

pytestmark = pytest.mark.skipif(have_cluster_tools() is not None, reason=str(have_cluster_tools()))

WAV = encode_wav(speechlike_wave(3.0, 16000, f0=150.0, floor=0.05), 16000)
OTHER_WAV = encode_wav(speechlike_wave(3.5, 16000, f0=210.0, floor=0.05), 16000)


def has(lib: VoiceLibrary, voice_id: str, transcript: str | None = None) -> bool:
    try:
        voice = lib.get(voice_id)
    except VoiceNotFound:
        return False
    return transcript is None or voice.info.transcript == transcript


@pytest.fixture
def redis_server():
    with RedisProcess() as server:
        yield server


@pytest.fixture
def libraries(redis_server, engine):
    libs = [VoiceLibrary(redis_server.url, engine, sync_every_s=0.1) for _ in range(2)]
    yield libs
    for lib in libs:
        lib.close()


def test_register_overwrite_and_delete_reach_every_replica(libraries):
    a, b = libraries
    a.register("smith", WAV, "Steel needs patience.")
    eventually(lambda: has(b, "smith", "Steel needs patience."))
    made_by_a = a.get("smith").prompt
    assert b.get("smith").prompt.to_bytes() == made_by_a.to_bytes()  # read, not made again

    b.register("smith", OTHER_WAV, "Iron needs fire.", overwrite=True)
    eventually(lambda: has(a, "smith", "Iron needs fire."))
    assert a.get("smith").prompt.num_frames == b.get("smith").prompt.num_frames

    a.delete("smith")
    eventually(lambda: not has(b, "smith"))
    with pytest.raises(VoiceNotFound):
        b.delete("smith")


def test_a_taken_id_is_refused_even_before_the_replica_has_synced(redis_server, engine):
    a = VoiceLibrary(redis_server.url, engine, sync_every_s=60)  # never syncs during the test
    b = VoiceLibrary(redis_server.url, engine, sync_every_s=60)
    try:
        a.register("guard", WAV, "Halt.")
        with pytest.raises(VoiceExists):
            b.register("guard", OTHER_WAV, "Who goes there?")
        assert not has(b, "guard")
        b.sync()
        assert has(b, "guard", "Halt.")
    finally:
        a.close()
        b.close()


def test_a_replica_of_another_model_tokenises_once_for_all_of_its_kind(redis_server, model_dir, caplog):
    plain = make_engine(model_dir)
    other = [make_engine(model_dir) for _ in range(2)]
    for eng in other:  # a different codec or front end makes a different prompt key
        original = eng.voice_key
        eng.voice_key = lambda voice_id, original=original: b"other-model|" + original(voice_id)
    libs = []
    try:
        libs.append(VoiceLibrary(redis_server.url, plain, sync_every_s=60))
        libs[0].register("bard", WAV, "A song for the road.")
        with caplog.at_level("INFO", logger="service.voices"):
            libs.append(VoiceLibrary(redis_server.url, other[0], sync_every_s=60))
            first = [r for r in caplog.records if "tokenising it for this one" in r.getMessage()]
            caplog.clear()
            libs.append(VoiceLibrary(redis_server.url, other[1], sync_every_s=60))
            second = [r for r in caplog.records if "tokenising it for this one" in r.getMessage()]
        assert len(first) == 1 and second == []  # the second replica of that model read the first's prompt
        assert libs[2].get("bard").prompt.key.startswith(b"other-model|")
        assert libs[2].get("bard").prompt.to_bytes() == libs[1].get("bard").prompt.to_bytes()
        store = RedisStore(redis_server.url)
        assert store.client.hlen("npc-voice:prompts:bard") == 3  # its version and two models' prompts
    finally:
        for lib in libs:
            lib.close()
        for eng in [plain, *other]:
            eng.close()


def test_the_store_going_down_keeps_loaded_voices_and_refuses_changes(redis_server, libraries):
    a, b = libraries
    a.register("scout", WAV, "Tracks lead east.")
    eventually(lambda: has(b, "scout"))
    redis_server.kill()
    eventually(lambda: b.store_down)
    assert has(a, "scout") and has(b, "scout")  # loaded voices keep speaking
    with pytest.raises(StoreUnavailable):
        a.register("ranger", OTHER_WAV, "The forest is quiet.")
    with pytest.raises(StoreUnavailable):
        a.delete("scout")
    assert has(a, "scout") and not has(a, "ranger")  # a failed change changed nothing here either

    redis_server.start()  # same port and data folder: the store comes back as it was
    eventually(lambda: not b.store_down)
    a.register("ranger", OTHER_WAV, "The forest is quiet.")
    eventually(lambda: has(b, "ranger") and has(b, "scout"))


def test_a_library_starts_while_the_store_is_down_and_loads_its_voices_when_it_answers(redis_server, engine):
    first = VoiceLibrary(redis_server.url, engine)
    first.register("sage", WAV, "Patience.")
    first.close()
    redis_server.kill()
    late = VoiceLibrary(redis_server.url, engine, sync_every_s=0.1)
    try:
        assert late.store_down and late.list() == []
        redis_server.start()
        eventually(lambda: has(late, "sage", "Patience."))
    finally:
        late.close()

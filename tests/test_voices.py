"""Reference audio checks and the on-disk voice library (real files, real engine)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from engine.audio import speechlike_wave
from service.audio_input import check_speech, decode_wav, encode_wav
from service.voices import VoiceExists, VoiceLibrary, VoiceNotFound

SPEECH = speechlike_wave(4.0, 44100, f0=170.0, floor=0.05)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
@pytest.mark.parametrize("channels", [1, 2])
def test_common_wav_formats_decode_to_the_same_mono_signal(subtype, channels):
    buf = io.BytesIO()
    data = np.stack([SPEECH] * channels, axis=1) if channels == 2 else SPEECH
    soundfile.write(buf, data, 44100, subtype=subtype, format="WAV")
    ref = decode_wav(buf.getvalue())
    assert ref.sample_rate == 44100 and ref.samples.dtype == np.float32 and ref.samples.ndim == 1
    tolerance = 1e-2 if subtype == "PCM_U8" else 1e-4
    assert np.abs(ref.samples - SPEECH).max() < tolerance
    check_speech(ref)


def test_non_wav_and_bad_rates_are_refused():
    buf = io.BytesIO()
    soundfile.write(buf, SPEECH, 44100, format="FLAC")
    with pytest.raises(ValueError, match="must be a WAV"):
        decode_wav(buf.getvalue())
    with pytest.raises(ValueError, match="sample rate"):
        decode_wav(encode_wav(SPEECH[:8000], 4000))


def test_noise_is_not_speech():
    noise = np.random.default_rng(0).normal(0, 0.2, 16000 * 5).astype(np.float32)
    with pytest.raises(ValueError, match="noise"):
        check_speech(decode_wav(encode_wav(noise, 16000)))


def test_library_survives_a_crash_mid_write(engine, tmp_path, monkeypatch):
    lib = VoiceLibrary(tmp_path, engine)
    wav = encode_wav(SPEECH, 44100)
    lib.register("scout", wav, "Tracks lead east.")
    before = (tmp_path / "scout.voice").read_bytes()

    def crash(*a, **k):
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        lib.register("scout", wav, "A different line.", overwrite=True)
    monkeypatch.undo()
    assert (tmp_path / "scout.voice").read_bytes() == before and not list(tmp_path.glob(".tmp-*"))
    assert VoiceLibrary(tmp_path, engine).get("scout").info.transcript == "Tracks lead east."
    with pytest.raises(VoiceExists):
        lib.register("scout", wav, "Again.")
    lib.delete("scout")
    with pytest.raises(VoiceNotFound):
        lib.get("scout")
    assert not (tmp_path / "scout.voice").exists()


def test_leftover_partial_writes_are_cleared_not_listed(engine, tmp_path):
    lib = VoiceLibrary(tmp_path, engine)
    lib.register("scout", encode_wav(SPEECH, 44100), "Tracks lead east.")
    (tmp_path / ".tmp-abc123.partial").write_bytes(b"half a voice")
    again = VoiceLibrary(tmp_path, engine)
    assert [v.info.voice_id for v in again.list()] == ["scout"] and not again.broken
    assert not list(tmp_path.glob(".tmp-*"))


def test_prompt_made_for_another_front_end_is_remade(engine, tmp_path):
    lib = VoiceLibrary(tmp_path, engine)
    made = lib.register("scout", encode_wav(SPEECH, 44100), "Tracks lead east.")
    original_key = engine.voice_key
    engine.voice_key = lambda voice_id: b"other-codec|" + original_key(voice_id)
    try:
        again = VoiceLibrary(tmp_path, engine).get("scout")
    finally:
        del engine.voice_key
    assert again.prompt.key.startswith(b"other-codec|") and again.prompt.num_frames == made.prompt.num_frames


def test_generated_grpc_code_matches_the_proto():
    done = subprocess.run([sys.executable, "-m", "service.protogen", "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_demo_voices_come_from_the_model_directory_when_it_has_them(engine, tmp_path):
    import json

    from service.demo_voices import install_demo_voices

    demo = tmp_path / "model" / "demo_voices"
    demo.mkdir(parents=True)
    (demo / "knight.wav").write_bytes(encode_wav(SPEECH, 44100))
    (demo / "demo_voices.json").write_text(json.dumps([{"id": "knight", "name": "Knight", "transcript": "For honor!"}]))
    lib = VoiceLibrary(tmp_path / "voices", engine)
    assert install_demo_voices(lib, 24000, tmp_path / "model") == ["knight"]
    assert lib.get("knight").info.demo and install_demo_voices(lib, 24000, tmp_path / "model") == []
    plain = VoiceLibrary(tmp_path / "voices2", engine)
    assert install_demo_voices(plain, 24000, None) == ["guard", "merchant", "sprite"]  # synthetic fallback


def test_a_slow_registration_blocks_no_delete_and_the_queue_is_bounded(engine, tmp_path):
    """Making a prompt takes seconds with the trained codec: here it waits on an event, then
    runs the real engine, so the test can hold a registration in the middle."""
    import threading

    from service.voices import RegistrationsBusy

    inside, release = threading.Event(), threading.Event()

    class SlowLibrary(VoiceLibrary):
        def _tokenise(self, info, ref):
            if info.voice_id != "quick":
                inside.set()
                assert release.wait(30)
            return super()._tokenise(info, ref)

    wav = encode_wav(SPEECH, 44100)
    lib = SlowLibrary(tmp_path, engine, max_pending=2)
    lib.register("quick", wav, "Ready.")
    results = []

    def register(voice_id):
        try:
            results.append(lib.register(voice_id, wav, "Tracks lead east."))
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results.append(exc)

    first = threading.Thread(target=register, args=("scout",))
    second = threading.Thread(target=register, args=("scout",))  # the same id, queued behind the first
    try:
        first.start()
        assert inside.wait(30)
        second.start()
        while lib._pending < 2:
            threading.Event().wait(0.01)
        with pytest.raises(RegistrationsBusy, match="2 voice registrations"):
            lib.register("ranger", wav, "Over here.")
        deleter = threading.Thread(target=lib.delete, args=("quick",))
        deleter.start()
        deleter.join(10)
        assert not deleter.is_alive(), "a delete waited behind a registration in progress"
        assert [v.info.voice_id for v in lib.list()] == []
    finally:
        release.set()
        first.join(30)
        second.join(30)
    # Both passed the early check; the second to finish finds the id taken when it publishes.
    assert results[0].info.voice_id == "scout" and isinstance(results[1], VoiceExists)
    assert [v.info.voice_id for v in lib.list()] == ["scout"] and lib._pending == 0
    lib.register("ranger", wav, "Over here.")  # the queue has room again

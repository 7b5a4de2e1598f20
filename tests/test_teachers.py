"""engine.train.teachers: the teacher TTS voices speak our phonemes, with durations that add up."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def phonemes():
    from engine.text.tokenizer import make_tokenizer, spell

    return spell(make_tokenizer("phonemes", 128), "Well met, traveler! The bridge is out.")


def test_teachers_speak_our_phonemes_with_durations_that_add_up(phonemes):
    pytest.importorskip("onnxruntime", reason="the train extra is not installed (pip install -e '.[train]')")
    from engine.train.teachers import Kokoro, Piper, VoiceSpec

    for teacher, voice in [
        (Kokoro(1), VoiceSpec("blend", {"jf_alpha": 0.5, "jm_kumo": 0.5}, shift=1.06)),
        (Piper(1), VoiceSpec("joe", piper=True)),
    ]:
        utt = teacher.synthesize(phonemes, voice)
        assert len(utt.durations) == len(phonemes) + 2  # each symbol, plus leading and trailing silence
        assert abs(utt.durations.sum() - len(utt.audio) / 24000) < 1e-3
        assert 1.0 < len(utt.audio) / 24000 < 6.0 and np.abs(utt.audio).max() > 0.05


def _npm_tarball(styles: dict[str, bytes]) -> bytes:
    """A gzipped tar in the npm package layout, holding `styles` as package/voices/<name>.bin."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in styles.items():
            info = tarfile.TarInfo(f"package/voices/{name}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_english_styles_are_checked_and_written_all_or_nothing(tmp_path):
    from engine.train.teachers import ENGLISH_STYLES, STYLE_SHAPE, english_styles, extract_styles, npm_integrity

    rng = np.random.default_rng(0)
    styles = {n: rng.standard_normal(STYLE_SHAPE).astype(np.float32) for n in ENGLISH_STYLES}
    good = _npm_tarball({n: s.tobytes() for n, s in styles.items()} | {"jf_alpha": b"\0" * 16})

    with pytest.raises(ValueError, match="sha512"):
        extract_styles(good, npm_integrity(b"another tarball"), tmp_path / "a")
    assert not (tmp_path / "a").exists()

    short = _npm_tarball({n: s.tobytes()[: -4 if n == "bm_lewis" else None] for n, s in styles.items()})
    with pytest.raises(ValueError, match="bm_lewis"):
        extract_styles(short, npm_integrity(short), tmp_path / "b")
    missing = _npm_tarball({n: s.tobytes() for n, s in styles.items() if n != "af_sky"})
    with pytest.raises(KeyError, match="af_sky"):
        extract_styles(missing, npm_integrity(missing), tmp_path / "c")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    assert list(tmp_path.iterdir()) == []  # no half-written temporary dir left behind

    extract_styles(good, npm_integrity(good), tmp_path / "d")
    loaded = english_styles(tmp_path / "d")  # cached: read without fetching
    assert sorted(loaded) == sorted(ENGLISH_STYLES)  # the Japanese style in the tarball is not taken
    assert all(np.array_equal(loaded[n], styles[n]) for n in ENGLISH_STYLES)


def test_english_voices_are_new_voices_of_english_styles_only():
    from engine.train.synth_data import ENGLISH_FROM, english_voices, eval_voices, shard_voices, train_voices
    from engine.train.teachers import ENGLISH_STYLES

    voices = english_voices()
    names = [v.name for v in voices]
    assert len(voices) == 84 and len(set(names)) == 84
    assert names == [v.name for v in english_voices()]  # a fixed draw: shards can be remade
    assert all(set(v.mix) <= set(ENGLISH_STYLES) and not v.piper for v in voices)
    assert {s for v in voices for s in v.mix} == set(ENGLISH_STYLES)  # every style is used
    assert not set(names) & {v.name for v in train_voices() + eval_voices()}
    assert shard_voices(ENGLISH_FROM - 1, heldout=False) == train_voices()
    assert shard_voices(ENGLISH_FROM, heldout=False) == voices
    assert shard_voices(ENGLISH_FROM, heldout=True) == eval_voices()  # held-out shards keep their voices


def test_more_english_voices_are_further_blends_never_used_before():
    from engine.train.synth_data import (
        ENGLISH_FROM,
        MORE_ENGLISH_FROM,
        english_voices,
        eval_voices,
        more_english_voices,
        shard_voices,
        train_voices,
    )
    from engine.train.teachers import ENGLISH_STYLES

    voices = more_english_voices()
    names = [v.name for v in voices]
    assert len(voices) == 84 and len(set(names)) == 84
    assert names == [v.name for v in more_english_voices()]  # a fixed draw: shards can be remade
    assert {s for v in voices for s in v.mix} == set(ENGLISH_STYLES)
    assert all(len(v.mix) in (2, 3) and abs(sum(v.mix.values()) - 1) < 1e-9 for v in voices)
    before = english_voices() + train_voices() + eval_voices()
    assert not set(names) & {v.name for v in before}
    assert not {frozenset(v.mix) for v in voices} & {frozenset(v.mix) for v in before}  # no blend of styles seen before
    assert sum(v.shift != 1.0 for v in voices) == 42 and all(0.88 <= v.shift <= 1.12 for v in voices)
    assert shard_voices(MORE_ENGLISH_FROM - 1, heldout=False) == english_voices()
    assert shard_voices(MORE_ENGLISH_FROM, heldout=False) == voices
    assert shard_voices(MORE_ENGLISH_FROM, heldout=True) == eval_voices()
    assert ENGLISH_FROM < MORE_ENGLISH_FROM


def test_kokoro_speaks_with_an_english_style(phonemes):
    pytest.importorskip("onnxruntime", reason="the train extra is not installed (pip install -e '.[train]')")
    from engine.train.teachers import ENGLISH_STYLES_CACHE, Kokoro, VoiceSpec

    if not ENGLISH_STYLES_CACHE.is_dir():
        pytest.skip("Kokoro's English styles are not fetched (python -m engine.train.synth_data fetches them)")
    utt = Kokoro(1, english=True).synthesize(phonemes, VoiceSpec("mix", {"af_heart": 0.5, "bm_george": 0.5}))
    assert abs(utt.durations.sum() - len(utt.audio) / 24000) < 1e-3
    assert 1.0 < len(utt.audio) / 24000 < 6.0 and np.abs(utt.audio).max() > 0.05

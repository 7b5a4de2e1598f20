"""Per-voice codec adaptation (engine.codecs.adapt) on the shipped codec and a demo voice's
real reference clip: what it tunes, that it fits the voice, and that it travels with the voice."""

from __future__ import annotations

import io

import pytest
import soundfile
import torch
import torch.nn.functional as F

from engine import Engine, EngineConfig
from engine.codecs.adapt import stft_loss
from engine.codecs.mel import MelCodec
from engine.config import AdaptConfig
from engine.models import SHIPPED_MODEL_DIR
from engine.packed import can_pack
from engine.runtime.voice import VoicePrompt
from service.demo_voices import demo_references

pytestmark = pytest.mark.skipif(
    not (SHIPPED_MODEL_DIR / "codec.safetensors").exists(), reason="no trained codec in engine/checkpoints/default"
)
QUICK = AdaptConfig(steps=30)  # a third of the default's work: enough to see it fit
QUICK_LM = AdaptConfig(steps=30, lm_share=0.5)  # the same, half the decoder's steps on the LM's rendering


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    """A demo voice's reference recording at the codec's rate."""
    import torchaudio.functional as AF

    _, _, _, wav = demo_references(SHIPPED_MODEL_DIR, 24000)[0]
    wave, sr = soundfile.read(io.BytesIO(wav), dtype="float32")
    return AF.resample(torch.from_numpy(wave), sr, 24000)


@pytest.fixture(scope="module")
def codec() -> MelCodec:
    return MelCodec(SHIPPED_MODEL_DIR)


@pytest.fixture(scope="module")
def adapter(codec, clip):
    return codec.adapt(clip, QUICK)


def reconstruction_loss(codec: MelCodec, clip: torch.Tensor, adapter) -> float:
    wave = F.pad(clip, (0, (-len(clip)) % codec.samples_per_frame))
    out = codec.decode(codec.encode(wave), adapter)
    return float(stft_loss(out[None], wave[None]))


def test_adaptation_tunes_only_the_one_dimensional_parameters_and_fits_the_voice(codec, clip, adapter):
    before = codec.decode(codec.encode(clip))
    params = dict(codec.autoencoder.decoder.named_parameters(prefix="dec")) | dict(
        codec.vocoder.named_parameters(prefix="voc")
    )
    assert set(adapter) == {k for k, p in params.items() if p.dim() == 1}
    assert 10_000 < sum(v.numel() for v in adapter.values()) < 0.01 * sum(p.numel() for p in params.values())
    assert sum(not torch.equal(v, params[k]) for k, v in adapter.items()) > 0.9 * len(adapter)
    # The round trip through the tuned codec is closer to the clip it was tuned on ...
    assert reconstruction_loss(codec, clip, adapter) < 0.95 * reconstruction_loss(codec, clip, None)
    # ... the codec itself is as shipped once the voice's windows are done ...
    assert torch.equal(codec.decode(codec.encode(clip)), before)
    # ... and the same clip always tunes to the same numbers.
    again = codec.adapt(clip, QUICK)
    assert all(torch.equal(again[k], v) for k, v in adapter.items())


def test_a_malformed_adapter_fails_its_own_call_and_leaves_the_codec_whole(codec, clip, adapter):
    codes = codec.encode(clip)
    want_plain, want_adapted = codec.decode(codes), codec.decode(codes, adapter)
    # Every value off, and the last one the wrong shape: the swap fails after most of it is done.
    bad = {k: v + 1 for k, v in adapter.items()}
    last = list(bad)[-1]
    bad[last] = torch.zeros(bad[last].numel() + 1)
    with pytest.raises(RuntimeError):
        codec.decode(codes, bad)
    assert torch.equal(codec.decode(codes, adapter), want_adapted)
    assert torch.equal(codec.decode(codes), want_plain)


def test_a_tuning_that_diverges_leaves_the_voice_on_the_shipped_codec(codec, clip):
    assert codec.adapt(clip, AdaptConfig(steps=3, lr=1e12)) is None


def test_a_packed_codec_decodes_through_an_adapter_as_the_plain_one_does(codec, clip, adapter):
    """The engine's codec runs on pre-packed kernels, whose biases live elsewhere: the adapter
    must land in them all the same."""
    if not can_pack(torch.device("cpu"), torch.float32):
        pytest.skip("no oneDNN in this torch")
    packed = MelCodec(SHIPPED_MODEL_DIR, packed=torch.float32)
    codes = codec.encode(clip)
    plain_adapted = codec.decode(codes, adapter)
    torch.testing.assert_close(packed.decode(codes, adapter), plain_adapted, atol=1e-4, rtol=0)
    torch.testing.assert_close(packed.decode(codes), codec.decode(codes), atol=1e-4, rtol=0)  # and swapped back
    assert (plain_adapted - codec.decode(codes)).abs().mean() > 0.1 * plain_adapted.abs().mean()


def test_the_adapter_is_stored_with_the_voice_and_keyed_by_the_setting(clip):
    with (
        Engine(SHIPPED_MODEL_DIR, EngineConfig(adapt=QUICK)) as engine,
        Engine(SHIPPED_MODEL_DIR, EngineConfig(adapt=AdaptConfig(steps=0))) as plain,
    ):
        voice = engine.make_voice(clip, 24000, "A line.", "guard")
        unadapted = plain.make_voice(clip, 24000, "A line.", "guard")
        assert voice.adapter is not None and unadapted.adapter is None
        # Same prompt for the LM; another key, so a voice stored under one setting is made again under the other.
        assert torch.equal(voice.frames, unadapted.frames) and voice.key != unadapted.key
        assert voice.key == engine.voice_key("guard")
        stored = VoicePrompt.from_bytes(voice.to_bytes())
        assert stored.key == voice.key and torch.equal(stored.frames, voice.frames)
        assert set(stored.adapter) == set(voice.adapter)
        assert all(torch.equal(stored.adapter[k], v) for k, v in voice.adapter.items())
        assert VoicePrompt.from_bytes(unadapted.to_bytes()).adapter is None


def test_alignment_recovers_a_known_time_warp():
    """engine.codecs.adapt.align maps each frame of a stretched copy back to the frame it came from."""
    from engine.codecs.adapt import align

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(40, 16, generator=gen)
    source = torch.tensor([0, 1, 1, 2, 3, 5, 6, 6, 6, 7] + list(range(8, 40)))  # held, dropped and held frames
    b = a[source] + 0.05 * torch.randn(len(source), 16, generator=gen)
    assert torch.equal(align(a, b), source)
    assert not torch.equal(align(a.flip(0), b), source)


def test_tuning_on_the_lms_rendering_brings_that_rendering_to_the_voice(codec, clip):
    """AdaptConfig.lm_share: the decoder also learns from a rendering of the clip's words in
    another timbre (here the clip itself, sped up 10% and so with its formants moved, as the LM's
    training voices move them), aligned to the clip: that rendering then decodes closer to the
    clip's own mel than through an adapter tuned on the clip's codes alone."""
    import torchaudio.functional as AF

    other = AF.resample(clip, 26400, 24000)  # played 10% faster: shorter, every formant 10% up
    spoken = codec.encode(other)
    with_spoken = codec.adapt(clip, QUICK_LM, spoken)
    without = codec.adapt(clip, QUICK)
    wave = F.pad(clip, (0, (-len(clip)) % codec.samples_per_frame))
    latent = codec.autoencoder.fsq.from_codes(codec.encode(wave)[None])[0]
    aligned = codec._aligned(codec._latent(spoken[None])[0], wave, latent.shape[-1])
    target = codec.front(wave[None])

    def mel_error(adapter) -> float:
        out = codec.decode_batch(aligned.T[None], adapter)
        return float(F.l1_loss(codec.front(out), target))

    assert mel_error(with_spoken) < 0.95 * mel_error(without)


def test_matching_band_statistics_needs_no_alignment_and_brings_the_rendering_to_the_voice(codec, clip):
    """AdaptConfig(lm_match="stats"): the rendering keeps its own length (no warp onto the clip),
    and the decoder learns to give it the clip's spectrum: each mel band's mean and spread over
    the whole rendering come nearer the clip's than through the adapter tuned on codes alone."""
    import torchaudio.functional as AF

    from engine.codecs.adapt import band_stats

    other = AF.resample(clip, 26400, 24000)
    spoken = codec.encode(other)  # 10% shorter than the clip: only "stats" takes it as it is
    stats = AdaptConfig(steps=30, lm_share=0.5, lm_match="stats")
    with_spoken, without = codec.adapt(clip, stats, spoken), codec.adapt(clip, QUICK)
    clip_stats = band_stats(codec.front(F.pad(clip, (0, (-len(clip)) % codec.samples_per_frame))[None]))

    def stats_error(adapter) -> float:
        said = band_stats(codec.front(codec.decode(spoken, adapter)[None]))
        return sum(float(F.l1_loss(a, b)) for a, b in zip(said, clip_stats))

    assert stats_error(with_spoken) < 0.9 * stats_error(without)
    assert stats.identity.endswith("+lm0.5stats") and QUICK_LM.identity.endswith("+lm0.5")
    with pytest.raises(ValueError, match="lm_match"):
        AdaptConfig(lm_match="warp")


def test_an_engine_adapts_on_what_its_lm_says_and_keys_the_voice_by_it(clip):
    """Engine.make_voice has the LM speak the transcript in the new voice and tunes on that too;
    the voice key names the setting and the LM, so stored voices are made again when either changes."""
    with (
        Engine(SHIPPED_MODEL_DIR, EngineConfig(adapt=QUICK_LM)) as engine,
        Engine(SHIPPED_MODEL_DIR, EngineConfig(adapt=QUICK)) as plain,
    ):
        said = []
        speak = engine.family.speak
        engine.family.speak = lambda voice, text: said.append(text) or speak(voice, text)
        voice = engine.make_voice(clip, 24000, "Hold the gate until the bell rings.", "guard")
        assert said == ["Hold the gate until the bell rings."]
        unaligned = plain.make_voice(clip, 24000, "Hold the gate until the bell rings.", "guard")
        assert torch.equal(voice.frames, unaligned.frames) and voice.key != unaligned.key
        assert b"+lm0.5-" in voice.key and b"+lm" not in unaligned.key
        assert any(not torch.equal(voice.adapter[k], v) for k, v in unaligned.adapter.items())

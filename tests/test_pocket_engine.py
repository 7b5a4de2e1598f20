"""pocket-tts checkpoints served by our engine and service: paged KV, prefix cache, batching, streaming.

The checkpoint is the small English variant with seeded random weights, written in the
package's own layout by the reference itself (tests/pocket_reference.py). What the engine
produces is compared with our single-stream loop (engine.models.pocket_tts.generate), which
tests/test_pocket_tts.py holds to the reference's numbers.
"""

from __future__ import annotations

import grpc
import pytest
import torch

from engine import AudioChunk, Engine, EngineConfig, Finished, NothingToSay, SamplingParams
from engine.audio import speechlike_wave
from engine.config import CacheConfig, SchedulerConfig
from engine.models.pocket_tts.family import checkpoint_language
from engine.models.pocket_tts.generate import generate_chunk, prefill_voice, scaled_noise
from engine.models.pocket_tts.model import load_model
from engine.models.pocket_tts.text import chunk_text
from engine.models.pocket_tts.voice import voice_prefix
from service.audio_input import encode_wav
from service.fragments import llm_tokens
from service.gen import npc_voice_pb2 as pb
from tests import pocket_reference as pr
from tests.support import ServerThread, speech_like

TEXTS = ["Hello world.", "Is this the right way to the old castle, traveler?", "The quick brown fox jumps."]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("pocket2m")
    pr.run_isolated(pr.build_checkpoint, pr.SMALL_CONFIG, out, 0)
    return out


@pytest.fixture(scope="module")
def engine(checkpoint):
    # Two blocks of 16 cover a voice prefix of ~27 frames: a later utterance reuses one.
    cfg = EngineConfig(cache=CacheConfig(block_size=16, num_blocks=256), scheduler=SchedulerConfig(max_running=8))
    with Engine(checkpoint, cfg) as eng:
        yield eng


def voice_clip(seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    return speech_like(seconds) * (1.0 + 0.1 * seed)


def alone(checkpoint, text: str, seed: int, wave: torch.Tensor) -> torch.Tensor:
    """Our single-stream loop's latents for `text` with a request's seed (no engine)."""
    model = load_model(checkpoint)
    with torch.inference_mode():
        kv = prefill_voice(model, voice_prefix(model.encoder, model.backbone, wave))
        gen = torch.Generator().manual_seed(seed)
        temp = model.cfg.default_temperature
        (chunk,) = chunk_text(model.tokenizer, text, model.rules)
        noise = lambda step: scaled_noise([gen], temp, model.cfg.latent_dim)
        return generate_chunk(model, kv, chunk, noise).latents


def engine_latents(stream) -> torch.Tensor:
    rows = []
    for event in stream.events():
        if getattr(event, "latent", None) is not None:
            rows.append(event.latent)
    return torch.stack(rows) if rows else torch.zeros(0, 32)


def test_the_engine_detects_the_family_and_says_it_gives_no_timings(engine):
    assert engine.model_name.startswith("pocket-tts") and not engine.has_timings and not engine.guides_voice
    assert engine.sample_rate == 24000 and engine.frame_rate == 12.5


def test_engine_utterances_match_the_single_stream_loop_alone_and_batched(engine, checkpoint):
    wave = voice_clip()
    voice = engine.make_voice(wave, 24000, "unused by this family", "narrator")
    expected = [alone(checkpoint, t, seed=10 + i, wave=wave) for i, t in enumerate(TEXTS)]
    params = [SamplingParams(seed=10 + i, temperature=0.3) for i in range(len(TEXTS))]
    one_by_one = [engine_latents(engine.submit(voice, t, p)) for t, p in zip(TEXTS, params)]
    streams = [engine.submit(voice, t, p) for t, p in zip(TEXTS, params)]  # decoded together
    batched = [engine_latents(s) for s in streams]
    for got in (one_by_one, batched):
        for g, e in zip(got, expected):
            assert g.shape == e.shape and len(e) >= 6
            torch.testing.assert_close(g, e, atol=1e-4, rtol=0)


def test_a_voice_heard_before_skips_its_prefix_and_audio_streams(engine):
    voice = engine.make_voice(voice_clip(seed=3), 24000, "", "guard")
    before = engine.stats()
    first = list(engine.submit(voice, TEXTS[0], SamplingParams(seed=1, temperature=0.3), sample_rate=48000))
    second = list(engine.submit(voice, TEXTS[1], SamplingParams(seed=2, temperature=0.3), sample_rate=48000))
    done = [e for e in first + second if isinstance(e, Finished)]
    assert [d.reason for d in done] == ["eos", "eos"]
    assert done[0].cached_frames == 0 and done[1].cached_frames >= 16  # the voice prefix's full blocks
    assert engine.stats().prefix_hits > before.prefix_hits
    audio = torch.cat([torch.from_numpy(e.samples) for e in second if isinstance(e, AudioChunk)])
    assert abs(len(audio) / 48000 - done[1].audio_seconds) < 1e-6 and done[1].audio_seconds > 0.4
    assert torch.isfinite(audio).all() and audio.abs().max() > 0


def test_serve_answers_a_converse_stream_end_to_end(engine, tmp_path):
    srv = ServerThread(engine, tmp_path / "voices", demo_voices=False)
    try:
        wav = encode_wav(speechlike_wave(4.0, 24000, floor=0.05), 24000)
        srv.stub.RegisterVoice(pb.RegisterVoiceRequest(voice_id="keeper", reference_wav=wav, transcript="Hi."))
        caps = srv.stub.GetCapabilities(pb.GetCapabilitiesRequest())
        assert caps.model.startswith("pocket-tts") and not caps.timings_available

        def requests():
            yield pb.ConverseRequest(config=pb.SessionConfig(voice_id="keeper", sample_rate_hz=16000))
            for token in llm_tokens("Hello world. The quick brown fox jumps."):
                yield pb.ConverseRequest(text=pb.TextFragment(text=token))
            yield pb.ConverseRequest(close=pb.Close())

        responses = list(srv.stub.Converse(requests(), timeout=120))
        kinds = [r.WhichOneof("kind") for r in responses]
        assert kinds[0] == "started" and not responses[0].started.timings_available
        done = [r.utterance_done for r in responses if r.WhichOneof("kind") == "utterance_done"]
        assert len(done) == 2 and all(d.reason == pb.END_OF_SPEECH for d in done)
        audio = b"".join(r.audio.audio for r in responses if r.WhichOneof("kind") == "audio")
        assert abs(len(audio) / 2 / 16000 - sum(d.audio_seconds for d in done)) < 0.01
        assert "mark" not in kinds
        guided = pb.SessionConfig(voice_id="keeper", sampling=pb.SamplingConfig(voice_guidance=1.0))
        with pytest.raises(grpc.RpcError) as refused:
            list(srv.stub.Converse(iter([pb.ConverseRequest(config=guided)]), timeout=60))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "voice_guidance is not supported" in refused.value.details()
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "weights, language",
    [
        ("hf://kyutai/pocket-tts/languages/french_24l/model.safetensors@3e82814a", "fr"),
        ("hf://kyutai/pocket-tts/languages/german/model.safetensors@3e82814a", "de"),
        ("hf://kyutai/pocket-tts/languages/english/model.safetensors@db04f0e6", "en"),
        ("/models/mine/model.safetensors", "en"),
    ],
)
def test_the_language_comes_from_the_checkpoints_config(tmp_path, weights, language):
    (tmp_path / "config.yaml").write_text(f"weights_path: {weights}\n")
    assert checkpoint_language(tmp_path) == language


def test_streams_at_different_positions_decode_together_as_each_alone(engine):
    """The audio thread decodes every stream's window of one length in one call (Mimi's state
    stacked per stream); each stream must get what it gets alone, and keep its own state."""
    codec = engine.codec
    g = torch.Generator().manual_seed(0)
    frames = [torch.randn(n, 32, generator=g) for n in (5, 2)]  # two streams, 5 and 2 frames so far
    together, alone = [codec.new_stream(), codec.new_stream()], [codec.new_stream(), codec.new_stream()]
    for state, f in zip(alone, frames):
        codec.decode_streams([state], f[None, :-1])
    for state, f in zip(together, frames):
        codec.decode_streams([state], f[None, :-1])
    last = torch.stack([f[-1:] for f in frames])  # one more frame each, at positions 4 and 1
    batched = codec.decode_streams(together, last)
    for b, (state, f) in enumerate(zip(alone, frames)):
        solo = codec.decode_streams([state], f[None, -1:])[0]
        torch.testing.assert_close(batched[b], solo, atol=1e-5, rtol=0)
        assert int(together[b].pos) == int(state.pos)


def test_blank_text_is_nothing_to_say_and_the_service_check_agrees(engine):
    voice = engine.make_voice(voice_clip(), 24000, "", "blank")
    with pytest.raises(NothingToSay):
        engine.submit(voice, "  \n ")
    assert engine.tokenizer.encode("  ") == [] and engine.tokenizer.encode("Hi.")

"""engine.codecs.mel: FSQ codes, saving and loading, frame arithmetic and expected-latent decoding."""

from __future__ import annotations

import torch

from engine.codecs.mel import FSQ, MelAutoencoder, MelCodec, MelCodecConfig, Vocoder, save_codec


def test_fsq_codes_round_trip_and_use_every_level():
    fsq = FSQ((4, 4, 4, 4), groups=8)
    q = fsq.quantize(torch.randn(3, 32, 40) * 3)
    codes = fsq.to_codes(q)
    assert codes.shape == (3, 40, 8) and codes.min() >= 0 and codes.max() <= 255
    assert torch.equal(fsq.from_codes(codes), q)
    assert len(torch.unique(q)) == 4


def test_mel_codec_saves_loads_and_keeps_frame_arithmetic(tmp_path):
    cfg = MelCodecConfig(dim=32, blocks=1, vocoder_dim=32, vocoder_blocks=1)
    torch.manual_seed(0)
    save_codec(tmp_path, cfg, MelAutoencoder(cfg), Vocoder(cfg))
    codec = MelCodec(tmp_path)
    assert codec.frame_rate == 25.0 and codec.samples_per_frame == 960 and codec.num_codebooks == 8
    wave = torch.randn(24000) * 0.1
    codes = codec.encode(wave)
    assert codes.shape == (25, 8) and codes.dtype == torch.long
    audio = codec.decode(codes[:10])
    assert audio.shape == (9600,) and torch.isfinite(audio).all() and audio.abs().max() <= 1.0
    assert torch.equal(codec.encode(wave), codes)  # deterministic
    # Expected-latent decoding: a sure distribution is the code itself; an even split
    # between two codes of one group decodes their midpoint latent.
    probs = torch.nn.functional.one_hot(codes[:10], 256).float()
    torch.testing.assert_close(codec.decode_expected(probs), audio, atol=1e-5, rtol=0)
    fsq, mixed, other = codec.autoencoder.fsq, probs.clone(), (codes[:10, 3] + 1) % 256
    mixed[torch.arange(10), 3] *= 0.5
    mixed[torch.arange(10), 3, other] += 0.5
    alt = codes[:10].clone()
    alt[:, 3] = other
    midpoint = codec.decode_latent((fsq.from_codes(codes[None, :10]) + fsq.from_codes(alt[None])) / 2)[0]
    torch.testing.assert_close(codec.decode_expected(mixed), midpoint, atol=1e-5, rtol=0)
    # The engine's path: float latent frames go through decode and decode_batch in place of codes.
    latents = codec.expected_latent(probs)
    assert latents.shape == (10, codec.latent_dim) and latents.is_floating_point()
    torch.testing.assert_close(codec.decode(latents), audio, atol=1e-5, rtol=0)
    torch.testing.assert_close(codec.decode_batch(codec.expected_latent(mixed)[None])[0], midpoint, atol=1e-5, rtol=0)

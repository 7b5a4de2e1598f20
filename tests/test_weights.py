"""Shipped weight files: int8 matrices must load back close to the float model, and smaller."""

from __future__ import annotations

import torch

from engine.codecs.mel import MelAutoencoder, MelCodec, MelCodecConfig, Vocoder, save_codec
from engine.models.speech_lm.config import ModelConfig
from engine.models.speech_lm.model import WEIGHTS_FILE, SpeechLM, load_model, save_model
from engine.weights import MIN_QUANT_NUMEL, load_weights, quantize_int8, save_weights, tensor_digest


def test_int8_rows_are_within_half_a_step_of_the_float_values():
    torch.manual_seed(0)
    w = torch.randn(64, 3, 5) * torch.logspace(-3, 1, 64)[:, None, None]  # rows of very different scale
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and q.shape == w.shape and scale.shape == (64,)
    err = (q.float() * scale[:, None, None] - w).abs()
    assert (err <= scale[:, None, None] / 2 + 1e-9).all()
    assert (q.reshape(64, -1).abs().amax(1) == 127).all()  # each row uses its full range


def test_save_weights_quantises_only_large_float_matrices(tmp_path):
    state = {
        "big": torch.randn(512, 256),
        "small": torch.randn(8, 8),
        "norm": torch.ones(512),
        "ids": torch.arange(MIN_QUANT_NUMEL * 2),
    }
    save_weights(tmp_path / "f.safetensors", state, int8=True)
    back = load_weights(tmp_path / "f.safetensors")
    assert set(back) == set(state)
    assert torch.equal(back["small"], state["small"]) and torch.equal(back["ids"], state["ids"])
    assert not torch.equal(back["big"], state["big"])
    torch.testing.assert_close(back["big"], state["big"], atol=state["big"].abs().max().item() / 254, rtol=0)


def test_int8_model_is_smaller_and_predicts_like_the_float_one(tmp_path):
    cfg = ModelConfig(dim=256, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=512, num_codebooks=4)
    torch.manual_seed(0)
    model = SpeechLM(cfg).eval()
    save_model(model, tmp_path / "f32")
    save_model(model, tmp_path / "i8", int8=True)
    size = lambda d: (tmp_path / d / WEIGHTS_FILE).stat().st_size
    assert size("i8") < 0.35 * size("f32")
    frames = torch.randint(0, 100, (1, 12, cfg.num_channels))
    pos = torch.arange(12)[None]
    loaded = load_model(tmp_path / "i8")
    with torch.no_grad():
        ref = model.logits(model(frames, pos)[0])
        got = loaded.logits(loaded(frames, pos)[0])
    assert (ref.argmax(-1) == got.argmax(-1)).float().mean() > 0.9
    real = torch.isfinite(ref)
    assert torch.equal(real, torch.isfinite(got))
    assert (got - ref)[real].abs().max() < 0.05 * ref[real].abs().max()


def test_codec_encoder_digest_follows_the_encoder_only(tmp_path):
    cfg = MelCodecConfig(dim=32, blocks=1, vocoder_dim=32, vocoder_blocks=1)
    torch.manual_seed(0)
    ae, voc = MelAutoencoder(cfg), Vocoder(cfg)
    save_codec(tmp_path / "a", cfg, ae, voc)
    with torch.no_grad():
        ae.decoder[0].weight.add_(1.0)  # decoder and vocoder may keep training...
        voc.inp.weight.add_(1.0)
    save_codec(tmp_path / "b", cfg, ae, voc)
    with torch.no_grad():
        ae.encoder[0].weight.add_(1.0)  # ...the encoder may not
    save_codec(tmp_path / "c", cfg, ae, voc)
    a, b, c = (MelCodec(tmp_path / d).encoder_digest for d in "abc")
    assert a == b != c
    assert tensor_digest({"x": torch.ones(3)}) != tensor_digest({"x": torch.zeros(3)})

"""engine.train.train_codec: the codec's later training stages keep every token an LM was trained on."""

from __future__ import annotations

import pytest
import torch

from engine.codecs.mel import MelAutoencoder, MelCodec, MelCodecConfig, Vocoder, save_codec
from tests.support import audio_shard


def test_codec_stage_two_from_a_shipped_codec_keeps_its_tokens(tmp_path, monkeypatch):
    """train_codec --init DIR --freeze-encoder: decoder and vocoder train on, the encoder (and
    so every token an LM was trained on) survives training and the int8 re-export bit for bit;
    --soup-decoder DIR exports DIR's codec with the mean of the two decoders."""
    import sys

    from engine.train import train_codec
    from engine.weights import load_weights

    torch.manual_seed(0)
    cfg = MelCodecConfig()
    save_codec(tmp_path / "shipped", cfg, MelAutoencoder(cfg), Vocoder(cfg), int8=True)
    (tmp_path / "audio").mkdir()
    audio_shard(tmp_path / "audio" / "shard_00000.npz", ["Over here!", "Twelve gold, friend."])
    common = ["train_codec", "--data", str(tmp_path / "audio"), "--work", str(tmp_path / "work")]
    for extra in (
        [
            "--init",
            str(tmp_path / "shipped"),
            "--freeze-encoder",
            "--steps",
            "2",
            "--batch",
            "2",
            "--seconds",
            "0.96",
            "--threads",
            "1",
        ],
        ["--export", str(tmp_path / "out"), "--int8"],
    ):
        monkeypatch.setattr(sys, "argv", common + extra)
        train_codec.main()
    before, after = MelCodec(tmp_path / "shipped"), MelCodec(tmp_path / "out")
    assert after.encoder_digest == before.encoder_digest
    old, new = (
        load_weights(tmp_path / "shipped" / "codec.safetensors"),
        load_weights(tmp_path / "out" / "codec.safetensors"),
    )
    assert not torch.equal(old["ae.decoder.0.weight"], new["ae.decoder.0.weight"])
    assert not torch.equal(old["voc.inp.weight"], new["voc.inp.weight"])

    # --soup-decoder: the shipped codec with its decoder halfway to the one trained on from it.
    monkeypatch.setattr(
        sys, "argv", common + ["--export", str(tmp_path / "soup"), "--soup-decoder", str(tmp_path / "shipped")]
    )
    train_codec.main()
    tuned = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=False)["ae"]
    soup = load_weights(tmp_path / "soup" / "codec.safetensors")
    assert MelCodec(tmp_path / "soup").encoder_digest == before.encoder_digest
    for k in ("decoder.0.weight", "decoder.1.conv1.weight", "decoder.1.norm.bias"):
        torch.testing.assert_close(soup[f"ae.{k}"], (old[f"ae.{k}"] + tuned[k]) / 2, rtol=0, atol=1e-7)
    assert torch.equal(soup["voc.inp.weight"], old["voc.inp.weight"])  # the vocoder is the shipped one
    save_codec(tmp_path / "other", cfg, MelAutoencoder(cfg), Vocoder(cfg), int8=True)
    monkeypatch.setattr(
        sys, "argv", common + ["--export", str(tmp_path / "soup"), "--soup-decoder", str(tmp_path / "other")]
    )
    with pytest.raises(SystemExit, match="another encoder"):
        train_codec.main()


def test_codec_stage_three_decodes_the_lms_own_predictions(tmp_path, monkeypatch):
    """train_codec --lm: the LM's teacher-forced predictions are aligned with the frames they
    predict, and the decoder and vocoder train on them while every token stays as it was."""
    import sys

    from engine.models.speech_lm.model import SpeechLM, load_model, save_model
    from engine.train import train_codec
    from engine.train.lm_data import build_example
    from engine.train.lm_latents import lm_latents
    from engine.train.token_store import load_token_shard, tokenise
    from engine.train.train_lm import model_config
    from engine.weights import load_weights

    torch.manual_seed(0)
    cfg = MelCodecConfig()
    lm_dir = tmp_path / "lm"
    save_codec(lm_dir, cfg, MelAutoencoder(cfg), Vocoder(cfg), int8=True)
    save_model(SpeechLM(model_config(dim=64, layers=1, codebooks=8, codebook_size=256)), lm_dir)
    (tmp_path / "audio").mkdir()
    audio_shard(tmp_path / "audio" / "shard_00000.npz", ["Over here!", "Yes, friend.", "Hold the gate.", "Run!"])
    tokenise(lm_dir, tmp_path / "audio", tmp_path / "tokens")
    shard = tmp_path / "tokens" / "shard_00000.npz"

    # Frame j's latent is the expected latent of the prediction made where frame j-1 is the
    # last input (the prompt's speech_start for j = 0): the model run on a cut sequence agrees.
    latents = lm_latents(lm_dir, [shard], [shard], temperature=0.7)["shard_00000.npz"]
    model, codec = load_model(lm_dir), MelCodec(lm_dir)
    lines = load_token_shard(shard)
    assert [len(x) for x in latents] == [len(r["codes"]) for r in lines]  # every line could be laid out
    line, ref = lines[3], lines[1]  # voices alternate, so line 3 is prompted by line 1
    frames, _ = build_example(
        model.cfg, ref["ids"], ref["codes"], line["ids"], line["codes"], line["durations"], model.cfg.mark_delay_frames
    )
    prompt = len(frames) - len(line["codes"])
    for j in (0, 5, len(line["codes"]) - 1):
        with torch.inference_mode():
            cut = frames[: prompt + j]
            hidden = model(cut[None], torch.arange(len(cut))[None])[0, -1:]
            probs = (model.logits(hidden)[:, 1:, :256] / 0.7).softmax(-1)
        torch.testing.assert_close(latents[3][j].float(), codec.expected_latent(probs)[0], atol=2e-3, rtol=0)

    common = ["train_codec", "--data", str(tmp_path / "audio"), "--work", str(tmp_path / "work")]
    for extra in (
        [
            "--init",
            str(lm_dir),
            "--lm",
            str(lm_dir),
            "--tokens",
            str(tmp_path / "tokens"),
            "--steps",
            "2",
            "--batch",
            "2",
            "--seconds",
            "0.32",
            "--threads",
            "1",
            "--gan-weight",
            "0.1",
        ],
        ["--export", str(tmp_path / "out")],
    ):
        monkeypatch.setattr(sys, "argv", common + extra)
        train_codec.main()
    assert list((tmp_path / "work").glob("lm_latents-*.pt"))  # computed once per LM, then reused
    state = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2 and "disc" in state  # the adversary resumes with the rest
    logged = (tmp_path / "work" / "losses.csv").read_text().splitlines()[0].split(",")
    assert {"lm_mel_l1", "disc", "adv", "fm"} <= set(logged)
    assert MelCodec(tmp_path / "out").encoder_digest == codec.encoder_digest
    old, new = load_weights(lm_dir / "codec.safetensors"), load_weights(tmp_path / "out" / "codec.safetensors")
    assert not torch.equal(old["ae.decoder.0.weight"], new["ae.decoder.0.weight"])
    assert not torch.equal(old["voc.inp.weight"], new["voc.inp.weight"])

"""engine.train.token_store: codec tokens of the audio shards, stamped with the encoder that made them."""

from __future__ import annotations

import pytest
import torch

from engine.audio import from_pcm16
from engine.codecs.mel import MelAutoencoder, MelCodec, MelCodecConfig, Vocoder, save_codec
from tests.support import audio_shard


def test_token_store_keeps_what_the_lm_needs_and_refuses_another_encoder(tmp_path):
    from engine.text.tokenizer import make_tokenizer
    from engine.train.synth_data import load_shard
    from engine.train.token_store import load_token_shard, tokenise

    cfg = MelCodecConfig(dim=32, blocks=1, vocoder_dim=32, vocoder_blocks=1)
    torch.manual_seed(0)
    save_codec(tmp_path / "codec", cfg, MelAutoencoder(cfg), Vocoder(cfg))
    (tmp_path / "audio").mkdir()
    records, audio = audio_shard(tmp_path / "audio" / "shard_00003.npz", ["Over here!", "Twelve gold, friend."])
    assert tokenise(tmp_path / "codec", tmp_path / "audio", tmp_path / "tokens") == 1
    assert tokenise(tmp_path / "codec", tmp_path / "audio", tmp_path / "tokens") == 0  # done shards are skipped
    back = load_token_shard(tmp_path / "tokens" / "shard_00003.npz")
    codec, tok = MelCodec(tmp_path / "codec"), make_tokenizer("phonemes", 128)
    assert len(back) == 2
    for r, b, pcm in zip(records, back, audio):
        assert torch.equal(b["codes"], codec.encode(torch.from_numpy(from_pcm16(pcm))))
        assert b["ids"] == [tok.ids[c] for c in r["symbols"]]
        assert {k: b[k] for k in ("text", "voice", "durations")} == {k: r[k] for k in ("text", "voice", "durations")}
    assert len(load_shard(tmp_path / "audio" / "shard_00003.npz")[0]["audio"]) == len(audio[0])

    torch.manual_seed(1)  # another encoder must not add its tokens to these
    save_codec(tmp_path / "other", cfg, MelAutoencoder(cfg), Vocoder(cfg))
    with pytest.raises(SystemExit, match="another codec encoder"):
        tokenise(tmp_path / "other", tmp_path / "audio", tmp_path / "tokens")


def test_committed_tokens_fit_the_shipped_codec_and_their_durations():
    """The token shards in the repo are what the LM trains on: made by the shipped codec's
    encoder, one id per phoneme, and as many frames as the teacher's durations add up to."""
    from engine.models import default_model_dir
    from engine.train.token_store import TOKENS, check_stamp, load_token_shard

    shards = sorted((TOKENS / "train").glob("shard_*.npz"))
    model_dir = default_model_dir()
    if not shards or not (model_dir / "codec.safetensors").exists():
        pytest.skip("no committed token shards or no shipped codec")
    check_stamp(TOKENS / "train", MelCodec(model_dir).encoder_digest)
    for path in shards[:: max(1, len(shards) // 8)]:
        for r in load_token_shard(path):
            assert len(r["durations"]) == len(r["ids"]) + 2 == len(r["symbols"]) + 2
            assert r["codes"].shape[1] == 8 and int(r["codes"].max()) < 256
            assert abs(len(r["codes"]) - sum(r["durations"]) * 25) <= 1.5, (path.name, r["text"])

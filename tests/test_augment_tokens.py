"""engine.train.augment_tokens: new training voices made from the committed tokens by warping the codec's mel."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from engine.models import SHIPPED_MODEL_DIR
from engine.train.augment_tokens import FLOOR, Recoder, augment_shard, band_centres, main, variant_of, warp_mel
from engine.train.token_store import CODEC_STAMP, TOKENS, load_token_shard

SHIPPED = str(SHIPPED_MODEL_DIR)


def test_warp_moves_a_band_by_the_factor_and_tilts():
    centres = band_centres(80, 12000)
    mel = torch.full((80, 3), FLOOR)
    mel[30] = 0.0  # one loud band
    assert torch.allclose(warp_mel(mel, 1.0, 0.0, centres), mel)
    for factor in (0.86, 1.12):
        up = warp_mel(mel, factor, 0.0, centres)
        peak = int(up[:, 0].argmax())
        assert abs(centres[peak] - centres[30] * factor) < (centres[31] - centres[29])  # within a band
    tilted = warp_mel(torch.zeros(80, 2), 1.0, 1.0, centres)
    assert torch.allclose(tilted[-1] - tilted[0], torch.ones(2))  # low end to high end
    # Moved down, the top bands would read above what the input holds: silent, not stretched.
    assert bool((warp_mel(torch.zeros(80, 1), 0.86, 0.0, centres)[-3:] == FLOOR).all())
    assert bool((warp_mel(torch.zeros(80, 1), 1.15, 0.0, centres) == 0.0).all())


def test_variants_are_fixed_per_voice_and_far_from_the_original():
    assert variant_of("jf_nezumi", 1) == variant_of("jf_nezumi", 1)
    assert variant_of("jf_nezumi", 1) != variant_of("jf_tebukuro", 1)
    for voice in ("a", "b", "jf_nezumi+jf_tebukuro"):
        for k in range(4):
            factor, tilt = variant_of(voice, k)
            assert (0.84 <= factor <= 0.92) if k % 2 == 0 else (1.08 <= factor <= 1.18)
            assert -1.5 <= tilt <= 1.5


def test_augmented_shard_keeps_text_and_timing_and_makes_new_codes():
    from engine.codecs.mel import MelCodec

    records = load_token_shard(sorted((TOKENS / "train").glob("shard_*.npz"))[0])[:4]
    recode = Recoder(MelCodec(SHIPPED))
    out = augment_shard(records, recode, variants=4)
    for r, a in zip(records, out):
        assert a["voice"].startswith(r["voice"] + "~") and a["voice"][-1] in "0123"
        assert (a["ids"], a["durations"], a["text"]) == (r["ids"], r["durations"], r["text"])
        assert a["codes"].shape == tuple(r["codes"].shape)
        # The codec's own round trip keeps most codes; a warp changes most of them.
        kept_plain = float((recode(r["codes"], 1.0, 0.0) == r["codes"]).float().mean())
        kept_warped = float((torch.from_numpy(np.asarray(a["codes"])) == r["codes"]).float().mean())
        assert kept_plain > 0.7 and kept_warped < 0.6, (kept_plain, kept_warped)
    # One voice's lines that land on the same variant share a new voice.
    assert len({a["voice"] for a in out}) <= 4 * len({r["voice"] for r in records})


def test_main_writes_the_layout_train_lm_reads(tmp_path):
    src = tmp_path / "tokens"
    (src / "train").mkdir(parents=True)
    (src / "eval").mkdir()
    shutil.copy(TOKENS / "train" / CODEC_STAMP, src / "train" / CODEC_STAMP)
    shutil.copy(sorted((TOKENS / "train").glob("shard_*.npz"))[0], src / "train" / "shard_00000.npz")
    main(["--out", str(tmp_path / "aug"), "--tokens", str(src), "--codec", SHIPPED])
    train = tmp_path / "aug" / "train"
    assert sorted(p.name for p in train.glob("shard_*.npz")) == ["shard_00000.npz", "shard_00000_aug.npz"]
    assert (tmp_path / "aug" / "eval").resolve() == (src / "eval").resolve()
    original, augmented = load_token_shard(train / "shard_00000.npz"), load_token_shard(train / "shard_00000_aug.npz")
    assert [r["text"] for r in original] == [r["text"] for r in augmented]
    (src / "train" / CODEC_STAMP).write_text("another-encoder")  # tokens of another codec are refused
    with pytest.raises(SystemExit, match="another codec encoder"):
        main(["--out", str(tmp_path / "aug2"), "--tokens", str(src), "--codec", SHIPPED])

"""engine.train.snapshots: train_lm keeps its last weight snapshots and exports their mean."""

from __future__ import annotations

import pytest
import torch

from engine.codecs.mel import MelAutoencoder, MelCodecConfig, Vocoder, save_codec
from tests.support import audio_shard


def test_lm_training_keeps_its_last_snapshots_and_exports_their_mean(tmp_path, monkeypatch):
    """train_lm keeps the weights of its last --keep saves; --export --average N writes their
    element-wise mean (checked on the float32 norm weights, which export stores unquantised)."""
    import json
    import shutil
    import sys

    from engine.models.speech_lm.config import ModelConfig
    from engine.train import train_lm
    from engine.train.snapshots import average_state_dicts, snapshots
    from engine.train.token_store import tokenise
    from engine.weights import load_weights

    torch.manual_seed(0)
    cfg = MelCodecConfig()
    codec_dir, work, out = tmp_path / "codec", tmp_path / "work", tmp_path / "out"
    save_codec(codec_dir, cfg, MelAutoencoder(cfg), Vocoder(cfg), int8=True)
    (tmp_path / "audio").mkdir()
    audio_shard(tmp_path / "audio" / "shard_00000.npz", ["Over here!", "Yes, friend.", "Hold the gate.", "Run!"])
    tokenise(codec_dir, tmp_path / "audio", tmp_path / "tokens" / "train")
    shutil.copytree(codec_dir, out)

    common = [
        "train_lm",
        "--tokens",
        str(tmp_path / "tokens"),
        "--work",
        str(work),
        "--codec",
        str(codec_dir),
        "--dim",
        "64",
        "--layers",
        "1",
        "--threads",
        "1",
    ]
    monkeypatch.setattr(sys, "argv", common + ["--steps", "4", "--batch", "2", "--save-every", "1", "--keep", "2"])
    train_lm.main()
    kept = snapshots(work)
    assert [step for step, _ in kept] == [3, 4]  # steps 1 and 2 were pruned
    states = [torch.load(p, weights_only=True) for _, p in kept]

    # A second export over a model dir keeps the decoding settings chosen for that model.
    monkeypatch.setattr(sys, "argv", common + ["--export", str(out)])
    train_lm.main()
    chosen = dict(json.loads((out / "config.json").read_text()), generation={"timing": "sampled", "pace": 1.1})
    (out / "config.json").write_text(json.dumps(chosen))
    monkeypatch.setattr(sys, "argv", common + ["--export", str(out), "--average", "2"])
    train_lm.main()
    assert ModelConfig.load(out / "config.json").generation.pace == 1.1
    exported, mean = load_weights(out / "model.safetensors"), average_state_dicts(states)
    norms = [k for k, v in mean.items() if k.endswith("norm.weight") and v.dim() == 1]
    assert norms
    for k in norms:
        assert not torch.equal(states[0][k], states[1][k])  # the two steps differ, so a mean is a real test
        torch.testing.assert_close(exported[k], mean[k], rtol=0, atol=1e-6)

    monkeypatch.setattr(sys, "argv", common + ["--export", str(out), "--average", "3"])
    with pytest.raises(SystemExit, match="only 2 weight snapshots"):
        train_lm.main()


def test_averaging_refuses_snapshots_of_different_models():
    from engine.train.snapshots import average_state_dicts

    a, b = {"w": torch.ones(2, 3)}, {"w": torch.zeros(2, 3)}
    assert torch.equal(average_state_dicts([a, b])["w"], torch.full((2, 3), 0.5))
    with pytest.raises(ValueError, match="different models"):
        average_state_dicts([a, {"w": torch.zeros(3, 2)}])
    with pytest.raises(ValueError, match="different models"):
        average_state_dicts([a, {"v": torch.zeros(2, 3)}])

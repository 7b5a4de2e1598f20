"""Pieces of the training recipe that must hold before any long run: corpus, codec, teachers."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from engine.audio import from_pcm16
from engine.codecs.mel import FSQ, MelAutoencoder, MelCodec, MelCodecConfig, Vocoder, save_codec
from engine.train.corpus import is_heldout, lines


def test_corpus_is_deterministic_normalised_and_split_by_text():
    train, again = lines(300, seed=1), lines(300, seed=1)
    heldout = lines(30, seed=1, heldout=True)
    assert train == again and len(train) == 300 and len(heldout) == 30
    assert not {raw for raw, _ in train} & {raw for raw, _ in heldout}
    assert all(is_heldout(raw) for raw, _ in heldout) and not any(is_heldout(raw) for raw, _ in train)
    assert not any(re.search(r"\d", norm) for _, norm in train)  # numbers are spelled out
    assert any(len(norm) < 15 for _, norm in train) and any(len(norm) > 100 for _, norm in train)


def test_broad_text_is_deterministic_plain_and_widens_the_vocabulary():
    pytest.importorskip("essential_generators", reason="comes with the train extra")
    from engine.text.tokenizer import make_tokenizer, spell
    from engine.train.corpus import BroadText

    broad = BroadText()
    first, again = broad.lines(200, seed=3), broad.lines(120, seed=3)
    assert len(first) == 200 and again == first[:120]  # a longer draw extends, never reshuffles
    assert not any(is_heldout(raw) for raw, _ in first)
    tok = make_tokenizer("phonemes", 128)
    for raw, norm in first:
        assert re.fullmatch(r"[A-Z][A-Za-z0-9' ,]*[a-z][.?!]", raw), raw  # no symbols, brackets or abbreviations
        assert not re.search(r"\d", norm) and len(spell(tok, norm)) > 4
    vocab = lambda pairs: {w for _, norm in pairs for w in re.findall(r"[a-z']+", norm.lower())}
    assert len(vocab(first)) > 2 * len(vocab(lines(200, seed=3)))


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


@pytest.fixture(scope="module")
def phonemes():
    from engine.text.tokenizer import make_tokenizer, spell

    return spell(make_tokenizer("phonemes", 128), "Well met, traveler! The bridge is out.")


def test_teachers_speak_our_phonemes_with_durations_that_add_up(phonemes):
    pytest.importorskip("onnxruntime", reason="the train extra is not installed (pip install -e '.[train]')")
    from engine.train.teachers import Kokoro, Piper, VoiceSpec

    for teacher, voice in [(Kokoro(1), VoiceSpec("blend", {"jf_alpha": 0.5, "jm_kumo": 0.5}, shift=1.06)),
                           (Piper(1), VoiceSpec("joe", piper=True))]:
        utt = teacher.synthesize(phonemes, voice)
        assert len(utt.durations) == len(phonemes) + 2  # each symbol, plus leading and trailing silence
        assert abs(utt.durations.sum() - len(utt.audio) / 24000) < 1e-3
        assert 1.0 < len(utt.audio) / 24000 < 6.0 and np.abs(utt.audio).max() > 0.05


def test_lm_examples_match_what_the_engine_feeds_back():
    from engine.models.speech_lm.config import ModelConfig
    from engine.train.lm_data import IGNORE, build_example, insertion_frames

    # Units start at 0.30, 0.31, 0.32 (a burst), 0.50 and 0.90 s; 25 frames/s, delay 2.
    durations = [0.30, 0.01, 0.01, 0.18, 0.40, 0.10, 0.30]
    fed = insertion_frames(durations, num_frames=30, frame_rate=25.0, delay=2)
    assert fed == [5, 6, 7, 10, 20]  # 2 frames early, one unit per frame, in order
    assert insertion_frames([0.0, 0.04, 0.04, 0.04, 0.0], num_frames=3, frame_rate=25.0, delay=2) == [0, 1, 2]
    with pytest.raises(ValueError):
        insertion_frames([0.0] + [0.01] * 5 + [0.0], num_frames=3, frame_rate=25.0, delay=0)

    cfg = ModelConfig(num_codebooks=8, advance=4, mark_delay_frames=2)
    ids = [10, 11, 12, 13, 14]
    codes = torch.randint(0, 256, (30, 8))
    frames, targets = build_example(cfg, [20, 21], torch.randint(0, 256, (6, 8)), ids, codes, durations, delay=2)
    prefix, prompt = 3 + 6, len(ids) + 1
    assert frames.shape == (prefix + prompt + 30, 9) and targets.shape == frames.shape
    speech = frames[prefix + prompt:]
    assert speech[fed, 0].tolist() == ids and (speech[:, 0] != cfg.text_pad).sum() == len(ids)
    assert torch.equal(speech[:, 1:], codes)
    assert (targets[: prefix + prompt - 1] == IGNORE).all()  # no loss on the prompt
    t0 = targets[prefix + prompt - 1:]
    assert [i for i, v in enumerate(t0[:, 0].tolist()) if v == cfg.advance] == fed  # advance predicts a fed unit
    assert t0[-1, 0] == cfg.eos and torch.equal(t0[:-1, 1:], codes)

    # A hold_units model: between arrivals each frame holds the unit last fed; the targets do not change.
    held_cfg = ModelConfig(num_codebooks=8, advance=4, mark_delay_frames=2, hold_units=True)
    held, held_targets = build_example(held_cfg, [20, 21], torch.randint(0, 256, (6, 8)), ids, codes, durations, 2)
    ch0 = held[prefix + prompt:, 0].tolist()
    assert ch0[:5] == [cfg.text_pad] * 5 and [ch0[f] for f in fed] == ids
    assert ch0[8:10] == [held_cfg.held(12)] * 2 and ch0[21:] == [held_cfg.held(14)] * 9
    assert torch.equal(held_targets[prefix + prompt - 1:], t0)


def _audio_shard(path, texts):
    """An audio shard as synth_data writes it, with noise bursts standing in for speech."""
    from engine.text.tokenizer import make_tokenizer, spell
    from engine.train.synth_data import save_shard

    tok, rng = make_tokenizer("phonemes", 128), np.random.default_rng(0)
    records, audio = [], []
    for i, text in enumerate(texts):
        symbols = spell(tok, text)
        pcm = (rng.standard_normal(12000 + 4800 * i) * 3000).astype(np.int16)
        per = len(pcm) / 24000 / (len(symbols) + 2)
        records.append({"text": text, "symbols": symbols, "voice": f"v{i % 2}", "speed": 1.0, "shift": 1.0,
                        "durations": [per] * (len(symbols) + 2), "samples": len(pcm)})
        audio.append(pcm)
    save_shard(path, records, audio)
    return records, audio


def test_token_store_keeps_what_the_lm_needs_and_refuses_another_encoder(tmp_path):
    from engine.text.tokenizer import make_tokenizer
    from engine.train.synth_data import load_shard
    from engine.train.token_store import load_token_shard, tokenise

    cfg = MelCodecConfig(dim=32, blocks=1, vocoder_dim=32, vocoder_blocks=1)
    torch.manual_seed(0)
    save_codec(tmp_path / "codec", cfg, MelAutoencoder(cfg), Vocoder(cfg))
    (tmp_path / "audio").mkdir()
    records, audio = _audio_shard(tmp_path / "audio" / "shard_00003.npz", ["Over here!", "Twelve gold, friend."])
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
    _audio_shard(tmp_path / "audio" / "shard_00000.npz", ["Over here!", "Twelve gold, friend."])
    common = ["train_codec", "--data", str(tmp_path / "audio"), "--work", str(tmp_path / "work")]
    for extra in (["--init", str(tmp_path / "shipped"), "--freeze-encoder", "--steps", "2", "--batch", "2",
                   "--seconds", "0.96", "--threads", "1"], ["--export", str(tmp_path / "out"), "--int8"]):
        monkeypatch.setattr(sys, "argv", common + extra)
        train_codec.main()
    before, after = MelCodec(tmp_path / "shipped"), MelCodec(tmp_path / "out")
    assert after.encoder_digest == before.encoder_digest
    old, new = load_weights(tmp_path / "shipped" / "codec.safetensors"), load_weights(tmp_path / "out" / "codec.safetensors")
    assert not torch.equal(old["ae.decoder.0.weight"], new["ae.decoder.0.weight"])
    assert not torch.equal(old["voc.inp.weight"], new["voc.inp.weight"])

    # --soup-decoder: the shipped codec with its decoder halfway to the one trained on from it.
    monkeypatch.setattr(sys, "argv", common + ["--export", str(tmp_path / "soup"), "--soup-decoder",
                                               str(tmp_path / "shipped")])
    train_codec.main()
    tuned = torch.load(tmp_path / "work" / "checkpoint.pt", weights_only=False)["ae"]
    soup = load_weights(tmp_path / "soup" / "codec.safetensors")
    assert MelCodec(tmp_path / "soup").encoder_digest == before.encoder_digest
    for k in ("decoder.0.weight", "decoder.1.conv1.weight", "decoder.1.norm.bias"):
        torch.testing.assert_close(soup[f"ae.{k}"], (old[f"ae.{k}"] + tuned[k]) / 2, rtol=0, atol=1e-7)
    assert torch.equal(soup["voc.inp.weight"], old["voc.inp.weight"])  # the vocoder is the shipped one
    save_codec(tmp_path / "other", cfg, MelAutoencoder(cfg), Vocoder(cfg), int8=True)
    monkeypatch.setattr(sys, "argv", common + ["--export", str(tmp_path / "soup"), "--soup-decoder",
                                               str(tmp_path / "other")])
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
    _audio_shard(tmp_path / "audio" / "shard_00000.npz", ["Over here!", "Yes, friend.", "Hold the gate.", "Run!"])
    tokenise(lm_dir, tmp_path / "audio", tmp_path / "tokens")
    shard = tmp_path / "tokens" / "shard_00000.npz"

    # Frame j's latent is the expected latent of the prediction made where frame j-1 is the
    # last input (the prompt's speech_start for j = 0): the model run on a cut sequence agrees.
    latents = lm_latents(lm_dir, [shard], [shard], temperature=0.7)["shard_00000.npz"]
    model, codec = load_model(lm_dir), MelCodec(lm_dir)
    lines = load_token_shard(shard)
    assert [len(x) for x in latents] == [len(r["codes"]) for r in lines]  # every line could be laid out
    line, ref = lines[3], lines[1]  # voices alternate, so line 3 is prompted by line 1
    frames, _ = build_example(model.cfg, ref["ids"], ref["codes"], line["ids"], line["codes"], line["durations"],
                              model.cfg.mark_delay_frames)
    prompt = len(frames) - len(line["codes"])
    for j in (0, 5, len(line["codes"]) - 1):
        with torch.inference_mode():
            cut = frames[: prompt + j]
            hidden = model(cut[None], torch.arange(len(cut))[None])[0, -1:]
            probs = (model.logits(hidden)[:, 1:, :256] / 0.7).softmax(-1)
        torch.testing.assert_close(latents[3][j].float(), codec.expected_latent(probs)[0], atol=2e-3, rtol=0)

    common = ["train_codec", "--data", str(tmp_path / "audio"), "--work", str(tmp_path / "work")]
    for extra in (["--init", str(lm_dir), "--lm", str(lm_dir), "--tokens", str(tmp_path / "tokens"), "--steps", "2",
                   "--batch", "2", "--seconds", "0.32", "--threads", "1", "--gan-weight", "0.1"],
                  ["--export", str(tmp_path / "out")]):
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


def test_discriminators_learn_to_tell_a_voice_like_tone_from_noise():
    """A few steps of the vocoder's adversaries on real = harmonic tones, fake = noise of the
    same loudness: their loss falls, and they score the tones higher than the noise."""
    from engine.train.discriminators import Discriminators, discriminator_loss, generator_loss

    torch.manual_seed(0)
    disc = Discriminators(periods=(2, 5), resolutions=((256, 64),))
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    t = torch.arange(4800) / 24000

    def batch():
        f0 = 120 + 200 * torch.rand(4, 1)
        tone = sum(torch.sin(2 * torch.pi * k * f0 * t + torch.rand(4, 1) * 6) / k for k in range(1, 6)) * 0.1
        return tone, torch.randn(4, 4800) * tone.std()

    losses = []
    for _ in range(60):
        real, fake = batch()
        loss = discriminator_loss(disc(real)[0], disc(fake)[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    real, fake = batch()
    with torch.no_grad():
        assert generator_loss(disc(fake)[0]) > generator_loss(disc(real)[0])


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


def test_drop_audio_blanks_only_generated_inputs():
    from engine.train.lm_data import IGNORE
    from engine.train.train_lm import drop_audio

    frames = torch.randint(0, 256, (4, 50, 9))
    targets = torch.full_like(frames, IGNORE)
    targets[:, 19:39] = 7  # speech_start at 19 and frames 20..38 predict; frames 20..39 are speech inputs
    out = drop_audio(frames, targets, 0.5, 256, torch.Generator().manual_seed(0))
    blank = (out[..., 1:] == 256).all(-1)
    assert torch.equal(out[..., 0], frames[..., 0])  # the text channel is never touched
    assert not blank[:, :20].any() and not blank[:, 40:].any()
    assert 0.3 < blank[:, 20:40].float().mean() < 0.7
    kept = ~blank
    assert torch.equal(out[kept], frames[kept])


def test_self_feed_puts_the_models_own_draw_for_each_frame_in_its_place():
    from engine.models.speech_lm.config import ModelConfig
    from engine.models.speech_lm.model import SpeechLM
    from engine.train.lm_data import IGNORE
    from engine.train.train_lm import self_feed

    torch.manual_seed(0)
    cfg = ModelConfig(dim=64, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=128, num_codebooks=8, advance=4)
    model = SpeechLM(cfg).train()
    frames = torch.randint(0, 256, (3, 50, 9))
    frames[..., 0] = torch.randint(0, 100, (3, 50))
    targets = torch.full_like(frames, IGNORE)
    targets[:, 19:39] = 7  # frames 20..39 are speech inputs
    # A temperature near zero makes every draw the argmax, which the test can work out itself.
    out = self_feed(model, frames, targets, 1.0, 1e-4, torch.Generator().manual_seed(0))
    assert model.training  # dropout back on for the step that follows
    with torch.no_grad():
        hidden = model.eval()(frames, torch.arange(50).expand(3, 50))
        best = torch.stack([head(hidden).argmax(-1) for head in model.heads[1:]], dim=-1)
    assert torch.equal(out[:, 20:40, 1:], best[:, 19:39])  # the draw at t is fed at t + 1
    assert torch.equal(out[:, :20], frames[:, :20]) and torch.equal(out[:, 40:], frames[:, 40:])
    assert torch.equal(out[..., 0], frames[..., 0])  # the text channel is the teacher's
    half = self_feed(model.train(), frames, targets, 0.5, 1.0, torch.Generator().manual_seed(1))
    swapped = (half[:, 20:40, 1:] != frames[:, 20:40, 1:]).any(-1).float().mean()
    assert 0.3 < swapped < 0.7
    assert self_feed(model, frames, targets, 0.0, 0.5, torch.Generator()) is frames


def test_wer_scoring_normalises_like_our_text():
    from engine.eval import edit_distance, join_compounds, words

    truth = words("The caravan leaves at twelve thirty. Guard Eastmarch for seventy-two dollars!")
    hyp = join_compounds(words("The caravan leaves at 12.30, guard East March for 72$."), truth)
    assert edit_distance(truth, hyp) == 0
    assert edit_distance(words("a b c d"), words("a x c")) == 2  # one substitution, one deletion
    assert join_compounds(["the", "east"], ["the", "east"]) == ["the", "east"]  # real words stay apart


def test_several_seeds_pool_into_one_result_that_keeps_each_seeds_figures():
    """eval --seeds N: wer over every word of every seed, means of the rest, closest references
    summed. score() is fed by a fixed judge (the pooling is under test, not whisper)."""
    from engine.eval import pool, score

    class FixedJudge:
        def __init__(self, heard):
            self.heard = heard  # what each output is heard as, in order

        def transcribe(self, audio):
            return self.heard.pop(0)

        def embed(self, audio):  # the output's first sample says which voice it sounds like
            return np.eye(2)[int(audio[0])] + 0.1

    voices = {"a": [{"audio": np.zeros(10)}, {"text": "hold the gate", "audio": np.zeros(10)}],
              "b": [{"audio": np.ones(10)}, {"text": "run", "audio": np.ones(10)}]}
    first = {**score(voices, {"a": [np.zeros(20)], "b": [np.ones(10)]}, FixedJudge(["hold the gate", "run"])),
             "rtf": 0.1}
    second = {**score(voices, {"a": [np.ones(10)], "b": [np.ones(10)]}, FixedJudge(["hold a gate", "fun"])),
              "rtf": 0.3}
    assert (first["wer"], first["id_accuracy"]) == (0.0, 1.0)
    assert (second["wer"], second["id_accuracy"]) == (0.5, 0.5)
    both = pool([first, second], [4, 5])
    assert both["wer"] == 2 / 8 and both["id_accuracy"] == 0.75 and both["rtf"] == pytest.approx(0.2)
    assert both["utterances"] == 4 and [x["seed"] for x in both["lines"]] == [4, 4, 5, 5]
    assert both["per_voice"]["a"]["closest_reference"] == {"a": 1, "b": 1}
    assert both["per_voice"]["a"]["wer"] == round(1 / 6, 4) and both["per_voice"]["b"]["wer"] == 0.5
    assert both["duration_ratio"] == pytest.approx((1.5 + 1.0) / 2)
    assert [(x["seed"], x["wer"]) for x in both["per_seed"]] == [(4, 0.0), (5, 0.5)]


def test_lm_training_keeps_its_last_snapshots_and_exports_their_mean(tmp_path, monkeypatch):
    """train_lm keeps the weights of its last --keep saves; --export --average N writes their
    element-wise mean (checked on the float32 norm weights, which export stores unquantised)."""
    import shutil
    import sys

    from engine.train import train_lm
    from engine.train.snapshots import average_state_dicts, snapshots
    from engine.train.token_store import tokenise
    from engine.weights import load_weights

    torch.manual_seed(0)
    cfg = MelCodecConfig()
    codec_dir, work, out = tmp_path / "codec", tmp_path / "work", tmp_path / "out"
    save_codec(codec_dir, cfg, MelAutoencoder(cfg), Vocoder(cfg), int8=True)
    (tmp_path / "audio").mkdir()
    _audio_shard(tmp_path / "audio" / "shard_00000.npz", ["Over here!", "Yes, friend.", "Hold the gate.", "Run!"])
    tokenise(codec_dir, tmp_path / "audio", tmp_path / "tokens" / "train")
    shutil.copytree(codec_dir, out)

    common = ["train_lm", "--tokens", str(tmp_path / "tokens"), "--work", str(work), "--codec", str(codec_dir),
              "--dim", "64", "--layers", "1", "--threads", "1"]
    monkeypatch.setattr(sys, "argv", common + ["--steps", "4", "--batch", "2", "--save-every", "1", "--keep", "2"])
    train_lm.main()
    kept = snapshots(work)
    assert [step for step, _ in kept] == [3, 4]  # steps 1 and 2 were pruned
    states = [torch.load(p, weights_only=True) for _, p in kept]

    monkeypatch.setattr(sys, "argv", common + ["--export", str(out), "--average", "2"])
    train_lm.main()
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

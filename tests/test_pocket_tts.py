"""Our pocket-tts modules (engine/models/pocket_tts) against the reference package, float32 CPU.

Each config gets one random-weight checkpoint folder (tests/pocket_reference.py), loaded by both
sides. The reference draws its sampling noise from torch's global RNG inside FlowLMModel.forward;
`injected_noise` replaces those draws with a list we also feed to our head, so both sides sample
with the same noise. Reference calls run under fork_rng so the suite's global RNG is untouched.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

from engine.models.pocket_tts.backbone import Backbone, DenseKV
from engine.models.pocket_tts.config import detect, load_config
from engine.models.pocket_tts.generate import generate_chunk, max_frames, prefill_voice, scaled_noise
from engine.models.pocket_tts.mimi import DecoderState
from engine.models.pocket_tts.model import PocketTTS, load_model
from engine.models.pocket_tts.text import Tokenizer, chunk_text, normalize, split_sentences
from engine.models.pocket_tts.voice import trim_voice, voice_latents
from engine.packed import can_pack, pack_for_cpu
from engine.runtime.attention import PagedAttention
from tests import pocket_reference as pr

pytestmark = pytest.mark.skipif(find_spec("pocket_tts") is None, reason="needs the reference: pip install .[test]")

# The two required configs, plus the 7m (drifting head, 2 KV heads, rank-64 text table, 12-layer
# decoder transformer) and 2026-01 (no bos_before_voice, 512-wide voice latents, space padding).
CONFIGS = [pr.DEFAULT_CONFIG, pr.SMALL_CONFIG, "english_7m_2026-10", "english_2026-01"]
TEXTS = [
    "Hello world.",
    "hello there traveler",
    "  We need numbers like 3.14 and 42; also colons: yes  ",
    "\u201cWelcome back, hero\u2026\u201d \u2013 the village is safe again! Is this the right way to the old castle?",
    "The quick brown fox jumps over the lazy dog, the quick brown fox jumps over the lazy dog, "
    "the quick brown fox jumps over the lazy dog. I am a tiny tokenizer trained for tests!",
]


@dataclass
class Pair:
    folder: Path
    ref: object  # pocket_tts.TTSModel
    ours: PocketTTS


@pytest.fixture(scope="module", params=CONFIGS)
def pair(request, tmp_path_factory):
    with torch.random.fork_rng(devices=[]):  # the reference initialises from the global RNG
        config = pr.build_checkpoint(request.param, tmp_path_factory.mktemp(request.param))
        ref = pr.load_reference(config)
    yield Pair(config.parent, ref, load_model(config.parent))


@pytest.fixture(autouse=True)
def _no_grad_and_threads_kept():
    """Importing pocket_tts sets torch's thread count to 1: pr.reference() puts it back, and the
    rest of the suite must not run on one thread because of this file."""
    threads = torch.get_num_threads()
    with torch.no_grad():
        yield
    assert torch.get_num_threads() == threads


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


def noise_list(n: int, temp: float, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 32, generator=g) * math.sqrt(temp) for _ in range(n)]


@contextmanager
def injected_noise(draws: list[torch.Tensor]):
    """The reference's noise draws (torch.nn.init.normal_ in FlowLMModel.forward, one per call,
    prefills included) return draws[0], draws[1], ... in order; yields the count taken."""
    original, taken = torch.nn.init.normal_, [0]

    def fake(t, mean=0.0, std=1.0, generator=None):
        t.copy_(draws[taken[0]].view_as(t))
        taken[0] += 1
        return t

    torch.nn.init.normal_ = fake
    try:
        with torch.random.fork_rng(devices=[]):
            yield taken
    finally:
        torch.nn.init.normal_ = original


def capture_eos_inputs(ref) -> tuple[list, object]:
    """(list of (cond, eos logit) per reference FlowLM call, hook handle)."""
    seen: list = []
    hook = ref.flow_lm.out_eos.register_forward_hook(lambda mod, i, o: seen.append((i[0].clone(), o.clone())))
    return seen, hook


# ---- text


def test_tokens_chunks_and_normalisation_match_exactly(pair):
    from pocket_tts.models.text_chunking import prepare_text_prompt, split_into_best_sentences

    ref, ours, rules = pair.ref, pair.ours, pair.ours.rules
    ref_tok = ref.flow_lm.conditioner.tokenizer
    flags = (ref.pad_with_spaces_for_short_inputs, ref.remove_semicolons, ref.append_terminal_punctuation)
    flags += (ref.capitalize_first_letter, ref.replace_characters)
    for text in TEXTS:
        assert ours.tokenizer.encode(text) == ref_tok.encode(text)
        assert normalize(text, rules) == prepare_text_prompt(text, *flags)
        for max_tokens in (50, 12, 4):  # small caps force clause splits and packing
            expected = split_into_best_sentences(ref_tok, text, max_tokens, *flags)
            assert split_sentences(ours.tokenizer, text, rules, max_tokens) == expected
        for chunk, piece in zip(
            chunk_text(ours.tokenizer, text, rules), split_into_best_sentences(ref_tok, text, 50, *flags)
        ):
            spoken, guess = prepare_text_prompt(piece, *flags)
            assert (chunk.text, chunk.frames_after_eos) == (spoken, guess + 2)
            assert chunk.tokens == ref.flow_lm.conditioner.prepare(spoken)[0].tolist()


# ---- voice registration and prefill


def test_voice_latents_prefix_and_kv_after_voice_prefill(pair):
    from pocket_tts.data.audio_utils import end_on_pause

    ref, ours = pair.ref, pair.ours
    wav = pr.random_voice(2.8, seed=1)  # over 2.5 s: the encoder transformer runs in two chunks
    wav[:, -6000:] *= 1e-3  # a quiet tail that the trimming must cut
    trimmed = end_on_pause(wav, pr.SAMPLE_RATE)
    assert diff(trim_voice(wav, pr.SAMPLE_RATE), trimmed) == 0.0
    latents = voice_latents(ours.encoder, wav)
    assert diff(latents, ref.mimi.encode_to_latent(trimmed.unsqueeze(0))) <= 1e-5
    prefix = ours.backbone.embed_voice(latents)
    ref_prefix = ref._encode_audio(trimmed.unsqueeze(0))
    if ref.flow_lm.insert_bos_before_voice:
        ref_prefix = torch.cat([ref.flow_lm.bos_before_voice, ref_prefix], dim=1)
    assert diff(prefix, ref_prefix) <= 1e-5
    seen, hook = capture_eos_inputs(ref)
    with injected_noise(noise_list(1, ref.temp, 0)):
        state = ref.get_state_for_audio_prompt(wav)
    hook.remove()
    kv = DenseKV()
    hidden = ours.backbone(prefix, torch.arange(prefix.shape[1])[None], cache=kv)
    for i in range(ours.backbone.n_layers):
        cache = state[f"transformer.layers.{i}.self_attn"]["cache"]
        assert diff(kv.k[i], cache[0]) <= 1e-5 and diff(kv.v[i], cache[1]) <= 1e-5
    assert diff(ours.backbone.cond(hidden[:, -1]), seen[0][0]) <= 1e-5  # the last position's output


# ---- the autoregressive step


def test_teacher_forced_steps_give_the_same_latents_and_eos_logits(pair):
    ref, ours, bb = pair.ref, pair.ours, pair.ours.backbone
    wav, steps = pr.random_voice(1.2, seed=2), 8
    noise = noise_list(steps + 2, ref.temp, seed=3)
    inputs = [torch.full((1, 1, 32), float("nan"))] + [torch.randn(1, 1, 32) for _ in range(steps - 1)]
    tokens = ref.flow_lm.conditioner.prepare("Hello there, traveler.")
    seen, hook = capture_eos_inputs(ref)
    with injected_noise(noise) as taken:
        state = ref.get_state_for_audio_prompt(wav)
        taken[0] = 0  # from here, draw k is ours too
        end = ref._flow_lm_current_end(state)
        ref._expand_kv_cache(state, end + tokens.shape[1] + steps)
        ref._run_flow_lm_and_increment_step(model_state=state, text_tokens=tokens)
        ref_out = [ref._run_flow_lm_and_increment_step(model_state=state, backbone_input_latents=x) for x in inputs]
    hook.remove()
    kv = prefill_voice(ours, bb.embed_voice(voice_latents(ours.encoder, wav)))
    assert kv.length == end
    bb(bb.embed_text(tokens), end + torch.arange(tokens.shape[1])[None], cache=kv)
    worst = {"latent": 0.0, "cond": 0.0, "eos": 0.0}
    for k, (x, (ref_latent, ref_is_eos)) in enumerate(zip(inputs, ref_out)):
        z = bb.cond(bb(bb.embed_latents(x), torch.tensor([[kv.length]]), cache=kv)[:, -1])
        latent = ours.head.sample(z, noise[k + 1])
        ref_cond, ref_logit = seen[2 + k]
        worst["latent"] = max(worst["latent"], diff(latent, ref_latent[:, 0]))
        worst["cond"] = max(worst["cond"], diff(z, ref_cond))
        worst["eos"] = max(worst["eos"], diff(bb.eos_logit(z), ref_logit[:, 0]))
    assert max(worst.values()) <= 1e-4, worst


# ---- Mimi decoder


def test_mimi_streams_like_the_reference_one_or_several_frames_per_call(pair):
    from pocket_tts.modules.stateful_module import increment_steps, init_states

    ref, dec = pair.ref, pair.ours.decoder
    latents = torch.randn(1, 9, 32, generator=torch.Generator().manual_seed(4))
    mimi_state = init_states(ref.mimi, batch_size=1, sequence_length=16 * 9)
    expected = []
    for i in range(9):
        x = latents[:, i : i + 1] * ref.flow_lm.emb_std + ref.flow_lm.emb_mean
        expected.append(ref.mimi.decode_from_latent(x, mimi_state)[:, 0])
        increment_steps(ref.mimi, mimi_state, increment=16)
    expected = torch.cat(expected, dim=-1)
    for splits in ([1] * 9, [3, 3, 3], [2, 4, 1, 2], [9]):
        state, bounds = dec.init_state(1), torch.tensor([0] + splits).cumsum(0).tolist()
        audio = torch.cat([dec(latents[:, a:b], state, fade_in=False) for a, b in zip(bounds, bounds[1:])], dim=-1)
        assert diff(audio, expected) <= 1e-5, splits


# ---- a whole utterance


def test_free_running_utterance_matches_the_reference_loop(pair):
    ref, ours = pair.ref, pair.ours
    wav, text = pr.random_voice(1.2, seed=5), "Hello world!"
    noise = noise_list(200, ref.temp, seed=6)
    with torch.random.fork_rng(devices=[]):
        state = ref.get_state_for_audio_prompt(wav)
    ref_latents: list[torch.Tensor] = []
    hook = ref.flow_lm.register_forward_hook(lambda mod, i, o: ref_latents.append(o[0].clone()))
    with injected_noise(noise):  # draw 0: the text prefill; draw 1 + k: step k
        ref_audio = ref.generate_audio(state, text)
    hook.remove()
    (chunk,) = chunk_text(ours.tokenizer, text, ours.rules)
    kv = prefill_voice(ours, ours.backbone.embed_voice(voice_latents(ours.encoder, wav)))
    got = generate_chunk(ours, kv, chunk, lambda k: noise[1 + k])
    frames = got.latents.shape[0]
    assert ref_audio.shape[0] == frames * ours.frame_size  # the same stop frame
    assert frames < max_frames(len(chunk.tokens))  # ... reached by EOS, not by the length cap
    assert diff(got.latents, torch.cat(ref_latents[1 : 1 + frames])) <= 1e-4
    assert diff(got.audio, ref_audio) <= 1e-4


# ---- the engine's view: paged attention, batches of streams


class TinyPool:
    """A paged KV pool built by hand: stream s owns blocks [s * n, (s + 1) * n). The metadata is
    what engine.runtime.model_runner builds (without shared-prefix groups)."""

    def __init__(self, bb: Backbone, streams: int, blocks: int = 8, block_size: int = 16):
        shape = (bb.n_layers, streams * blocks, block_size, bb.n_kv_heads, bb.head_dim)
        self.k, self.v = torch.zeros(shape), torch.zeros(shape)
        self.buf = torch.empty(streams * blocks, block_size * bb.n_kv_heads * bb.head_dim)
        self.tables = [list(range(s * blocks, (s + 1) * blocks)) for s in range(streams)]
        self.bs = block_size

    def meta(self, streams: list[int], starts: list[int], lens: list[int]) -> tuple[PagedAttention, torch.Tensor]:
        B, T, bs = len(streams), max(lens), self.bs
        tables = torch.tensor([self.tables[s] for s in streams])
        steps = torch.arange(T)
        positions = torch.tensor(starts)[:, None] + steps
        valid = steps[None, :] < torch.tensor(lens)[:, None]
        rows, pos = torch.arange(B)[:, None].expand(B, T)[valid], positions[valid]
        mask = torch.arange(tables.shape[1] * bs)[None, None, :] <= positions[:, :, None]
        mask &= valid[:, :, None]
        mask[:, :, 0] |= ~valid  # padded queries attend to key 0 only
        paged = PagedAttention(
            k_cache=self.k,
            v_cache=self.v,
            k_buf=self.buf,
            v_buf=self.buf.clone(),
            rows=None if T == 1 else valid.flatten().nonzero().squeeze(1),
            slots=tables[rows, pos // bs] * bs + pos % bs,
            block_tables=tables,
            mask=torch.zeros(mask.shape).masked_fill_(~mask, float("-inf"))[:, None],
            run=self.tables[streams[0]][0] if B == 1 else None,
        )
        return paged, torch.where(valid, positions, 0)


def test_paged_backbone_equals_the_dense_path(pair):
    bb = pair.ours.backbone
    g = torch.Generator().manual_seed(7)
    prefix = bb.embed_voice(torch.randn(1, 20, bb.speaker_proj.in_features, generator=g))
    text = bb.embed_text(torch.randint(0, 4000, (1, 9), generator=g))
    steps = [bb.embed_latents(torch.randn(1, 1, 32, generator=g)) for _ in range(4)]
    kv, pool = DenseKV(), TinyPool(bb, 1)
    start = 0
    for x in [prefix, text, *steps]:  # prefill in two calls, then decode steps
        n = x.shape[1]
        dense = bb(x, start + torch.arange(n)[None], cache=kv)
        paged, positions = pool.meta([0], [start], [n])
        assert diff(bb(x, positions, paged=paged), dense) <= 1e-5
        start += n
    whole = torch.cat([prefix, text, *steps], dim=1)  # and the cache-less path over the whole sequence
    full = bb(whole, torch.arange(whole.shape[1])[None])
    assert diff(full[:, -1], dense[:, -1]) <= 1e-5
    # Two prompts prefilled in one padded forward, as the engine batches prefills.
    pool, short = TinyPool(bb, 2), whole[:, :17]
    x = torch.cat([whole, torch.cat([short, torch.zeros_like(whole[:, 17:])], dim=1)])
    paged, positions = pool.meta([0, 1], [0, 0], [whole.shape[1], 17])
    both = bb(x, positions, paged=paged)
    assert diff(both[0], full[0]) <= 1e-5 and diff(both[1, :17], full[0, :17]) <= 1e-5


@contextmanager
def threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_streams(model: PocketTTS, streams: list[dict], steps: int, together: bool) -> list[dict]:
    """`steps` frames of each stream, run as the engine runs them: stream s arrives at call s, its
    prompt (voice prefix + text) is prefilled in a forward of its own, then one decode forward runs
    every started stream (so the decoder batch mixes positions), each row with its own noise
    generator and decoder state. `together=False`: each stream alone."""
    if not together:
        return [run_streams(model, [s], steps, True)[0] for s in streams]
    bb, pool, n = model.backbone, TinyPool(model.backbone, len(streams)), len(streams)
    out = [{"z": [], "latent": [], "audio": []} for _ in streams]
    gens = [torch.Generator().manual_seed(s["seed"]) for s in streams]
    states = [model.decoder.init_state(1) for _ in streams]
    last, lens = [torch.full((1, 32), float("nan"))] * n, [0] * n
    for call in range(steps + n - 1):
        if call < n:
            st = streams[call]
            prompt = torch.cat([st["prefix"], bb.embed_text(torch.tensor([st["tokens"]]))], dim=1)
            lens[call] = prompt.shape[1]
            bb(prompt, *reversed(pool.meta([call], [0], [lens[call]])))
        rows = [s for s in range(n) if 0 <= call - s < steps]
        x = bb.embed_latents(torch.stack([last[s] for s in rows]))
        paged, positions = pool.meta(rows, [lens[s] + call - s for s in rows], [1] * len(rows))
        with threads(1):  # the engine's decode thread count (EngineConfig.num_threads or 1)
            z = bb.cond(bb(x, positions, paged=paged)[:, 0])
        latent = model.head.sample(z, scaled_noise([gens[s] for s in rows], 0.3, 32))
        state = DecoderState.stack([states[s] for s in rows])
        audio = model.decoder(latent[:, None], state)
        for j, (s, st) in enumerate(zip(rows, state.split())):
            states[s], last[s] = st, latent[j : j + 1]
            for key, val in (("z", z[j]), ("latent", latent[j]), ("audio", audio[j])):
                out[s][key].append(val)
    return [{k: torch.stack(v) for k, v in o.items()} for o in out]


@pytest.mark.skipif(not can_pack(torch.device("cpu"), torch.float32), reason="no oneDNN in this torch")
def test_a_batch_of_streams_equals_each_stream_alone(pair):
    """On CPU the engine packs every nn.Linear and stride-1 nn.Conv1d for oneDNN (engine.packed),
    which gives a row the same bits alone or batched (MKL's float32 linear does not: one row and
    two rows take different kernels, about 2e-6 apart on `english` after six layers)."""
    packed, plain = load_model(pair.folder, with_encoder=False), pair.ours
    for part in (packed.backbone, packed.head, packed.decoder):
        assert pack_for_cpu(part) > 0
    streams = []
    for seed, text in ((8, "Hello there."), (9, "The quick brown fox jumps!")):
        prefix = plain.backbone.embed_voice(voice_latents(plain.encoder, pr.random_voice(1.0 + seed / 10, seed)))
        streams.append({"prefix": prefix, "tokens": plain.tokenizer.encode(text), "seed": seed})
    batched, alone = run_streams(packed, streams, 4, True), run_streams(packed, streams, 4, False)
    unpacked = run_streams(plain, streams, 4, False)
    for b, a, u in zip(batched, alone, unpacked):
        for key in ("z", "latent", "audio"):
            assert diff(b[key], a[key]) <= 1e-6, key
            assert diff(a[key], u[key]) <= 1e-4, key  # packing changes rounding only


# ---- config


def test_config_paths_resolve_against_the_folder_and_hub_files_are_looked_for_there(pair, tmp_path):
    import yaml

    raw = yaml.safe_load((pair.folder / "config.yaml").read_text())
    for name in ("model.safetensors", Path(raw["flow_lm"]["lookup_table"]["tokenizer_path"]).name):
        (tmp_path / name).symlink_to(pair.folder / name)
    raw["weights_path"] = "model.safetensors"
    raw["flow_lm"]["lookup_table"]["tokenizer_path"] = Path(raw["flow_lm"]["lookup_table"]["tokenizer_path"]).name
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    assert detect(tmp_path) and not detect(tmp_path / "missing")
    cfg = load_config(tmp_path)
    assert cfg.weights_path == tmp_path.resolve() / "model.safetensors"
    assert cfg.flow_lm.lookup_table.tokenizer_path.parent == tmp_path.resolve()
    # The package's own config names hub files: the downloaded file beside config.yaml is used,
    # and a missing one is asked for, never fetched.
    raw["weights_path"] = "hf://kyutai/pocket-tts/languages/english/model.safetensors@db04f0e6"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    assert load_config(tmp_path).weights_path.name == "model.safetensors"
    raw["weights_path"] = "hf://kyutai/pocket-tts/languages/english/tts_other.safetensors@db04f0e6"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="tts_other.safetensors is not in .*Download the file"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "name, kv_heads, z_dim, rank, flow, dec_layers, voice_dim",
    [
        ("english_7m_2026-10", 2, 64, 64, "drifting", 12, 32),
        ("english_18m_2026-10", 8, 64, None, "drifting", 12, 32),
        ("english_2026-01", 16, None, None, "lsd", 2, 512),  # voices condition on 512-wide latents
    ],
)
def test_other_shipped_configs_parse(tmp_path, name, kv_heads, z_dim, rank, flow, dec_layers, voice_dim):
    import yaml

    pr.reference()  # (imports pocket_tts, keeping the thread count)
    from pocket_tts.utils.config import CONFIGS_DIR

    raw = yaml.safe_load((CONFIGS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    raw["weights_path"], raw["flow_lm"]["lookup_table"]["tokenizer_path"] = "model.safetensors", "tok.model"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    cfg = load_config(tmp_path)
    assert (cfg.flow_lm.transformer.kv_heads, cfg.flow_lm.z_dim, cfg.flow_lm.lookup_table.rank) == (
        kv_heads,
        z_dim,
        rank,
    )
    assert (cfg.flow_lm.flow.type, cfg.mimi.dec_transformer.num_layers, cfg.mimi.voice_dim) == (
        flow,
        dec_layers,
        voice_dim,
    )


def test_the_benchmark_tokenizer_learns_every_id_and_counts_tokens_like_a_real_one(tmp_path):
    """`python -m tests.pocket_reference DIR` (the folder engine.bench times) learns all 4,000 ids
    from English text, so a line prefills about as many positions as a real checkpoint's tokenizer
    would, not one per character; its tokenizer.json and SentencePiece twins agree."""
    from engine.bench import LINE
    from engine.models.pocket_tts.config import TextTableConfig

    text = pr.english_text()
    toks = {
        kind: Tokenizer(TextTableConfig(1024, 4000, kind, pr.write_tokenizer(kind, 4000, tmp_path, text)))
        for kind in ("tokenizers", "sentencepiece")
    }
    lines = [LINE, *TEXTS, "Halt! Who goes there?", "I can sell you three potions for 40 gold."]
    for line in lines:
        assert toks["tokenizers"].encode(line) == toks["sentencepiece"].encode(line), line
    ids = toks["tokenizers"].encode(LINE)
    assert len(ids) <= 1.6 * len(LINE.split()), ids  # 10 words: the tests' 64-piece table makes 43 tokens
    tok = toks["tokenizers"]
    words = sum(len(t.split()) for t in text[:2000])
    pieces = sum(len(tok.encode(t)) for t in text[:2000])
    assert pieces / words < 2  # 1.7 measured: more than a real 4,000-piece English table, if anything
    assert len({i for t in text for i in tok.encode(t)}) > 3000  # learned pieces, not filler symbols

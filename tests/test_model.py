"""The paged attention path must compute exactly what plain causal attention computes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from engine.config import CacheConfig, SamplingParams
from engine.models.speech_lm.config import ModelConfig
from engine.models.speech_lm.model import CONFIG_FILE, load_model
from engine.packed import Int8Linear, PackedConv1d, PackedLinear, can_pack, int8_rows, native_bf16, pack_for_cpu
from engine.runtime.block_manager import BlockManager
from engine.runtime.model_runner import ModelRunner
from engine.runtime.sequence import Sequence


def random_frames(cfg: ModelConfig, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(8, cfg.text_vocab, (n, 1), generator=g)
    audio = torch.randint(0, cfg.codebook_size, (n, cfg.num_codebooks), generator=g)
    return torch.cat([text, audio], 1)


def run(runner: ModelRunner, items) -> torch.Tensor:
    """The runner's hidden states at each item's last frame, as logits."""
    return runner.model.logits(runner.forward(items))


def dense_logits(model, frames: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        hidden = model(frames[None], torch.arange(len(frames))[None])
        return model.logits(hidden[0])


@pytest.fixture(scope="module")
def setup(model_dir):
    model = load_model(model_dir)
    runner = ModelRunner(model, CacheConfig(block_size=16, num_blocks=64), torch.device("cpu"), torch.float32)
    return model, runner, BlockManager(runner.num_blocks, 16, runner.copy_rows)


def test_chunked_prefill_then_decode_matches_dense_attention(setup):
    model, runner, blocks = setup
    frames = random_frames(model.cfg, 53, seed=1)
    ref = dense_logits(model, frames)
    seq = Sequence(frames[:30], 0, b"", SamplingParams(), 40, 0)
    assert blocks.allocate(seq)
    got = []
    with torch.inference_mode():
        for start, n in [(0, 17), (17, 13)]:  # a prefill split across a block border
            got.append(run(runner, [(seq, start, n)])[0])
        for i in range(30, 53):  # then one frame at a time, as decoding does
            seq.append(frames[i])
            if blocks.needs_block(seq):
                assert blocks.append_block(seq)
            got.append(run(runner, [(seq, i, 1)])[0])
    expected = torch.stack([ref[16], ref[29]] + [ref[i] for i in range(30, 53)])
    torch.testing.assert_close(torch.stack(got), expected, atol=1e-4, rtol=1e-4)
    blocks.free(seq)
    assert blocks.num_free == blocks.num_blocks


def test_padded_batch_matches_each_sequence_alone(setup):
    model, runner, blocks = setup
    lengths = [5, 40, 17]
    seqs = [Sequence(random_frames(model.cfg, n, seed=n), 0, b"", SamplingParams(), 8, 0) for n in lengths]
    for s in seqs:
        assert blocks.allocate(s)
    with torch.inference_mode():
        batched = run(runner, [(s, 0, len(s)) for s in seqs])
    for s, row in zip(seqs, batched):
        torch.testing.assert_close(row, dense_logits(model, s.tokens)[-1], atol=1e-4, rtol=1e-4)
        blocks.free(s)


def test_logits_mask_vocab_beyond_each_channel(setup):
    model, _, _ = setup
    logits = dense_logits(model, random_frames(model.cfg, 3, seed=2))
    assert torch.isinf(logits[:, 0, model.cfg.text_vocab :]).all()
    assert torch.isfinite(logits[:, 1, : model.cfg.codebook_size + 1]).all()


def test_fused_tables_and_heads_compute_what_the_per_channel_ones_do(model_dir):
    plain, fused = load_model(model_dir), load_model(model_dir)
    fused.fuse_for_inference()
    frames = random_frames(plain.cfg, 20, seed=3)
    a, b = dense_logits(plain, frames), dense_logits(fused, frames)
    assert torch.equal(torch.isinf(a), torch.isinf(b))  # the same -inf past each channel's vocabulary
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)  # (the nine embeddings are summed in another order)


def test_config_rejects_unknown_keys(model_dir, tmp_path):
    raw = json.loads((model_dir / CONFIG_FILE).read_text())
    raw["n_experts"] = 8
    (tmp_path / CONFIG_FILE).write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="n_experts"):
        ModelConfig.load(tmp_path / CONFIG_FILE)


def test_weights_round_trip_through_safetensors(model_dir):
    a, b = load_model(model_dir), load_model(model_dir)
    frames = random_frames(a.cfg, 9, seed=3)
    torch.testing.assert_close(dense_logits(a, frames), dense_logits(b, frames), atol=0, rtol=0)
    assert a.cfg.dim == 128 and a.cfg.n_kv_heads < a.cfg.n_heads  # the test model really is GQA


needs_onednn = pytest.mark.skipif(not can_pack(torch.device("cpu"), torch.float32), reason="no oneDNN in this torch")


@needs_onednn
@pytest.mark.parametrize(
    "dtype",
    [
        torch.float32,
        pytest.param(
            torch.bfloat16, marks=pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bfloat16 matmul")
        ),
    ],
)
def test_a_packed_linear_matches_nn_linear_and_gives_a_row_the_same_bits_in_any_batch(dtype):
    torch.manual_seed(0)
    linear = torch.nn.Linear(384, 640, bias=True)
    packed = PackedLinear(linear.weight, linear.bias, dtype=dtype)
    x = torch.randn(16, 384)
    with torch.inference_mode():
        out = packed(x)
        assert out.dtype == torch.float32  # bfloat16 weights, float32 in and out
        # The reference rounds the same operands: what bfloat16 autocast did in training.
        ref = F.linear(x.to(dtype), linear.weight.to(dtype), linear.bias.to(dtype)).float()
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
        for rows in (slice(0, 1), slice(5, 6), slice(3, 7)):
            assert torch.equal(packed(x[rows]), out[rows])
        assert packed(x.view(4, 4, 384)).shape == (4, 4, 640)
    # A long inner dimension in calls of many rows: where oneDNN picks another kernel past
    # 80 rows (an AVX2 EPYC), a row must still keep its bits (a prompt's prefill, a codec batch).
    wide = PackedLinear(torch.randn(256, 1024) * 0.05, torch.randn(256), dtype=dtype)
    x = torch.randn(300, 1024)
    with torch.inference_mode():
        alone = torch.cat([wide(x[r : r + 1]) for r in range(len(x))])
        for n in (64, 81, 300):
            assert torch.equal(wide(x[:n]), alone[:n]), n
        assert torch.equal(wide(x.view(3, 100, 1024)), alone.view(3, 100, 256))


@needs_onednn
@pytest.mark.parametrize(
    "k,dilation,padding,bias", [(1, 1, 0, True), (3, 1, 1, False), (3, 4, 4, True), (7, 2, 6, True), (4, 1, 1, False)]
)
def test_a_packed_conv1d_matches_nn_conv1d(k, dilation, padding, bias):
    torch.manual_seed(k)
    conv = torch.nn.Conv1d(24, 40, k, padding=padding, dilation=dilation, bias=bias)
    packed = PackedConv1d(conv)
    with torch.inference_mode():
        for T in (3, 4, 20):
            x = torch.randn(2, 24, T)
            torch.testing.assert_close(packed(x), conv(x), atol=1e-5, rtol=1e-5)


@needs_onednn
def test_the_engine_packs_its_weights_in_the_configured_dtype(model_dir):
    from engine.config import EngineConfig
    from engine.runtime.engine import Engine

    def kernels(engine):  # the LM's linears: (class, dtype of its weights)
        return {
            (type(m), m.dtype if isinstance(m, PackedLinear) else torch.int8)
            for m in engine.model.modules()
            if isinstance(m, (PackedLinear, Int8Linear))
        }

    with pytest.raises(ValueError, match="packed_dtype must be one of auto, float32, bfloat16, int8"):
        Engine(model_dir, EngineConfig(packed_dtype="float16"))
    with Engine(model_dir, EngineConfig(packed_dtype="float32")) as engine:
        assert kernels(engine) == {(PackedLinear, torch.float32)}
    with Engine(model_dir, EngineConfig(packed_dtype="int8")) as engine:
        assert kernels(engine) == {(Int8Linear, torch.int8)}
    with Engine(model_dir, EngineConfig()) as engine:  # auto: int8 only where the CPU has bfloat16 natively
        assert kernels(engine) == {(Int8Linear, torch.int8) if native_bf16() else (PackedLinear, torch.float32)}


def test_int8_rows_keep_each_weight_within_half_a_step_with_bfloat16_scales():
    torch.manual_seed(0)
    w = torch.randn(64, 96) * torch.logspace(-3, 1, 64)[:, None]  # rows of very different sizes
    w[5] = 0.0
    q, scale = int8_rows(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.bfloat16 and q.abs().max() <= 127
    step = scale.float()[:, None]
    assert ((q.float() * step - w).abs() <= step / 2 * (1 + 1e-6)).all()
    assert (q[5] == 0).all()


def test_an_int8_linear_computes_its_int8_weights_and_gives_a_row_the_same_bits_in_any_batch():
    torch.manual_seed(0)
    linear = torch.nn.Linear(384, 640, bias=True)
    int8 = Int8Linear(linear.weight, linear.bias)
    q, scale = int8_rows(linear.weight)
    x = torch.randn(16, 384)
    with torch.inference_mode():
        out = int8(x)
        assert out.dtype == torch.float32 and out.shape == (16, 640)
        # What the int8 weights compute on bfloat16 inputs, in float32 arithmetic:
        ref = x.to(torch.bfloat16).float() @ (q.float() * scale.float()[:, None]).T + linear.bias
        torch.testing.assert_close(out, ref, atol=2e-2, rtol=2e-2)
        for rows in (slice(0, 1), slice(5, 6), slice(3, 7)):
            assert torch.equal(int8(x[rows]), out[rows])
        assert torch.equal(int8(x.view(4, 4, 384)), out.view(4, 4, 640))


@needs_onednn
def test_pack_for_cpu_leaves_what_it_cannot_pack():
    model = torch.nn.Sequential(
        torch.nn.Conv1d(8, 8, 4, stride=2, padding=1),
        torch.nn.Conv1d(8, 8, 7, groups=8),
        torch.nn.Conv1d(8, 8, 3, padding="same"),
        torch.nn.Linear(8, 8),
    )
    assert pack_for_cpu(model) == 1
    assert [type(m).__name__ for m in model] == ["Conv1d", "Conv1d", "Conv1d", "PackedLinear"]


def decode_batch(model, runner, blocks):
    """Sequences one frame short of their end, prefilled through the prefix cache: twelve
    share a voice prefix of 2 full blocks, one has another voice, one has no full block."""
    cfg = model.cfg
    voice_a, voice_b = random_frames(cfg, 40, seed=7), random_frames(cfg, 37, seed=8)
    prompts = [(voice_a, b"a", 3 + 5 * i) for i in range(12)] + [(voice_b, b"b", 9), (voice_b[:9], b"c", 20)]
    seqs = []
    with torch.inference_mode():
        for i, (prefix, key, extra) in enumerate(prompts):
            frames = torch.cat([prefix, random_frames(cfg, extra, seed=20 + i)])
            seq = Sequence(frames, len(prefix), key, SamplingParams(), 8, 0)
            assert blocks.allocate(seq)
            run(runner, [(seq, seq.num_computed, len(seq) - 1 - seq.num_computed)])
            seq.num_computed = len(seq) - 1
            blocks.register(seq)
            seqs.append(seq)
    return seqs, [(s, len(s) - 1, 1) for s in seqs]


def rows_alone_and_batched(runner, items) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits of `items` in one batch and each alone, after checking that every row also
    gives its lone bits in batches of other sizes and orders."""
    pick = torch.Generator().manual_seed(0)
    batched = run(runner, items)
    alone = [run(runner, [item])[0] for item in items]
    for _ in range(10):
        order = torch.randperm(len(items), generator=pick)[: int(torch.randint(2, len(items), (1,), generator=pick))]
        for i, row in zip(order.tolist(), run(runner, [items[i] for i in order])):
            assert torch.equal(row, alone[i])
    return batched, alone


@needs_onednn
def test_decode_rows_sharing_a_voice_prefix_match_plain_attention_bit_for_bit_alone_or_batched(model_dir):
    plain = load_model(model_dir)
    model = load_model(model_dir)
    pack_for_cpu(model)
    runner = ModelRunner(model, CacheConfig(block_size=16, num_blocks=128), torch.device("cpu"), torch.float32)
    blocks = BlockManager(runner.num_blocks, 16, runner.copy_rows)
    seqs, items = decode_batch(model, runner, blocks)
    groups, _ = runner._shared_prefixes(items)
    assert sorted(len(g.rows) for g in groups) == [1, 12]  # the prefix really is shared, once per voice
    with torch.inference_mode():
        batched, alone = rows_alone_and_batched(runner, items)
        runner.split_decode = False
        reference = run(runner, items)
    for seq, row, solo, ref in zip(seqs, batched, alone, reference):
        assert torch.equal(row, solo)
        torch.testing.assert_close(row, ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(row, dense_logits(plain, seq.tokens)[-1], atol=1e-4, rtol=1e-4)


@needs_onednn
def test_per_row_decode_attention_gives_a_row_the_same_bits_alone_or_batched(model_dir):
    model = load_model(model_dir)
    pack_for_cpu(model)
    runner = ModelRunner(model, CacheConfig(block_size=16, num_blocks=128), torch.device("cpu"), torch.float32)
    runner.split_decode = False  # EngineConfig(decode_attention="per_row")
    blocks = BlockManager(runner.num_blocks, 16, runner.copy_rows)
    seqs, items = decode_batch(model, runner, blocks)
    with torch.inference_mode():
        batched, alone = rows_alone_and_batched(runner, items)
    for seq, row, solo in zip(seqs, batched, alone):
        assert torch.equal(row, solo)
        torch.testing.assert_close(row, dense_logits(model, seq.tokens)[-1], atol=1e-4, rtol=1e-4)


def test_the_engine_picks_decode_attention_from_its_config(model_dir):
    from engine.config import EngineConfig, SchedulerConfig
    from engine.runtime.engine import Engine

    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="decode_attention must be one of auto, shared_prefix, per_row"):
        EngineConfig(decode_attention="flash")
    for cfg, split in [
        (EngineConfig(), True),
        (EngineConfig(scheduler=SchedulerConfig(max_running=2)), False),
        (EngineConfig(decode_attention="per_row"), False),
        (EngineConfig(scheduler=SchedulerConfig(max_running=1), decode_attention="shared_prefix"), True),
    ]:
        with Engine(model_dir, cfg) as engine:
            assert engine.runner.split_decode == (split and engine.device == cpu), cfg

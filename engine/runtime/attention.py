"""Attention through the paged KV pool, for any model family's attention layers.

A layer computes its queries, keys and values (rotary positions applied) and calls
`paged_attention`: this step's keys and values go to their slots in the pool, then
each row attends to its whole context, gathered block by block. The metadata is
built once per forward pass by engine.runtime.model_runner.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PagedAttention:
    """Per-forward metadata shared by every layer.

    Queries come padded as [B, T]; `rows` lists the real positions. New keys/values
    are scattered to `slots` (flat indices into the block pool), then each row
    gathers its whole context through `block_tables` and attends under `mask`.
    """

    k_cache: torch.Tensor  # [layers, blocks, block_size, kv_heads, head_dim]
    v_cache: torch.Tensor
    k_buf: torch.Tensor  # [>= B * max_blocks, block_size * kv_heads * head_dim] gather workspace
    v_buf: torch.Tensor
    rows: torch.Tensor | None  # [num valid] long: flat indices of real positions in [B * T]; None: all
    slots: torch.Tensor  # [num valid] long: where their K/V go in the pool
    block_tables: torch.Tensor  # [B, max_blocks] long
    mask: torch.Tensor  # [B, 1, T, max_blocks * block_size] additive float (0 or -inf)
    # Decode steps on CPU (one query per row): voice-prefix blocks that rows read,
    # grouped; `block_tables` and `mask` then cover each row's blocks after its
    # prefix. None: plain attention over the whole context.
    shared: list[SharedPrefix] | None = None
    p_buf: torch.Tensor | None = None  # gather workspace for the shared blocks
    # One row whose blocks are consecutive in the pool from this id: read in place,
    # not gathered (a view with the gathered copy's strides, so the same bits).
    run: int | None = None


@dataclass
class SharedPrefix:
    """Full blocks of one voice prefix and the batch rows whose context starts with them."""

    blocks: torch.Tensor  # [n] long
    rows: torch.Tensor  # [r] long
    run: int | None = None  # as PagedAttention.run, for these blocks


def paged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, paged: PagedAttention, layer: int
) -> torch.Tensor:
    """q [B, T, heads, hd], k/v [B, T, kv_heads, hd] -> attention output [B, heads, T, hd].

    Rows never mix arithmetically; see _decode_attention for why a row gets the same
    bits alone or in any batch."""
    B, T, n_kv, hd = k.shape
    kc, vc = paged.k_cache[layer], paged.v_cache[layer]
    # Write this step's keys first so every query sees its own position.
    k, v = k.reshape(B * T, n_kv, hd), v.reshape(B * T, n_kv, hd)
    if paged.rows is not None:  # (None: every query position is real)
        k, v = k[paged.rows], v[paged.rows]
    kc.view(-1, n_kv, hd).index_copy_(0, paged.slots, k)
    vc.view(-1, n_kv, hd).index_copy_(0, paged.slots, v)
    # index_select on the flattened pool is a plain row copy, several times
    # faster on CPU than advanced indexing with a [B, blocks] table.
    # The gathers land in preallocated buffers: fresh multi-MB tensors every
    # layer cost more in page faults than the copy itself.
    keys, vals = _gather(kc, vc, paged.block_tables, paged.k_buf, paged.v_buf, paged.run)
    if T == 1 and q.device.type == "cpu":  # decode (and shared prefixes, which only it has)
        return _decode_attention(q, keys, vals, paged, kc, vc)
    return F.scaled_dot_product_attention(q.transpose(1, 2), keys, vals, attn_mask=paged.mask, enable_gqa=True)


def _gather(kc, vc, tables: torch.Tensor, kbuf: torch.Tensor, vbuf: torch.Tensor, run: int | None = None):
    """Blocks listed in `tables` [B, n] -> keys, values [B, kv_heads, n * block_size, head_dim].
    `run`: tables is one row of blocks run, run + 1, ...: no copy needed."""
    B, flat = tables.shape[0], tables.flatten()
    if run is not None:
        keys, vals = kc[run : run + len(flat)], vc[run : run + len(flat)]
    else:
        keys = torch.index_select(kc.flatten(1), 0, flat, out=kbuf[: len(flat)])
        vals = torch.index_select(vc.flatten(1), 0, flat, out=vbuf[: len(flat)])
    n_kv, hd = kc.shape[-2:]
    return keys.view(B, -1, n_kv, hd).transpose(1, 2), vals.view(B, -1, n_kv, hd).transpose(1, 2)


def _decode_attention(q, keys, vals, paged: PagedAttention, kc, vc) -> torch.Tensor:
    """One decode query per row, on CPU; rows of a group read their shared prefix once.

    A kv head's g query heads go to the flash kernel as g query positions: half
    the time of the GQA path of F.scaled_dot_product_attention for one query.
    With `paged.shared`, attention over [prefix | own blocks] runs as two parts
    merged by their log-sum-exp: a group's prefix is gathered once, instead of
    every row copying and reading its own copy of it. Rows never mix
    arithmetically, and a row gives the same bits in any batch (tests/test_model.py).
    """
    B, n_heads, n_kv, hd = q.shape[0], q.shape[2], kc.shape[-2], kc.shape[-1]
    g = n_heads // n_kv
    # GQA as [B, kv, g, hd]: a kv head's g query heads become its g "query positions".
    qg = q.reshape(B, n_kv, g, hd)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qg, keys, vals, attn_mask=paged.mask)
    for grp in paged.shared or ():
        own = slice(None) if len(grp.rows) == B else grp.rows  # one voice in the batch: no indexing
        po, plse = _prefix_part(qg[own], *_gather(kc, vc, grp.blocks[None], *paged.p_buf, grp.run))
        # softmax over [prefix | own] = a blend of the two partial results, weighted
        # by each part's share of the total mass: sigmoid(lse_prefix - lse_own).
        # Where a row's values fall in a tensor decides whether the vectorised or
        # the scalar loop computes them, and the two round transcendentals (and
        # fused multiply-adds) differently in float32. So the sigmoid runs in
        # float64, where they agree to far below a float32 step, and the blend
        # uses only operations that round the same way in both loops.
        share = torch.sigmoid(plse.double() - lse[own].double()).float().unsqueeze(-1)
        part = out[own]
        mixed = part + share * (po - part)
        if len(grp.rows) == B:
            out = mixed
        else:
            out[own] = mixed
    return out.view(B, n_heads, 1, hd)


def _prefix_part(qg: torch.Tensor, pk: torch.Tensor, pv: torch.Tensor):
    """Queries [r, kv, g, hd] against one prefix [1, kv, L, hd] -> (out [r, kv, g, hd], lse [r, kv, g]).

    All r rows' queries go through one kernel call as the query positions of a
    single sequence: 16 rows cost 155 us per layer this way, 340 us as 16 batch
    elements. A row's bits still do not depend on its neighbours (each query
    position is computed on its own), except that MKL multiplies a 3-row
    matrix on another path than 6 rows or more, so a lone row gets zero
    companions and every group takes the same path."""
    r, kv, g, hd = qg.shape
    rows = max(r, -(-6 // g))  # at least 6 query positions
    qm = qg.new_zeros(kv, rows, g, hd)
    qm[:, :r] = qg.transpose(0, 1)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qm.view(1, kv, rows * g, hd), pk, pv)
    return out.view(kv, rows, g, hd)[:, :r].transpose(0, 1), lse.view(kv, rows, g)[:, :r].transpose(0, 1)

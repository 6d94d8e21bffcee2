"""Gate-tile helpers shared by the recurrent kernels (lstm_sequence_triton.py, wm_lstm_sequence_triton.py).

A program owns a block of batch ``rows``; at step t it walks the hidden units
in tiles of columns ``cols``. Layouts (fp32 where kept for backward, but
lstm_sequence keeps dg in 16-bit weights' dtype):
``xp, act, dg [T, B, 4H]`` (gate order i, f, g, o), ``hs, cs [T+1, B, H]``
(index 0 the initial state), ``dh, dc [B, H]``.
"""
import triton
import triton.language as tl

from wmkernels.triton import lstm_math as wm
from wmkernels.triton.tiles import matmul_wt, row_block_matmul


@triton.jit
def row_lengths(len_ptr, rows, row_ok):
    """Each row's length as int32 (0 outside the batch). Lengths lie in [0, T]
    and T < 2^31, so the int64 values fit. Always read: without lengths the
    host passes every row's length as T (``tiles.lengths_argument``), so
    with and without lengths is one compiled variant (a flag, constexpr or
    runtime, made the variants twice as many or, as a runtime branch, cost the
    split WM-LSTM backward 48 B more spills a thread on sm_80)."""
    return tl.load(len_ptr + rows, mask=row_ok, other=0).to(tl.int32)


@triton.jit
def column_tile(n0, row_ok, H, BLOCK_N: tl.constexpr):
    """Hidden units [n0, n0 + BLOCK_N): cols, col_ok, and the [BLOCK_B, BLOCK_N] tile mask with ``row_ok``."""
    cols = n0 + tl.arange(0, BLOCK_N)
    col_ok = cols < H
    return cols, col_ok, row_ok[:, None] & col_ok[None, :]


@triton.jit
def load_preacts(xp_ptr, t, rows, cols, tile, B, H):
    """The input projections of step t for this tile: four [BLOCK_B, BLOCK_N] fp32 tiles."""
    g_off = t * B * 4 * H + rows[:, None] * 4 * H + cols[None, :]
    pre_i = tl.load(xp_ptr + g_off, mask=tile, other=0.0).to(tl.float32)
    pre_f = tl.load(xp_ptr + g_off + H, mask=tile, other=0.0).to(tl.float32)
    pre_g = tl.load(xp_ptr + g_off + 2 * H, mask=tile, other=0.0).to(tl.float32)
    pre_o = tl.load(xp_ptr + g_off + 3 * H, mask=tile, other=0.0).to(tl.float32)
    return pre_i, pre_f, pre_g, pre_o


@triton.jit
def add_gate_products(pre_i, pre_f, pre_g, pre_o, a_ptr, rows, row_mask, K, w_ptr, cols, col_ok, H,
                      BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """pre_* += A W_*ᵀ for the four gate blocks of a row-major W [4H, K]; A is [B, K]."""
    pre_i = matmul_wt(pre_i, a_ptr, K, rows, row_mask, K, w_ptr, cols, col_ok, BLOCK_K, PRECISION)
    pre_f = matmul_wt(pre_f, a_ptr, K, rows, row_mask, K, w_ptr + H * K, cols, col_ok, BLOCK_K, PRECISION)
    pre_g = matmul_wt(pre_g, a_ptr, K, rows, row_mask, K, w_ptr + 2 * H * K, cols, col_ok, BLOCK_K, PRECISION)
    pre_o = matmul_wt(pre_o, a_ptr, K, rows, row_mask, K, w_ptr + 3 * H * K, cols, col_ok, BLOCK_K, PRECISION)
    return pre_i, pre_f, pre_g, pre_o


@triton.jit
def cell_step(pre_i, pre_f, pre_g, pre_o, t, rows, cols, tile, valid, hs_ptr, cs_ptr, act_ptr, y_ptr, y_stride,
              B, H):
    """The cell on this tile: stores h_t, c_t (carried where the row is not
    ``valid``), the gate activations and y rows (zero where not valid; row
    stride ``y_stride``). Returns the h_t tile it stored."""
    s_off = rows[:, None] * H + cols[None, :]
    h_old = tl.load(hs_ptr + t * B * H + s_off, mask=tile, other=0.0)
    c_old = tl.load(cs_ptr + t * B * H + s_off, mask=tile, other=0.0)
    i, f, g, o, c, h = wm.lstm_cell_forward(pre_i, pre_f, pre_g, pre_o, c_old)
    h_kept = tl.where(valid, h, h_old)
    tl.store(hs_ptr + (t + 1) * B * H + s_off, h_kept, mask=tile)
    tl.store(cs_ptr + (t + 1) * B * H + s_off, tl.where(valid, c, c_old), mask=tile)
    tl.store(y_ptr + t * B * y_stride + rows[:, None] * y_stride + cols[None, :],
             tl.where(valid, h, 0.0).to(y_ptr.dtype.element_ty), mask=tile)
    g_off = t * B * 4 * H + rows[:, None] * 4 * H + cols[None, :]
    tl.store(act_ptr + g_off, i, mask=tile)
    tl.store(act_ptr + g_off + H, f, mask=tile)
    tl.store(act_ptr + g_off + 2 * H, g, mask=tile)
    tl.store(act_ptr + g_off + 3 * H, o, mask=tile)
    return h_kept


@triton.jit
def cell_step_backward(grad_h, t, rows, cols, tile, valid, act_ptr, cs_ptr, dc_ptr, dg_ptr, B, H):
    """Backward of ``cell_step`` on this tile, given the total gradient of h_t:
    stores dg_t (zero where not valid) and updates dc in place to the gradient
    of c_{t-1}. Returns the four dg_t tiles it stored (fp32)."""
    g_off = t * B * 4 * H + rows[:, None] * 4 * H + cols[None, :]
    s_off = rows[:, None] * H + cols[None, :]
    grad_c = tl.load(dc_ptr + s_off, mask=tile, other=0.0)
    i = tl.load(act_ptr + g_off, mask=tile & valid, other=0.0)
    f = tl.load(act_ptr + g_off + H, mask=tile & valid, other=0.0)
    g = tl.load(act_ptr + g_off + 2 * H, mask=tile & valid, other=0.0)
    o = tl.load(act_ptr + g_off + 3 * H, mask=tile & valid, other=0.0)
    c_prev = tl.load(cs_ptr + t * B * H + s_off, mask=tile & valid, other=0.0)
    c = tl.load(cs_ptr + (t + 1) * B * H + s_off, mask=tile & valid, other=0.0)
    d_i, d_f, d_g, d_o, d_c_prev = wm.lstm_cell_backward(i, f, g, o, c_prev, c, grad_h, grad_c)
    d_i, d_f = tl.where(valid, d_i, 0.0), tl.where(valid, d_f, 0.0)
    d_g, d_o = tl.where(valid, d_g, 0.0), tl.where(valid, d_o, 0.0)
    tl.store(dg_ptr + g_off, d_i, mask=tile)
    tl.store(dg_ptr + g_off + H, d_f, mask=tile)
    tl.store(dg_ptr + g_off + 2 * H, d_g, mask=tile)
    tl.store(dg_ptr + g_off + 3 * H, d_o, mask=tile)
    tl.store(dc_ptr + s_off, tl.where(valid, d_c_prev, grad_c), mask=tile)
    return d_i, d_f, d_g, d_o


@triton.jit
def hidden_grad_through_gates(t, rows, running, cols, col_ok, dg_ptr, w_hh_ptr, B, H,
                              BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                              PRECISION: tl.constexpr, DG_CACHE: tl.constexpr):
    """dg_t w_hh on this tile ([BLOCK_B, BLOCK_N] fp32): the gradient h_{t-1} gets through the gates.
    ``DG_CACHE``: dg's load cache modifier (".cg" where other programs wrote dg_t)."""
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    return row_block_matmul(acc, dg_ptr + t * B * 4 * H, 4 * H, rows, running, 4 * H, w_hh_ptr, 1, H, cols, col_ok,
                            BLOCK_K, PRECISION, DG_CACHE)


@triton.jit
def add_recurrent_products(pre_i, pre_f, pre_g, pre_o, h_ptr, h_stride, rows, row_mask, w_hh_ptr, cols, col_ok, H,
                           BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    """pre_* += h w_*ᵀ for the four gate blocks of w_hh [4H, H]; h [B, H] (row stride ``h_stride``).

    Each chunk of h is loaded once for the four gates, past L1 (".cg"):
    other programs of the launch wrote it."""
    for k0 in range(0, H, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < H
        h = tl.load(h_ptr + rows[:, None] * h_stride + ks[None, :], mask=row_mask[:, None] & k_ok[None, :],
                    other=0.0, cache_modifier=".cg")
        w_off = cols[None, :] * H + ks[:, None]
        w_mask = k_ok[:, None] & col_ok[None, :]
        w_i = tl.load(w_hh_ptr + w_off, mask=w_mask, other=0.0)
        h = h.to(w_i.dtype)
        pre_i += tl.dot(h, w_i, input_precision=PRECISION)
        pre_f += tl.dot(h, tl.load(w_hh_ptr + H * H + w_off, mask=w_mask, other=0.0), input_precision=PRECISION)
        pre_g += tl.dot(h, tl.load(w_hh_ptr + 2 * H * H + w_off, mask=w_mask, other=0.0),
                        input_precision=PRECISION)
        pre_o += tl.dot(h, tl.load(w_hh_ptr + 3 * H * H + w_off, mask=w_mask, other=0.0),
                        input_precision=PRECISION)
    return pre_i, pre_f, pre_g, pre_o


@triton.jit
def load_gate_tiles(w_ptr, cols, col_ok, K, gate_stride, k_stride, n_stride, BLOCK_H: tl.constexpr):
    """Four [BLOCK_H, BLOCK_N] tiles of a gate-stacked weight, one per gate g,
    tile_g[k, n] at ``w_ptr + g·gate_stride + k·k_stride + cols[n]·n_stride``
    (zero from k = K on), loaded once and kept for every step. For w_hh [4H, H]
    (gate_stride H·H), strides (1, H) give the rows feeding this program's
    units (forward: tile_g[k, n] = w_hh[g·H + cols[n], k]); (H, 1) its columns
    (backward: tile_g[j, n] = w_hh[g·H + j, cols[n]])."""
    ks = tl.arange(0, BLOCK_H)
    off = ks[:, None] * k_stride + cols[None, :] * n_stride
    mask = (ks < K)[:, None] & col_ok[None, :]
    return (tl.load(w_ptr + off, mask=mask, other=0.0), tl.load(w_ptr + gate_stride + off, mask=mask, other=0.0),
            tl.load(w_ptr + 2 * gate_stride + off, mask=mask, other=0.0),
            tl.load(w_ptr + 3 * gate_stride + off, mask=mask, other=0.0))


@triton.jit
def resident_product(a_ptr, a_stride, rows, row_mask, K, w_a, w_b, w_c, w_d, acc, BLOCK_H: tl.constexpr,
                     PRECISION: tl.constexpr):
    """acc + Σ_g A_g w_g for four resident tiles w_g [BLOCK_H, BLOCK_N], where
    A_g [BLOCK_B, K] starts at column g·K of the row-major A (row stride
    ``a_stride``); A is read past L1 (".cg"): other programs wrote it."""
    ks = tl.arange(0, BLOCK_H)
    off = rows[:, None] * a_stride + ks[None, :]
    mask = row_mask[:, None] & (ks < K)[None, :]
    acc += tl.dot(tl.load(a_ptr + off, mask=mask, other=0.0, cache_modifier=".cg").to(w_a.dtype), w_a,
                  input_precision=PRECISION)
    acc += tl.dot(tl.load(a_ptr + K + off, mask=mask, other=0.0, cache_modifier=".cg").to(w_b.dtype), w_b,
                  input_precision=PRECISION)
    acc += tl.dot(tl.load(a_ptr + 2 * K + off, mask=mask, other=0.0, cache_modifier=".cg").to(w_c.dtype), w_c,
                  input_precision=PRECISION)
    acc += tl.dot(tl.load(a_ptr + 3 * K + off, mask=mask, other=0.0, cache_modifier=".cg").to(w_d.dtype), w_d,
                  input_precision=PRECISION)
    return acc


@triton.jit
def add_resident_products(pre_i, pre_f, pre_g, pre_o, h_ptr, h_stride, rows, row_mask, w_i, w_f, w_g, w_o, K,
                          BLOCK_H: tl.constexpr, PRECISION: tl.constexpr):
    """pre_* += h w_*ᵀ with the gate rows resident ([BLOCK_H, BLOCK_N] tiles,
    ``load_gate_tiles``); h [B, K] (row stride ``h_stride``), the whole of it
    in one [BLOCK_B, BLOCK_H] tile, read past L1."""
    ks = tl.arange(0, BLOCK_H)
    h = tl.load(h_ptr + rows[:, None] * h_stride + ks[None, :], mask=row_mask[:, None] & (ks < K)[None, :],
                other=0.0, cache_modifier=".cg").to(w_i.dtype)
    pre_i += tl.dot(h, w_i, input_precision=PRECISION)
    pre_f += tl.dot(h, w_f, input_precision=PRECISION)
    pre_g += tl.dot(h, w_g, input_precision=PRECISION)
    pre_o += tl.dot(h, w_o, input_precision=PRECISION)
    return pre_i, pre_f, pre_g, pre_o

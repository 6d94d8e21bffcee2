"""The working-memory ops (contract §1.3) in Triton: wm_read, wm_shift_write, wm_write.

The tile helpers here (``read_forward``, ``read_backward``, ``write_forward``,
``write_backward``) work on a block of batch rows at once and address the
memory through a *view*: element (b, s, d) of the memory lives at
``ptr + row_off[b] + s·slot_stride + d``. A contiguous ``M [B, S, D]`` is
``row_off = b·S·D, slot_stride = D``; the WM-LSTM kernels point the same
helpers at their FIFO tape or their memory scratch. Vectors indexed by row
(q, r, e, a and their gradients) are row-major ``[B, D]`` / ``[B, S]``.
"""
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from wmkernels.contract import Impl, empty_outputs
from wmkernels.triton import tiles
from wmkernels.triton.launch import launch


@triton.jit
def view(ptr, row_off, slot_stride, slots, ds):
    """Pointers [BLOCK_B, BLOCK_S, BLOCK_D] of a memory view."""
    return ptr + row_off[:, None, None] + slots[None, :, None] * slot_stride + ds[None, None, :]


@triton.jit
def masked_softmax(scores, allowed):
    """Softmax over the last axis of [BLOCK_B, BLOCK_S] restricted to ``allowed``;
    a row with nothing allowed gets zeros. A row whose allowed scores hold a NaN
    or +inf, or are all -inf, gets NaN throughout, as torch.softmax gives it
    (tl.max would pass over a NaN)."""
    scores = tl.where(allowed, scores, float("-inf"))
    top = tl.max(scores, axis=1)
    any_allowed = tl.max(allowed.to(tl.int32), axis=1) > 0
    bad = allowed & ((scores != scores) | (scores == float("inf")))
    poisoned = (tl.max(bad.to(tl.int32), axis=1) > 0) | (any_allowed & (top == float("-inf")))
    top = tl.where(top == float("-inf"), 0.0, top)
    p = tl.where(allowed, tl.exp(scores - top[:, None]), 0.0)
    total = tl.sum(p, axis=1)
    attn = p / tl.where(total > 0.0, total, 1.0)[:, None]
    return tl.where(poisoned[:, None], float("nan"), attn)


@triton.jit
def softmax_backward(attn, d_attn, allowed, slots):
    """The gradient of the scores [BLOCK_B, BLOCK_S] from the attention's
    (``d_attn``), as the reference's autograd (softmax, then times the mask)
    and memory_math.h's softmax_backward: a slot not ``allowed`` passes
    d_attn · 0 (NaN where d_attn is not finite) and gets exactly 0, so does a
    row with nothing allowed; every product is taken, weight 0 included. The
    difference is taken about slot 0's value (when finite), using Σ attn = 1,
    so equal slots give exactly 0 and nearly equal ones a rounding error that
    scales with their spread rather than their size."""
    passed = tl.where(allowed, d_attn, d_attn * 0.0)
    any_allowed = tl.max(allowed.to(tl.int32), axis=1) > 0
    ref = tl.sum(tl.where(slots[None, :] == 0, passed, 0.0), axis=1)
    passed = passed - tl.where(ref - ref == 0.0, ref, 0.0)[:, None]
    d_scores = attn * (passed - tl.sum(attn * passed, axis=1)[:, None])
    return tl.where(allowed & any_allowed[:, None], d_scores, 0.0)


@triton.jit
def copy_memory(src_ptr, dst_ptr, rows, row_ok, S, D, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """Copy the [S, D] memories of the rows ``row_ok`` between two [B, S, D] buffers."""
    slots = tl.arange(0, BLOCK_S)
    whole = row_ok[:, None, None] & (slots < S)[None, :, None]
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        mk = whole & (ds < D)[None, None, :]
        m = tl.load(view(src_ptr, rows * S * D, D, slots, ds), mask=mk, other=0.0)
        tl.store(view(dst_ptr, rows * S * D, D, slots, ds), m, mask=mk)


@triton.jit
def read_forward(m_ptr, m_off, m_stride, rows, row_ok, allowed, q_ptr, r_ptr, attn_ptr, S, D, scale,
                 BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, Q_CACHE: tl.constexpr,
                 ONLY_ALLOWED: tl.constexpr):
    """Scores, masked softmax and weighted sum for a block of rows.

    ``row_ok`` [BLOCK_B] marks the rows to compute (in the batch, running);
    ``allowed`` [BLOCK_B, BLOCK_S] the (row, slot) pairs that may be read. Stores
    r rows ([B, D] at r_ptr) and attn rows ([B, S] at attn_ptr); returns attn (fp32).
    ``Q_CACHE``: q's load cache modifier (".cg" where other programs wrote q).
    ``ONLY_ALLOWED``: the memory outside ``allowed`` is not read at all, taken
    as 0 (the WM-LSTM's capacity: contract §1.5), so a NaN there does not reach r;
    else r sums every slot, as a masked wm_read does.
    """
    slots = tl.arange(0, BLOCK_S)
    scores = tl.zeros((BLOCK_B, BLOCK_S), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        m = tl.load(view(m_ptr, m_off, m_stride, slots, ds), mask=allowed[:, :, None] & d_ok[None, None, :],
                    other=0.0).to(tl.float32)
        q = tl.load(q_ptr + rows[:, None] * D + ds[None, :], mask=row_ok[:, None] & d_ok[None, :],
                    other=0.0, cache_modifier=Q_CACHE).to(tl.float32)
        scores += tl.sum(m * q[:, None, :], axis=2)
    attn = masked_softmax(scores * scale, allowed)
    whole = row_ok[:, None] & (slots < S)[None, :]
    tl.store(attn_ptr + rows[:, None] * S + slots[None, :], attn.to(attn_ptr.dtype.element_ty), mask=whole)
    # every slot (ONLY_ALLOWED: every allowed one), weight 0 included, as Σ_s attn_s M_s is in IEEE
    # arithmetic (inf, NaN give NaN)
    summed = allowed if ONLY_ALLOWED else whole
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        m = tl.load(view(m_ptr, m_off, m_stride, slots, ds), mask=summed[:, :, None] & d_ok[None, None, :],
                    other=0.0).to(tl.float32)
        r = tl.sum(attn[:, :, None] * m, axis=1)
        tl.store(r_ptr + rows[:, None] * D + ds[None, :], r.to(r_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & d_ok[None, :])
    return attn


@triton.jit
def read_backward(m_ptr, m_off, m_stride, dm_ptr, dm_off, dm_stride, rows, row_ok, allowed, attn, d_attn,
                  q_ptr, dr_ptr, dq_ptr, S, D, scale, ACCUMULATE: tl.constexpr,
                  BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, ONLY_ALLOWED: tl.constexpr):
    """Backward of ``read_forward`` for the rows ``row_ok``.

    attn, d_attn [BLOCK_B, BLOCK_S] fp32 (d_attn: the gradient reaching attn
    directly); dr rows are read from ``dr_ptr``. Stores the gradient of the
    memory into the dm view (with ACCUMULATE: adds it to what is there) and
    stores dq rows. As the reference's autograd (softmax, then times the
    mask): every slot of a row takes part, weight 0 included, in IEEE
    arithmetic (a -inf score with an infinite gradient gives NaN, as there);
    the slots not ``allowed`` get a score gradient of exactly 0, and so do
    all slots of a row with nothing allowed. ``ONLY_ALLOWED`` (with
    ACCUMULATE), the backward of ``read_forward``'s: the memory outside
    ``allowed`` is neither read (taken as 0) nor given a gradient.
    """
    slots = tl.arange(0, BLOCK_S)
    if ONLY_ALLOWED:
        whole = allowed[:, :, None]
    else:
        whole = row_ok[:, None, None] & (slots < S)[None, :, None]
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        m = tl.load(view(m_ptr, m_off, m_stride, slots, ds), mask=whole & d_ok[None, None, :],
                    other=0.0).to(tl.float32)
        dr = tl.load(dr_ptr + rows[:, None] * D + ds[None, :], mask=row_ok[:, None] & d_ok[None, :],
                     other=0.0).to(tl.float32)
        d_attn += tl.sum(m * dr[:, None, :], axis=2)
    d_scores = softmax_backward(attn, d_attn, allowed, slots) * scale
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        m = tl.load(view(m_ptr, m_off, m_stride, slots, ds), mask=whole & d_ok[None, None, :],
                    other=0.0).to(tl.float32)
        row_d = row_ok[:, None] & d_ok[None, :]
        dr = tl.load(dr_ptr + rows[:, None] * D + ds[None, :], mask=row_d, other=0.0).to(tl.float32)
        q = tl.load(q_ptr + rows[:, None] * D + ds[None, :], mask=row_d, other=0.0).to(tl.float32)
        dm = attn[:, :, None] * dr[:, None, :] + d_scores[:, :, None] * q[:, None, :]
        dm_ptrs = view(dm_ptr, dm_off, dm_stride, slots, ds)
        dm_mask = whole & d_ok[None, None, :]
        if ACCUMULATE:
            dm += tl.load(dm_ptrs, mask=dm_mask, other=0.0).to(tl.float32)
        tl.store(dm_ptrs, dm.to(dm_ptr.dtype.element_ty), mask=dm_mask)
        dq = tl.sum(d_scores[:, :, None] * m, axis=1)
        tl.store(dq_ptr + rows[:, None] * D + ds[None, :], dq.to(dq_ptr.dtype.element_ty), mask=row_d)


@triton.jit
def write_forward(m_ptr, m_off, m_stride, out_ptr, out_off, out_stride, rows, row_ok, w, e_ptr, a_ptr, S, D,
                  BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, active):
    """Gated erase/add write M ⊙ (1 − w eᵀ) + w aᵀ of the rows ``row_ok``;
    w [BLOCK_B, BLOCK_S] fp32, e and a rows [B, D]. ``out`` may be ``m`` (in place).
    ``active`` (None: every slot) [BLOCK_B, BLOCK_S]: only these slots are
    written, the others go to ``out`` exactly as they are in ``m``."""
    slots = tl.arange(0, BLOCK_S)
    whole = row_ok[:, None, None] & (slots < S)[None, :, None]
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        mk = whole & d_ok[None, None, :]
        row_d = row_ok[:, None] & d_ok[None, :]
        m = tl.load(view(m_ptr, m_off, m_stride, slots, ds), mask=mk, other=0.0).to(tl.float32)
        e = tl.load(e_ptr + rows[:, None] * D + ds[None, :], mask=row_d, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + rows[:, None] * D + ds[None, :], mask=row_d, other=0.0).to(tl.float32)
        new = m * (1.0 - w[:, :, None] * e[:, None, :]) + w[:, :, None] * a[:, None, :]
        if active is not None:
            new = tl.where(active[:, :, None], new, m)
        tl.store(view(out_ptr, out_off, out_stride, slots, ds), new.to(out_ptr.dtype.element_ty), mask=mk)


@triton.jit
def write_backward(g_ptr, g_off, g_stride, m_ptr, m_off, m_stride, dm_ptr, dm_off, dm_stride, rows, row_ok, w,
                   e_ptr, a_ptr, de_ptr, da_ptr, S, D,
                   BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, active):
    """Backward of ``write_forward``: g is the gradient of the new memory, m the
    old memory. Stores dM (the dm view may be g's, in place), de and da rows;
    returns dw [BLOCK_B, BLOCK_S] (fp32). ``active`` as there: the old memory
    outside it is not read (taken as 0, so a NaN there reaches neither de nor
    dw), its dM is g (w is 0 there); its dw is that of a zero slot, which the
    read's backward drops (no score gradient outside the active slots)."""
    slots = tl.arange(0, BLOCK_S)
    whole = row_ok[:, None, None] & (slots < S)[None, :, None]
    dw = tl.zeros((BLOCK_B, BLOCK_S), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < D
        mk = whole & d_ok[None, None, :]
        row_d = row_ok[:, None] & d_ok[None, :]
        g = tl.load(view(g_ptr, g_off, g_stride, slots, ds), mask=mk, other=0.0).to(tl.float32)
        m_mask = mk
        if active is not None:
            m_mask = mk & active[:, :, None]
        m = tl.load(view(m_ptr, m_off, m_stride, slots, ds), mask=m_mask, other=0.0).to(tl.float32)
        e = tl.load(e_ptr + rows[:, None] * D + ds[None, :], mask=row_d, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + rows[:, None] * D + ds[None, :], mask=row_d, other=0.0).to(tl.float32)
        tl.store(view(dm_ptr, dm_off, dm_stride, slots, ds),
                 (g * (1.0 - w[:, :, None] * e[:, None, :])).to(dm_ptr.dtype.element_ty), mask=mk)
        dw += tl.sum(g * (a[:, None, :] - m * e[:, None, :]), axis=2)
        de = -tl.sum(g * m * w[:, :, None], axis=1)
        da = tl.sum(g * w[:, :, None], axis=1)
        tl.store(de_ptr + rows[:, None] * D + ds[None, :], de.to(de_ptr.dtype.element_ty), mask=row_d)
        tl.store(da_ptr + rows[:, None] * D + ds[None, :], da.to(da_ptr.dtype.element_ty), mask=row_d)
    return dw


@triton.jit
def _rows(B, S, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr):
    """This program's rows of a contiguous [B, S, D] memory: rows, row_ok, slot_ok."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    return rows, rows < B, tl.arange(0, BLOCK_S) < S


@triton.jit
def _read_forward_kernel(m_ptr, q_ptr, mask_ptr, r_ptr, attn_ptr, scale, B, S, D, HAS_MASK: tl.constexpr,
                         BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    rows, row_ok, slot_ok = _rows(B, S, BLOCK_B, BLOCK_S)
    allowed = row_ok[:, None] & slot_ok[None, :]
    if HAS_MASK:
        flags = tl.load(mask_ptr + rows[:, None] * S + tl.arange(0, BLOCK_S)[None, :], mask=allowed, other=0)
        allowed = allowed & (flags != 0)
    read_forward(m_ptr, rows * S * D, D, rows, row_ok, allowed, q_ptr, r_ptr, attn_ptr, S, D, scale,
                 BLOCK_B, BLOCK_S, BLOCK_D, "", False)


@triton.jit
def _read_backward_kernel(m_ptr, q_ptr, mask_ptr, attn_ptr, dr_ptr, d_attn_ptr, dm_ptr, dq_ptr, scale, B, S, D,
                          HAS_MASK: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr,
                          BLOCK_D: tl.constexpr):
    rows, row_ok, slot_ok = _rows(B, S, BLOCK_B, BLOCK_S)
    whole = row_ok[:, None] & slot_ok[None, :]
    offs = rows[:, None] * S + tl.arange(0, BLOCK_S)[None, :]
    attn = tl.load(attn_ptr + offs, mask=whole, other=0.0).to(tl.float32)
    d_attn = tl.load(d_attn_ptr + offs, mask=whole, other=0.0).to(tl.float32)
    allowed = whole
    if HAS_MASK:
        allowed = allowed & (tl.load(mask_ptr + offs, mask=whole, other=0) != 0)
    read_backward(m_ptr, rows * S * D, D, dm_ptr, rows * S * D, D, rows, row_ok, allowed, attn, d_attn,
                  q_ptr, dr_ptr, dq_ptr, S, D, scale, False, BLOCK_B, BLOCK_S, BLOCK_D, False)


@triton.jit
def _shift_kernel(src_ptr, v_ptr, out_ptr, dv_ptr, B, S, D, BACKWARD: tl.constexpr,
                  BLOCK_B: tl.constexpr, BLOCK_J: tl.constexpr):
    """Flat index j over a row's S·D elements. Forward: out[j] = M[j + D] for
    j < (S−1)·D, else v[j − (S−1)·D]. Backward: dM[j] = g[j − D] for j ≥ D, else
    0; dv = g's last slot."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    js = tl.program_id(1) * BLOCK_J + tl.arange(0, BLOCK_J)
    row_ok = (rows < B)[:, None]
    j_ok = (js < S * D)[None, :]
    row_base = rows[:, None] * S * D
    last = (S - 1) * D
    if BACKWARD:
        shifted = tl.load(src_ptr + row_base + js[None, :] - D, mask=row_ok & j_ok & (js >= D)[None, :], other=0.0)
        tl.store(out_ptr + row_base + js[None, :], shifted, mask=row_ok & j_ok)
        in_last = j_ok & (js >= last)[None, :]
        tail = tl.load(src_ptr + row_base + js[None, :], mask=row_ok & in_last, other=0.0)
        tl.store(dv_ptr + rows[:, None] * D + js[None, :] - last, tail, mask=row_ok & in_last)
    else:
        body = j_ok & (js < last)[None, :]
        in_last = j_ok & (js >= last)[None, :]
        kept = tl.load(src_ptr + row_base + js[None, :] + D, mask=row_ok & body, other=0.0)
        new = tl.load(v_ptr + rows[:, None] * D + js[None, :] - last, mask=row_ok & in_last, other=0.0)
        tl.store(out_ptr + row_base + js[None, :], tl.where(body, kept, new), mask=row_ok & j_ok)


@triton.jit
def _write_forward_kernel(m_ptr, w_ptr, e_ptr, a_ptr, out_ptr, B, S, D,
                          BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    rows, row_ok, slot_ok = _rows(B, S, BLOCK_B, BLOCK_S)
    w = tl.load(w_ptr + rows[:, None] * S + tl.arange(0, BLOCK_S)[None, :],
                mask=row_ok[:, None] & slot_ok[None, :], other=0.0).to(tl.float32)
    write_forward(m_ptr, rows * S * D, D, out_ptr, rows * S * D, D, rows, row_ok, w, e_ptr, a_ptr, S, D,
                  BLOCK_S, BLOCK_D, None)


@triton.jit
def _write_backward_kernel(g_ptr, m_ptr, w_ptr, e_ptr, a_ptr, dm_ptr, dw_ptr, de_ptr, da_ptr, B, S, D,
                           BLOCK_B: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    rows, row_ok, slot_ok = _rows(B, S, BLOCK_B, BLOCK_S)
    offs = rows[:, None] * S + tl.arange(0, BLOCK_S)[None, :]
    whole = row_ok[:, None] & slot_ok[None, :]
    w = tl.load(w_ptr + offs, mask=whole, other=0.0).to(tl.float32)
    dw = write_backward(g_ptr, rows * S * D, D, m_ptr, rows * S * D, D, dm_ptr, rows * S * D, D, rows, row_ok,
                        w, e_ptr, a_ptr, de_ptr, da_ptr, S, D, BLOCK_B, BLOCK_S, BLOCK_D, None)
    tl.store(dw_ptr + offs, dw.to(dw_ptr.dtype.element_ty), mask=whole)


def _blocks(M: Tensor):
    """(grid, BLOCK_B, BLOCK_S, BLOCK_D, num_warps) of the per-row-block memory kernels:
    [BLOCK_B, BLOCK_S, BLOCK_D] tiles of at most 4096 elements, at most 2048 per
    row (larger ones spill at S = 128: wmkernels.tools.aot)."""
    B, S, D = M.shape
    block_s = tiles.pow2(S)
    block_d = tiles.block(D, max(1, 2048 // block_s), M, interp_cap=1 << 30)
    block_b = tiles.block(B, max(1, 4096 // (block_s * block_d)), M, interp_cap=64)
    return (triton.cdiv(B, block_b),), block_b, block_s, block_d, tiles.warps(block_b * block_s * block_d)


def _launch(kernel, M: Tensor, *args, **constexprs):
    grid, block_b, block_s, block_d, num_warps = _blocks(M)
    launch(kernel, grid, *args, *M.shape, device=M.device, **constexprs, BLOCK_B=block_b, BLOCK_S=block_s,
           BLOCK_D=block_d, num_warps=num_warps)


@torch.library.custom_op("wmkernels_triton::wm_read_forward", mutates_args=())
def wm_read_forward(M: Tensor, q: Tensor, mask: Optional[Tensor], scale: float) -> Tuple[Tensor, Tensor]:
    """M [B, S, D], q [B, D], mask bool [B, S] or None -> (r [B, D], attn [B, S])."""
    tiles.check_int32_indexing("wm_read", memory=M.numel())
    M, q = M.contiguous(), q.contiguous()
    r, attn = q.new_empty(q.shape), M.new_empty(M.shape[:2])
    if M.shape[0]:
        flags = mask.contiguous() if mask is not None else None
        _launch(_read_forward_kernel, M, M, q, flags, r, attn, scale, HAS_MASK=mask is not None)
    return r, attn


@wm_read_forward.register_fake
def _(M, q, mask, scale):
    return empty_outputs("wm_read", M, M=M)


@torch.library.custom_op("wmkernels_triton::wm_read_backward", mutates_args=())
def wm_read_backward(grad_r: Tensor, grad_attn: Tensor, M: Tensor, q: Tensor, attn: Tensor,
                     scale: float, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The gradients of r [B, D], attn [B, S], then the saved M, q, attn, then the
    forward's extras scale and mask (bool [B, S] or None) -> (dM, dq)."""
    tiles.check_int32_indexing("wm_read", memory=M.numel())
    M, q = M.contiguous(), q.contiguous()
    dM, dq = M.new_empty(M.shape), q.new_empty(q.shape)
    if M.shape[0]:
        flags = mask.contiguous() if mask is not None else None
        _launch(_read_backward_kernel, M, M, q, flags, attn.contiguous(), grad_r.contiguous(),
                grad_attn.contiguous(), dM, dq, scale, HAS_MASK=mask is not None)
    return dM, dq


@wm_read_backward.register_fake
def _(grad_r, grad_attn, M, q, attn, scale, mask=None):
    return M.new_empty(M.shape), q.new_empty(q.shape)


def _shift(src: Tensor, v: Tensor, backward: bool) -> Tuple[Tensor, Tensor]:
    B, S, D = src.shape
    out, dv = src.new_empty(src.shape), v.new_empty(v.shape)
    if src.numel():
        block_j = tiles.block(S * D, 1024, src, interp_cap=1 << 30)
        block_b = tiles.block(B, max(1, 4096 // block_j), src, interp_cap=64)
        grid = (triton.cdiv(B, block_b), triton.cdiv(S * D, block_j))
        launch(_shift_kernel, grid, src, v, out, dv, B, S, D, device=src.device, BACKWARD=backward,
               BLOCK_B=block_b, BLOCK_J=block_j, num_warps=tiles.warps(block_b * block_j))
    return out, dv


@torch.library.custom_op("wmkernels_triton::wm_shift_write_forward", mutates_args=())
def wm_shift_write_forward(M: Tensor, v: Tensor) -> Tensor:
    """M [B, S, D], v [B, D] -> M_new [B, S, D] (slot 0 dropped, v appended)."""
    tiles.check_int32_indexing("wm_shift_write", memory=M.numel())
    return _shift(M.contiguous(), v.contiguous(), False)[0]


@wm_shift_write_forward.register_fake
def _(M, v):
    return empty_outputs("wm_shift_write", M, M=M)[0]


@torch.library.custom_op("wmkernels_triton::wm_shift_write_backward", mutates_args=())
def wm_shift_write_backward(grad_new: Tensor) -> Tuple[Tensor, Tensor]:
    """Gradient of M_new [B, S, D] -> (dM [B, S, D], dv [B, D])."""
    tiles.check_int32_indexing("wm_shift_write", memory=grad_new.numel())
    B, _, D = grad_new.shape
    return _shift(grad_new.contiguous(), grad_new.new_empty(B, D), True)  # v: only dv's shape backward


@wm_shift_write_backward.register_fake
def _(grad_new):
    return grad_new.new_empty(grad_new.shape), grad_new.new_empty(grad_new.shape[0], grad_new.shape[2])


@torch.library.custom_op("wmkernels_triton::wm_write_forward", mutates_args=())
def wm_write_forward(M: Tensor, w: Tensor, e: Tensor, a: Tensor) -> Tensor:
    """M [B, S, D], w [B, S], e, a [B, D] -> M ⊙ (1 − w eᵀ) + w aᵀ."""
    tiles.check_int32_indexing("wm_write", memory=M.numel())
    M = M.contiguous()
    out = M.new_empty(M.shape)
    if M.shape[0]:
        _launch(_write_forward_kernel, M, M, w.contiguous(), e.contiguous(), a.contiguous(), out)
    return out


@wm_write_forward.register_fake
def _(M, w, e, a):
    return empty_outputs("wm_write", M, M=M)[0]


@torch.library.custom_op("wmkernels_triton::wm_write_backward", mutates_args=())
def wm_write_backward(grad_new: Tensor, M: Tensor, w: Tensor, e: Tensor,
                      a: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradient of M_new and the inputs -> (dM, dw, de, da)."""
    tiles.check_int32_indexing("wm_write", memory=M.numel())
    M = M.contiguous()
    dM, dw, de, da = M.new_empty(M.shape), w.new_empty(w.shape), e.new_empty(e.shape), a.new_empty(a.shape)
    if M.shape[0]:
        _launch(_write_backward_kernel, M, grad_new.contiguous(), M, w.contiguous(), e.contiguous(),
                a.contiguous(), dM, dw, de, da)
    return dM, dw, de, da


@wm_write_backward.register_fake
def _(grad_new, M, w, e, a):
    return M.new_empty(M.shape), w.new_empty(w.shape), e.new_empty(e.shape), a.new_empty(a.shape)


# The ops' implementations on the triton backend (contract §3.1): the same
# argument order and saved tensors as the cpu backend's (wmkernels.memory.cpu).

def _wm_read_forward(M, q, mask=None, scale=1.0):
    r, attn = wm_read_forward(M, q, mask, scale)
    return (r, attn), (M, q, attn, mask), scale


def _wm_read_backward(saved, scale, grad_r, grad_attn):
    M, q, attn, mask = saved
    return wm_read_backward(grad_r, grad_attn, M, q, attn, scale, mask)


def _wm_shift_write_forward(M, v):
    return (wm_shift_write_forward(M, v),), (), None


def _wm_shift_write_backward(saved, info, grad_new):
    return wm_shift_write_backward(grad_new)


def _wm_write_forward(M, w, e, a):
    return (wm_write_forward(M, w, e, a),), (M, w, e, a), None


def _wm_write_backward(saved, info, grad_new):
    return wm_write_backward(grad_new, *saved)


WM_READ = Impl(_wm_read_forward, _wm_read_backward)
WM_SHIFT_WRITE = Impl(_wm_shift_write_forward, _wm_shift_write_backward)
WM_WRITE = Impl(_wm_write_forward, _wm_write_backward)

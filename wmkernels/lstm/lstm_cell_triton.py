"""lstm_cell (contract §1.1) in Triton: one pass over the gates forward, backward
from the saved gate activations.

Shapes: gates [B, 4H], c_prev [B, H] -> h, c [B, H]; act [B, 4H] = (i, f, g, o)
after their nonlinearities, saved for backward.
"""
from typing import Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from wmkernels.contract import Impl, empty_outputs
from wmkernels.triton import lstm_math as wm
from wmkernels.triton import tiles
from wmkernels.triton.launch import launch


@triton.jit
def _tile(B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Offsets into [B, 4H] and [B, H] of this program's tile, and its mask."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (rows < B)[:, None] & (cols < H)[None, :]
    return rows[:, None] * (4 * H) + cols[None, :], rows[:, None] * H + cols[None, :], mask


@triton.jit
def _forward_kernel(gates_ptr, c_prev_ptr, h_ptr, c_ptr, act_ptr, B, H,
                    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    g_off, s_off, mask = _tile(B, H, BLOCK_B, BLOCK_H)
    pre_i = tl.load(gates_ptr + g_off, mask=mask).to(tl.float32)
    pre_f = tl.load(gates_ptr + g_off + H, mask=mask).to(tl.float32)
    pre_g = tl.load(gates_ptr + g_off + 2 * H, mask=mask).to(tl.float32)
    pre_o = tl.load(gates_ptr + g_off + 3 * H, mask=mask).to(tl.float32)
    c_prev = tl.load(c_prev_ptr + s_off, mask=mask).to(tl.float32)
    i, f, g, o, c, h = wm.lstm_cell_forward(pre_i, pre_f, pre_g, pre_o, c_prev)
    out = h_ptr.dtype.element_ty
    tl.store(h_ptr + s_off, h.to(out), mask=mask)
    tl.store(c_ptr + s_off, c.to(out), mask=mask)
    tl.store(act_ptr + g_off, i.to(out), mask=mask)
    tl.store(act_ptr + g_off + H, f.to(out), mask=mask)
    tl.store(act_ptr + g_off + 2 * H, g.to(out), mask=mask)
    tl.store(act_ptr + g_off + 3 * H, o.to(out), mask=mask)


@triton.jit
def _backward_kernel(grad_h_ptr, grad_c_ptr, act_ptr, c_prev_ptr, c_ptr, d_gates_ptr, d_c_prev_ptr,
                     B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    g_off, s_off, mask = _tile(B, H, BLOCK_B, BLOCK_H)
    i = tl.load(act_ptr + g_off, mask=mask).to(tl.float32)
    f = tl.load(act_ptr + g_off + H, mask=mask).to(tl.float32)
    g = tl.load(act_ptr + g_off + 2 * H, mask=mask).to(tl.float32)
    o = tl.load(act_ptr + g_off + 3 * H, mask=mask).to(tl.float32)
    c_prev = tl.load(c_prev_ptr + s_off, mask=mask).to(tl.float32)
    c = tl.load(c_ptr + s_off, mask=mask).to(tl.float32)
    grad_h = tl.load(grad_h_ptr + s_off, mask=mask).to(tl.float32)
    grad_c = tl.load(grad_c_ptr + s_off, mask=mask).to(tl.float32)
    d_i, d_f, d_g, d_o, d_c_prev = wm.lstm_cell_backward(i, f, g, o, c_prev, c, grad_h, grad_c)
    out = d_gates_ptr.dtype.element_ty
    tl.store(d_gates_ptr + g_off, d_i.to(out), mask=mask)
    tl.store(d_gates_ptr + g_off + H, d_f.to(out), mask=mask)
    tl.store(d_gates_ptr + g_off + 2 * H, d_g.to(out), mask=mask)
    tl.store(d_gates_ptr + g_off + 3 * H, d_o.to(out), mask=mask)
    tl.store(d_c_prev_ptr + s_off, d_c_prev.to(out), mask=mask)


def _launch(kernel, like: Tensor, B: int, H: int, *args):
    block_b = tiles.block(B, 16, like, interp_cap=64)
    block_h = tiles.block(H, 128, like)
    grid = (triton.cdiv(B, block_b), triton.cdiv(H, block_h))
    launch(kernel, grid, *args, B, H, device=like.device, BLOCK_B=block_b, BLOCK_H=block_h,
           num_warps=tiles.warps(block_b * block_h))


@torch.library.custom_op("wmkernels_triton::lstm_cell_forward", mutates_args=())
def lstm_cell_forward(gates: Tensor, c_prev: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """gates [B, 4H], c_prev [B, H] -> (h [B, H], c [B, H], act [B, 4H])."""
    tiles.check_int32_indexing("lstm_cell", gates=gates.numel())
    gates, c_prev = gates.contiguous(), c_prev.contiguous()
    h, c, act = c_prev.new_empty(c_prev.shape), c_prev.new_empty(c_prev.shape), gates.new_empty(gates.shape)
    if h.numel():
        _launch(_forward_kernel, gates, *c_prev.shape, gates, c_prev, h, c, act)
    return h, c, act


@lstm_cell_forward.register_fake
def _(gates, c_prev):
    return (*empty_outputs("lstm_cell", c_prev, c_prev=c_prev), gates.new_empty(gates.shape))


@torch.library.custom_op("wmkernels_triton::lstm_cell_backward", mutates_args=())
def lstm_cell_backward(grad_h: Tensor, grad_c: Tensor, act: Tensor, c_prev: Tensor,
                       c: Tensor) -> Tuple[Tensor, Tensor]:
    """Gradients of h, c [B, H] and the saved act [B, 4H], c_prev, c [B, H]
    -> (grad of gates [B, 4H], grad of c_prev [B, H])."""
    tiles.check_int32_indexing("lstm_cell", gates=act.numel())
    grad_h, grad_c, c_prev = grad_h.contiguous(), grad_c.contiguous(), c_prev.contiguous()
    d_gates, d_c_prev = act.new_empty(act.shape), c_prev.new_empty(c_prev.shape)
    if d_c_prev.numel():
        _launch(_backward_kernel, act, *c_prev.shape, grad_h, grad_c, act, c_prev, c.contiguous(),
                d_gates, d_c_prev)
    return d_gates, d_c_prev


@lstm_cell_backward.register_fake
def _(grad_h, grad_c, act, c_prev, c):
    return act.new_empty(act.shape), c_prev.new_empty(c_prev.shape)


# The op's implementation on the triton backend (contract §3.1), as on the cpu
# backend (wmkernels.lstm.cpu): saved (act, c_prev, c).

def _forward(gates, c_prev):
    h, c, act = lstm_cell_forward(gates, c_prev)
    return (h, c), (act, c_prev, c), None


def _backward(saved, info, grad_h, grad_c):
    return lstm_cell_backward(grad_h, grad_c, *saved)


LSTM_CELL = Impl(_forward, _backward)

"""The reference of the working-memory ops (contract §1.3), in plain PyTorch:
the source of truth every backend is tested against (no argument checks:
``wmkernels.ops`` does them)."""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor


def wm_read(M: Tensor, q: Tensor, mask: Optional[Tensor] = None,
            scale: Optional[float] = None) -> Tuple[Tensor, Tensor]:
    """Content-addressed read: scaled dot-product attention over the slots.

    M [B, S, D], q [B, D], mask [B, S] bool (True = readable) or None
    -> (r [B, D], attn [B, S]). A row with no readable slot reads zeros.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(M.shape[2])
    scores = torch.einsum("bsd,bd->bs", M, q) * scale
    if mask is None:
        attn = torch.softmax(scores, dim=1)
    else:
        scores = scores.masked_fill(~mask, float("-inf"))
        # A row with no readable slot would be softmax(all -inf) = NaN; give it
        # finite scores and zero its weights below instead.
        any_readable = mask.any(dim=1, keepdim=True)
        scores = scores.masked_fill(~any_readable, 0.0)
        attn = torch.softmax(scores, dim=1) * mask
    r = torch.einsum("bs,bsd->bd", attn, M)
    return r, attn


def wm_shift_write(M: Tensor, v: Tensor) -> Tensor:
    """FIFO write: drop slot 0, shift the rest down, write v [B, D] into slot S-1."""
    return torch.cat([M[:, 1:], v.unsqueeze(1)], dim=1)


def wm_write(M: Tensor, w: Tensor, e: Tensor, a: Tensor) -> Tensor:
    """Gated erase/add write (NTM): M ⊙ (1 − w eᵀ) + w aᵀ per batch row.

    M [B, S, D], w [B, S], e [B, D], a [B, D] -> M_new [B, S, D].
    """
    w = w.unsqueeze(2)
    return M * (1 - w * e.unsqueeze(1)) + w * a.unsqueeze(1)

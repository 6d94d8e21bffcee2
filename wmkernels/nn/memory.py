"""``wmkernels.nn.WorkingMemory``: the slot memory of contract §1.3 for loop-writing users."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from wmkernels import ops
from wmkernels.nn import checks

NAME = "WorkingMemory"


class WorkingMemory(nn.Module):
    """A memory of ``slots`` vectors of width ``dim`` per batch row; holds no parameters.

    The memory itself is a tensor ``M [B, S, D]`` the caller carries (slot 0 the
    oldest); the methods are the ops of contract §1.3 on it, checked against this
    module's ``S`` and ``D``:

    - ``empty(batch)`` -> zeros ``[B, S, D]``
    - ``read(M, q [B, D], mask=None, scale=None)`` -> ``(r [B, D], attn [B, S])``
      (also ``forward``)
    - ``write(M, v [B, D])`` -> FIFO write: the oldest slot drops out, ``v`` becomes slot ``S-1``
    - ``update(M, w [B, S], e [B, D], a [B, D])`` -> gated erase/add ``M ⊙ (1 − w eᵀ) + w aᵀ``
    """

    def __init__(self, slots: int, dim: int) -> None:
        super().__init__()
        self.slots = checks.positive_int(NAME, "slots", slots)
        self.dim = checks.positive_int(NAME, "dim", dim)

    def extra_repr(self) -> str:
        return f"slots={self.slots}, dim={self.dim}"

    def empty(self, batch: int, device=None, dtype: Optional[torch.dtype] = None) -> Tensor:
        """A zero memory ``[batch, S, D]``."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 0:
            raise ValueError(f"{NAME}.empty: batch must be an int ≥ 0, got {batch!r}")
        return torch.zeros(batch, self.slots, self.dim, device=device, dtype=dtype)

    def _check(self, M) -> None:
        checks.tensor(NAME, "M", M, (3,))
        if tuple(M.shape[1:]) != (self.slots, self.dim):
            raise ValueError(f"{NAME}: Expected M of shape [B, S={self.slots}, D={self.dim}], "
                             f"got {list(M.shape)}")

    def read(self, M: Tensor, q: Tensor, mask: Optional[Tensor] = None,
             scale: Optional[float] = None) -> Tuple[Tensor, Tensor]:
        """Attention read: ``(r [B, D], attn [B, S])`` (``ops.wm_read``)."""
        self._check(M)
        return ops.wm_read(M, q, mask, scale)

    forward = read

    def write(self, M: Tensor, v: Tensor) -> Tensor:
        """FIFO write of ``v [B, D]`` (``ops.wm_shift_write``) -> new ``M``."""
        self._check(M)
        return ops.wm_shift_write(M, v)

    def update(self, M: Tensor, w: Tensor, e: Tensor, a: Tensor) -> Tensor:
        """Gated erase/add write (``ops.wm_write``) -> new ``M``."""
        self._check(M)
        return ops.wm_write(M, w, e, a)

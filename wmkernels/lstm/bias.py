"""The two bias gradients of lstm_sequence from the one its kernels compute.

Both biases enter the gates as a sum, so their gradients are equal; they must
not be one tensor all the same: each may become a ``.grad`` that an optimizer
or a later backward accumulates into in place.
"""
from typing import Optional, Tuple

from torch import Tensor


def bias_grads(grad_b: Tensor, has_b_ih: bool, has_b_hh: bool) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """(grad of b_ih, grad of b_hh): ``grad_b`` for the first bias given, a copy
    for the second, None for an absent one."""
    grad_b_ih = grad_b if has_b_ih else None
    grad_b_hh = (grad_b.clone() if has_b_ih else grad_b) if has_b_hh else None
    return grad_b_ih, grad_b_hh

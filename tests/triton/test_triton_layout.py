"""Non-contiguous inputs on the triton backend: the same results as contiguous ones
(every output and input gradient against the float64 reference)."""
import pytest
import torch

from tests.triton.triton_support import assert_matches, needs_triton, quiet_interpreter
from wmkernels import testing

pytestmark = [needs_triton, quiet_interpreter]


def transposed_storage(t: torch.Tensor) -> torch.Tensor:
    """The same values, laid out with the first two dimensions swapped (non-contiguous)."""
    return t.transpose(0, 1).contiguous().transpose(0, 1) if t.dim() >= 2 else t


@pytest.mark.parametrize("op, sizes", [
    ("lstm_cell", dict(B=3, H=5)),
    ("lstm_sequence", dict(T=3, B=2, I=4, H=5, with_lengths=True)),
    ("wm_read", dict(B=3, S=4, D=5, with_mask=True)),
    ("wm_shift_write", dict(B=3, S=4, D=5)),
    ("wm_write", dict(B=3, S=4, D=5)),
    ("wm_lstm_sequence", dict(T=3, B=2, I=4, H=5, S=3, D=4, write_mode="fifo", with_lengths=True)),
    ("wm_lstm_sequence", dict(T=3, B=2, I=4, H=5, S=3, D=4, write_mode="gated")),
])
def test_non_contiguous_inputs(op, sizes):
    case = testing.random_case(op, **sizes)
    case.tensors = {k: transposed_storage(v) for k, v in case.tensors.items()}
    assert any(not t.is_contiguous() for t in case.tensors.values())
    assert_matches(case)

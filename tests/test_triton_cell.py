"""The triton backend's lstm_cell against the float64 reference."""
import pytest
import torch

from triton_support import DEVICE, assert_matches, gpu_only, needs_triton, quiet_interpreter
from wmkernels import ops, testing

pytestmark = [needs_triton, quiet_interpreter]


@pytest.mark.parametrize("sizes", [dict(B=3, H=9), dict(B=1, H=1), dict(B=5, H=37)])
def test_lstm_cell_float32(sizes):
    assert_matches(testing.random_case("lstm_cell", **sizes))


def test_lstm_cell_float16():
    assert_matches(testing.random_case("lstm_cell", B=3, H=9), torch.float16)


@gpu_only
def test_lstm_cell_bfloat16():
    assert_matches(testing.random_case("lstm_cell", B=19, H=130), torch.bfloat16)


def test_lstm_cell_empty_batch():
    h, c = ops.lstm_cell(torch.zeros(0, 8, device=DEVICE), torch.zeros(0, 2, device=DEVICE), backend="triton")
    assert h.shape == (0, 2) and c.shape == (0, 2)

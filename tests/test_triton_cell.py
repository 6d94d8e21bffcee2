"""The triton backend's lstm_cell against the float64 reference (under
TRITON_INTERPRET=1 on CPU, set by conftest when no GPU is present)."""
import pytest
import torch

from wmkernels import testing
from wmkernels.backends import BACKENDS

pytestmark = pytest.mark.skipif(BACKENDS["triton"].device_reason(torch.device("cpu")) is not None
                                and not torch.cuda.is_available(),
                                reason="triton backend unavailable: " + str(
                                    BACKENDS["triton"].device_reason(torch.device("cpu"))))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GPU_ONLY = pytest.mark.skipif(not torch.cuda.is_available(),
                              reason="bfloat16 needs a GPU: the Triton interpreter has no bf16 arithmetic")


def assert_matches(case, dtype):
    rows = testing.compare(case, "triton", dtype, DEVICE)
    bad = [f"{r.name}: {r.error:.2e} > {r.tolerance:.0e}" for r in rows if not r.passed]
    assert not bad, f"{case.describe()}: " + "; ".join(bad)


@pytest.mark.parametrize("sizes", [dict(B=3, H=9), dict(B=1, H=1), dict(B=5, H=37)])
def test_lstm_cell_float32(sizes):
    assert_matches(testing.random_case("lstm_cell", **sizes), torch.float32)


def test_lstm_cell_float16():
    assert_matches(testing.random_case("lstm_cell", B=3, H=9), torch.float16)


@GPU_ONLY
def test_lstm_cell_bfloat16():
    assert_matches(testing.random_case("lstm_cell", B=19, H=130), torch.bfloat16)


def test_lstm_cell_empty_batch():
    from wmkernels import ops
    h, c = ops.lstm_cell(torch.zeros(0, 8, device=DEVICE), torch.zeros(0, 2, device=DEVICE), backend="triton")
    assert h.shape == (0, 2) and c.shape == (0, 2)

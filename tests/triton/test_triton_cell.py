"""The triton backend's lstm_cell against the float64 reference."""
import pytest
import torch

from tests.triton.triton_support import DEVICE, assert_matches, gpu_only, needs_triton, quiet_interpreter
from wmkernels import ops, testing
from wmkernels.backends import BACKENDS, BackendUnavailableError
from wmkernels.ops import OP_INPUTS

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


CPU_ONLY = pytest.mark.skipif(DEVICE != "cpu", reason="about the interpreter (CPU tensors) only")


@CPU_ONLY
@pytest.mark.parametrize("op", sorted(OP_INPUTS))
def test_bfloat16_on_cpu_tensors_is_refused(op):
    """The interpreter gets bfloat16 matrix products wrong: refused with a reason, never run."""
    reason = BACKENDS["triton"].case_reason(op, torch.device("cpu"), torch.bfloat16)
    assert reason and "bfloat16" in reason


@CPU_ONLY
def test_bfloat16_on_cpu_tensors_raises():
    with pytest.raises(BackendUnavailableError, match="bfloat16 on CUDA tensors only"):
        ops.lstm_cell(torch.randn(2, 8, dtype=torch.bfloat16), torch.randn(2, 2, dtype=torch.bfloat16),
                      backend="triton")


def test_float32_tanh_is_accurate_element_by_element_near_zero():
    """h ≈ tanh(c) with |c| ≤ 1e-2: every element within the float32 tolerance,
    so a one-element output cannot fail on the formula's cancellation."""
    B, H = 5, 37
    gates = torch.empty(B, 4 * H, dtype=torch.float64)
    gates[:, :H], gates[:, H:2 * H], gates[:, 3 * H:] = -30.0, 30.0, 30.0
    gates[:, 2 * H:3 * H] = torch.randn(B, H, dtype=torch.float64)
    c_prev = (torch.rand(B, H, dtype=torch.float64) * 2 - 1) * 1e-2
    h_ref, _ = ops.lstm_cell(gates, c_prev, backend="reference")
    h, _ = ops.lstm_cell(gates.float().to(DEVICE), c_prev.float().to(DEVICE), backend="triton")
    relative = ((h.double().cpu() - h_ref).abs() / h_ref.abs()).max().item()
    assert relative < 1e-5, relative


def test_gates_too_large_for_int32_offsets_are_refused():
    """The kernels index in int32: gates of 2^31 elements or more get a clear error
    before anything is allocated or launched (zero-stride views: no real memory)."""
    B, H = 2 ** 27, 2 ** 2  # B·4H = 2^31
    gates = torch.zeros(1, 1, device=DEVICE).expand(B, 4 * H)
    c_prev = torch.zeros(1, 1, device=DEVICE).expand(B, H)
    with pytest.raises(ValueError, match=r"int32.*2\^31"):
        ops.lstm_cell(gates, c_prev, backend="triton")

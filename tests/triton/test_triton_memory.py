"""The triton backend's working-memory ops against the float64 reference."""
import pytest
import torch

from tests.triton.triton_support import DEVICE, assert_matches, gpu_only, needs_triton, quiet_interpreter
from wmkernels import ops, testing

pytestmark = [needs_triton, quiet_interpreter]
SIZES = [dict(B=3, S=5, D=6), dict(B=1, S=1, D=1), dict(B=2, S=7, D=19)]


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("with_mask", [False, True])
def test_wm_read_float32(sizes, with_mask):
    assert_matches(testing.random_case("wm_read", **sizes, with_mask=with_mask))


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("op", ["wm_shift_write", "wm_write"])
def test_memory_write_float32(op, sizes):
    assert_matches(testing.random_case(op, **sizes))


@pytest.mark.parametrize("op", ["wm_read", "wm_shift_write", "wm_write"])
def test_memory_ops_float16(op):
    assert_matches(testing.random_case(op, B=3, S=5, D=6, with_mask=op == "wm_read"), torch.float16)


@gpu_only
@pytest.mark.parametrize("op", ["wm_read", "wm_shift_write", "wm_write"])
def test_memory_ops_bfloat16(op):
    assert_matches(testing.random_case(op, B=21, S=13, D=70), torch.bfloat16)


@pytest.mark.parametrize("op", ["wm_read", "wm_write"])
def test_memory_ops_float32_tiled(op, monkeypatch):
    """Several row blocks and slot-width chunks, as on a GPU at large sizes."""
    from wmkernels.memory import memory_ops_triton as memory
    from wmkernels.triton import tiles
    monkeypatch.setattr(memory, "_blocks", lambda M: (
        ((M.shape[0] + 1) // 2,), 2, tiles.pow2(M.shape[1]), 4, 4))
    assert_matches(testing.random_case(op, B=3, S=5, D=10, with_mask=op == "wm_read"))


@pytest.mark.parametrize("op", ["wm_read", "wm_shift_write", "wm_write"])
def test_memory_too_large_for_int32_offsets_is_refused(op):
    """The kernels index in int32: a memory of 2^31 elements or more gets a clear
    error before anything is allocated or launched (zero-stride views: no real memory)."""
    B, S, D = 2 ** 21, 2 ** 5, 2 ** 5  # B·S·D = 2^31
    M = torch.zeros(1, 1, 1, device=DEVICE).expand(B, S, D)
    vec = torch.zeros(1, 1, device=DEVICE).expand(B, D)
    weights = torch.zeros(1, 1, device=DEVICE).expand(B, S)
    with pytest.raises(ValueError, match=r"int32.*2\^31"):
        if op == "wm_read":
            ops.wm_read(M, vec, backend="triton")
        elif op == "wm_shift_write":
            ops.wm_shift_write(M, vec, backend="triton")
        else:
            ops.wm_write(M, weights, vec, vec, backend="triton")

"""The triton backend's working-memory ops against the float64 reference."""
import pytest
import torch

from triton_support import assert_matches, gpu_only, needs_triton, quiet_interpreter
from wmkernels import testing

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
    from wmkernels.triton import memory, tiles
    monkeypatch.setattr(memory, "_blocks", lambda M: (
        ((M.shape[0] + 1) // 2,), 2, tiles.pow2(M.shape[1]), 4, 4))
    assert_matches(testing.random_case(op, B=3, S=5, D=10, with_mask=op == "wm_read"))

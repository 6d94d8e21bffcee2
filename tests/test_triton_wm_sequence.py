"""The triton backend's wm_lstm_sequence (fifo and gated) against the float64 reference."""
import pytest
import torch

from triton_support import DEVICE, assert_matches, gpu_only, needs_triton, quiet_interpreter
from wmkernels import testing

pytestmark = [needs_triton, quiet_interpreter]


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
@pytest.mark.parametrize("sizes, with_lengths", [
    (dict(T=5, B=3, I=7, H=9, S=5, D=6), False),
    (dict(T=7, B=4, I=5, H=11, S=3, D=5), True),
    (dict(T=1, B=1, I=1, H=1, S=1, D=1), False),
])
def test_wm_lstm_sequence_float32(write_mode, sizes, with_lengths):
    assert_matches(testing.random_case("wm_lstm_sequence", **sizes, write_mode=write_mode,
                                       with_lengths=with_lengths))


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
def test_wm_lstm_sequence_float32_tiled(write_mode, monkeypatch):
    """Two batch tiles, hidden and slot-width chunks (memory tiles narrower than the
    products' ones), as on a GPU at large sizes."""
    from wmkernels.triton import wm_sequence
    monkeypatch.setattr(wm_sequence, "launch_config", lambda B, H, S, D, like: dict(
        BLOCK_B=16, BLOCK_N=16, BLOCK_K=16, BLOCK_S=8, BLOCK_D=16, BLOCK_DM=4, PRECISION="ieee", num_warps=4))
    assert_matches(testing.random_case("wm_lstm_sequence", T=3, B=17, I=3, H=18, S=5, D=17,
                                       write_mode=write_mode, with_lengths=True))


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
def test_wm_lstm_sequence_float16(write_mode):
    assert_matches(testing.random_case("wm_lstm_sequence", T=4, B=3, I=5, H=9, S=4, D=6,
                                       write_mode=write_mode, with_lengths=True), torch.float16)


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
@pytest.mark.parametrize("T, B", [(0, 2), (3, 0)])
def test_wm_lstm_sequence_empty(write_mode, T, B):
    assert_matches(testing.random_case("wm_lstm_sequence", T=T, B=B, I=3, H=5, S=2, D=3, write_mode=write_mode))


@gpu_only
@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
def test_wm_lstm_sequence_bfloat16(write_mode):
    assert_matches(testing.random_case("wm_lstm_sequence", T=20, B=19, I=33, H=130, S=13, D=70,
                                       write_mode=write_mode, with_lengths=True), torch.bfloat16)


@pytest.mark.parametrize("mode", ["fifo", "gated"])
def test_saved_bytes_grow_with_attention_and_checkpoints_only(mode):
    """Doubling S adds exactly the read weights (T·B·S floats) and, in gated mode,
    the wider checkpoints (⌈T/K⌉ of them, K = ⌈√T⌉) to what is saved."""
    T, B, H, D = 16, 2, 4, 16
    small, large = (testing.wm_lstm_saved_bytes("triton", mode, T, B, H, S, D, DEVICE) for S in (8, 16))
    grown = large - small
    from wmkernels.backends.base import checkpoint_interval
    K = checkpoint_interval(T)
    checkpoints = -(-T // K) * B * 8 * D * 4 if mode == "gated" else 0
    fifo_tape = 8 * B * D * 4 if mode == "fifo" else 0  # the tape starts with M0's S rows
    assert grown == T * B * 8 * 4 + checkpoints + fifo_tape
    assert grown < T * B * 8 * D * 4 / 2

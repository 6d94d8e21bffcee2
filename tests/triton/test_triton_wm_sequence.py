"""The triton backend's wm_lstm_sequence (fifo and gated) against the float64 reference."""
import pytest
import torch

from tests.triton.triton_support import DEVICE, assert_matches, gpu_only, needs_triton, quiet_interpreter
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
    from wmkernels.wm_lstm import wm_lstm_sequence_triton as wm_sequence
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
    from wmkernels.contract import checkpoint_interval
    K = checkpoint_interval(T)
    checkpoints = -(-T // K) * B * 8 * D * 4 if mode == "gated" else 0
    fifo_tape = 8 * B * D * 4 if mode == "fifo" else 0  # the tape starts with M0's S rows
    assert grown == T * B * 8 * 4 + checkpoints + fifo_tape
    assert grown < T * B * 8 * D * 4 / 2


# ----------------------------------------------------------------- the split grid (wm_lstm_sequence_split_triton.py)

def plans_of(monkeypatch):
    """Every plan the split WM kernels launch with (collected into the returned list)."""
    from wmkernels.triton import schedule
    plans, real = [], schedule.plan
    monkeypatch.setattr(schedule, "plan", lambda *a: plans.append(real(*a)) or plans[-1])
    return plans


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
@pytest.mark.parametrize("order", ["", ":reversed"])
@pytest.mark.parametrize("sizes, with_lengths", [
    (dict(T=5, B=3, I=7, H=40, S=5, D=6), False),
    (dict(T=7, B=4, I=5, H=37, S=3, D=17), True),  # gated: three checkpoint segments (3, 3, 1 steps)
    (dict(T=4, B=2, I=3, H=20, S=1, D=3), True),
    (dict(T=1, B=1, I=1, H=1, S=1, D=1), False),
])
def test_split_across_programs(monkeypatch, write_mode, order, sizes, with_lengths):
    """The split grid, one launch per step: two or three hidden-unit programs share
    each step (summing their shares of q, the write's pre-activations and dr), run in
    both orders, so a program reading what another writes in the same step fails in
    one of them."""
    monkeypatch.setenv("WMKERNELS_TRITON_SCHEDULE", "steps" + order)
    plans = plans_of(monkeypatch)
    assert_matches(testing.random_case("wm_lstm_sequence", **sizes, write_mode=write_mode,
                                       with_lengths=with_lengths))
    assert [p.grid[0] for p in plans] == [-(-sizes["H"] // 16)] * 2  # forward, backward
    assert all(p.config["BLOCK_H"] > 0 for p in plans)  # the interpreter keeps the weights resident


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
@pytest.mark.parametrize("order", ["", ":reversed"])
def test_split_across_programs_streaming_the_weights(monkeypatch, write_mode, order):
    """The same with w_hh and w_rh streamed in chunks (as on a GPU where they do not fit)."""
    from wmkernels.triton import schedule
    monkeypatch.setattr(schedule, "RESIDENT_ELEMENTS", 0)
    monkeypatch.setenv("WMKERNELS_TRITON_SCHEDULE", "steps" + order)
    plans = plans_of(monkeypatch)
    assert_matches(testing.random_case("wm_lstm_sequence", T=4, B=3, I=5, H=37, S=3, D=17, write_mode=write_mode,
                                       with_lengths=True))  # gated: two checkpoint segments
    assert [(p.grid[0], p.config["BLOCK_H"]) for p in plans] == [(3, 0)] * 2


@pytest.mark.parametrize("arch, mode, S, forward_h, backward_h", [
    (90, "fifo", 32, 1024, 1024), (90, "gated", 128, 1024, 0), (90, "fifo", 128, 1024, 1024),
    (80, "gated", 32, 0, 1024)])
def test_split_keeps_weights_resident_where_they_fit(monkeypatch, arch, mode, S, forward_h, backward_h):
    """At H = 768, D = 64, B = 16 in bfloat16: an H100 keeps w_hh and w_rh resident
    forward (176 KiB of shared memory with the staged operand), an A100 cannot
    (163 KiB); backward keeps w_hh's columns but for the gated write at 128 slots."""
    from wmkernels.triton import schedule
    from wmkernels.wm_lstm import wm_lstm_sequence_triton as wm_sequence
    from wmkernels.triton.launch import RECORDED_DEVICES, recording
    monkeypatch.setenv("WMKERNELS_TRITON_SCHEDULE", "persistent")
    like = torch.empty(0, dtype=torch.bfloat16)
    with recording(RECORDED_DEVICES[arch]):
        forward = wm_sequence.split_plan(16, 768, S, 64, like, mode == "gated")
        backward = wm_sequence.split_plan(16, 768, S, 64, like, mode == "gated", backward=True)
    assert forward.grid == backward.grid == (48, 1)
    assert (forward.config["BLOCK_H"], backward.config["BLOCK_H"]) == (forward_h, backward_h)
    assert forward.config["BLOCK_R"] == (64 if forward_h else 0) and "BLOCK_R" not in backward.config
    assert backward.config["num_warps"] == 8  # resident from 1024 rows on; streamed, the 128-slot tiles'
    with recording(RECORDED_DEVICES[arch]):
        assert schedule.keeps_resident(1024 + 64, 1024, 16, 16, like) == (arch == 90)
        assert schedule.keeps_resident(1024, 1024, 16, 16, like)  # lstm_sequence's, on both


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
def test_split_batch_tiles_float16(monkeypatch, write_mode):
    """Two batch tiles (each its own barrier counter) of three hidden-unit programs, in float16."""
    from wmkernels.wm_lstm import wm_lstm_sequence_split_triton as wm_split
    real = wm_split.split_config
    monkeypatch.setattr(wm_split, "split_config", lambda *a: dict(real(*a), BLOCK_B=16, BLOCK_D=16, BLOCK_DM=4))
    monkeypatch.setenv("WMKERNELS_TRITON_SCHEDULE", "steps:reversed")
    plans = plans_of(monkeypatch)
    # T = 3: three steps cross both tiles' barriers; float16 under the interpreter costs ~5 s a step
    assert_matches(testing.random_case("wm_lstm_sequence", T=3, B=17, I=3, H=33, S=4, D=18, write_mode=write_mode,
                                       with_lengths=True), torch.float16)
    assert {p.grid for p in plans} == {(3, 2)}


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
@pytest.mark.parametrize("forward, backward", [("steps", "tile"), ("tile", "steps")])
def test_either_backward_follows_either_forward(write_mode, forward, backward):
    """The split and tile kernels keep the same buffers: a forward on one grid
    and a backward on the other give the tile kernels' gradients."""
    from wmkernels import ops
    from wmkernels.triton import schedule
    case = testing.random_case("wm_lstm_sequence", T=5, B=3, I=3, H=20, S=3, D=5, write_mode=write_mode,
                               with_lengths=True)
    grads = []
    for order in ((forward, backward), ("tile", "tile")):
        inputs = {k: v.float().requires_grad_() for k, v in case.tensors.items()}
        params = {k: inputs[k] for k in inputs if k not in ("x", "h0", "c0", "M0")}
        with schedule.using(order[0]):
            y, (h, c, M) = ops.wm_lstm_sequence(inputs["x"], (inputs["h0"], inputs["c0"], inputs["M0"]), params,
                                                write_mode=write_mode, lengths=case.extras["lengths"],
                                                backend="triton")
        with schedule.using(order[1]):
            torch.autograd.backward([y, h, c, M], [torch.ones_like(t) for t in (y, h, c, M)])
        grads.append([inputs[k].grad for k in inputs])
    for name, mixed, tiled in zip(case.tensors, *grads):
        assert testing.rel_err(mixed, tiled) < 1e-5, name


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
def test_split_saves_what_the_tile_kernels_save(monkeypatch, write_mode):
    tiled = testing.wm_lstm_saved_bytes("triton", write_mode, 6, 2, 20, 8, 16, DEVICE)
    monkeypatch.setenv("WMKERNELS_TRITON_SCHEDULE", "steps")
    assert testing.wm_lstm_saved_bytes("triton", write_mode, 6, 2, 20, 8, 16, DEVICE) == tiled


@gpu_only
@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sizes", [dict(T=33, B=16, I=64, H=768, S=32, D=64), dict(T=9, B=40, I=5, H=130, S=13, D=70)])
@pytest.mark.parametrize("order", ["", ":reversed"])
def test_persistent_on_gpu(monkeypatch, write_mode, dtype, sizes, order):
    """The split grid for real: one cooperative launch, a grid barrier per step, several batch tiles (B = 40)."""
    monkeypatch.setenv("WMKERNELS_TRITON_SCHEDULE", "persistent" + order)
    plans = plans_of(monkeypatch)
    assert_matches(testing.random_case("wm_lstm_sequence", **sizes, write_mode=write_mode, with_lengths=True), dtype)
    assert plans and all(p.kind == "persistent" for p in plans)

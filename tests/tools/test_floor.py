"""The floor model (wmkernels.tools.floor): its byte counts and arithmetic on CPU, its
measurements on a GPU."""
import pytest
import torch

from wmkernels.tools import bench, floor

RATES = floor.Rates(hbm_bytes_s=4e12, l2_bytes_s=8e12, barrier_s=1e-6, programs=48, matmul_flop_s=5e14)


def test_step_traffic_counts_what_a_persistent_step_moves():
    B, H = 16, 768
    forward, backward = floor.lstm_step_traffic(B, H, torch.bfloat16, programs_per_tile=48, batch_tiles=1,
                                                resident=False)
    # forward: xp_t (bf16) in; act (fp32, 4H), h and c (fp32), y (bf16) out
    assert forward.hbm_bytes == B * (4 * H * 2 + 4 * H * 4 + 2 * H * 4 + H * 2)
    # every one of the 48 programs gathers h_{t-1} (exchanged in bf16); w_hh (bf16) streams once per batch tile
    assert forward.l2_bytes == 48 * B * H * 2 + 4 * H * H * 2
    # backward gathers all of dg_{t+1} (bf16, 4H wide)
    assert backward.l2_bytes == 48 * B * 4 * H * 2 + 4 * H * H * 2
    # act, c_t, c_{t-1} (fp32) and dy (bf16) in; dg (bf16) out
    assert backward.hbm_bytes == B * (4 * H * 4 + 2 * H * 4 + H * 2 + 4 * H * 2)
    assert forward.barriers == backward.barriers == 1
    kept, kept_backward = floor.lstm_step_traffic(B, H, torch.bfloat16, 48, 1, resident=True)
    assert forward.l2_bytes - kept.l2_bytes == 4 * H * H * 2
    # resident, each program reads its slice (16 units' rows of the four gates) from shared memory instead
    assert kept.smem_bytes == kept_backward.smem_bytes == 4 * 16 * H * 2 and forward.smem_bytes == 0


def test_floor_adds_barriers_the_slower_memory_and_the_matrix_products():
    T, B, I, H = 100, 16, 32, 64
    model = floor.lstm_floor(T, B, I, H, torch.float16, RATES, programs_per_tile=4, batch_tiles=1, resident=True)
    fwd, bwd = floor.lstm_step_traffic(B, H, torch.float16, 4, 1, True)
    step = lambda s: 1e-6 + max(s.hbm_bytes / 4e12, s.l2_bytes / 8e12)  # noqa: E731
    mm_fwd, mm_bwd = 2 * T * B * 4 * H * I / 5e14, (4 * T * B * 4 * H * I + 2 * T * B * 4 * H * H) / 5e14
    assert model.forward_ms == pytest.approx((T * step(fwd) + mm_fwd) * 1e3)
    assert model.total_ms == pytest.approx((T * step(fwd) + mm_fwd + T * step(bwd) + mm_bwd) * 1e3)
    assert model.matmul_ms == pytest.approx((mm_fwd + mm_bwd) * 1e3)
    described = model.describe()
    assert described["rates"]["barrier_us"] == 1.0 and described["forward_step"]["barriers"] == 1


def test_measuring_needs_a_gpu():
    with pytest.raises(ValueError, match="device must be a CUDA device"):
        floor.measure_rates("cpu", torch.float32, 4)


def test_bench_table_reports_time_over_the_floor():
    model = floor.lstm_floor(64, 16, 32, 64, torch.float16, RATES, 4, 1, True).describe()
    row = bench.Result("lstm_sequence", "triton persistent", "torch.nn.LSTM", ms=3 * model["total_ms"], ratio=1.0,
                       saved_bytes=1, forward_ms=1.0, floor=model)
    table = bench.format_table([row])
    assert " 3.0x " in table and "floor of lstm_sequence (persistent schedule" in table
    assert "grid barrier 1.0 us with 48 programs" in table
    assert "forward step: HBM " in table and "shared 8 KB a program, 1 barrier" in table
    failed = bench.describe_floor("lstm_sequence", {"error": "RuntimeError: probe"})
    assert "not measured (RuntimeError: probe)" in failed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU-only: the rates are measured on the device")
def test_floor_on_a_gpu():
    pytest.importorskip("triton")
    model = floor.lstm_floor_on("cuda", torch.bfloat16, 1024, 16, 768, 768)
    assert model is not None
    rates = model.rates
    assert 1e11 < rates.hbm_bytes_s < 1e14 and rates.l2_bytes_s > rates.hbm_bytes_s / 2
    assert 0 < rates.barrier_s < 1e-4 and rates.programs == 48
    assert 0 < model.forward_ms < model.total_ms


def test_wm_step_traffic_counts_the_memory_work_of_each_program():
    B, H, S, D, P = 16, 768, 32, 64, 48
    fifo_fwd, fifo_bwd = floor.wm_step_traffic(B, H, S, D, torch.bfloat16, False, P, 1)
    gated_fwd, gated_bwd = floor.wm_step_traffic(B, H, S, D, torch.bfloat16, True, P, 1)
    memory = B * S * D * 4
    weights = (4 * H * (H + D) + 2 * D * H) * 2  # w_hh, w_rh, w_q, w_v in bf16
    # forward: every program gathers h_{t-1} (bf16) and r_t (fp32), adds its q and v shares, reads the memory once
    assert fifo_fwd.l2_bytes == P * B * H * 2 + P * B * D * 4 + weights + P * B * 2 * D * 4 + P * memory
    # gated adds w_e, the e shares, and each program's read of M_t and write of M_{t+1}
    assert gated_fwd.l2_bytes - fifo_fwd.l2_bytes == D * H * 2 + P * B * D * 4 + 2 * P * memory
    # backward: gathers dg_{t+1} (bf16), adds dr shares, reads the window twice; fifo's first
    # program adds the window's gradient to the tape (a read and a write)
    assert fifo_bwd.l2_bytes == P * B * 4 * H * 2 + weights + P * B * D * 4 + 2 * P * memory + 2 * memory
    assert gated_fwd.hbm_bytes - fifo_fwd.hbm_bytes == B * D * 4  # e kept
    assert gated_bwd.hbm_bytes - fifo_bwd.hbm_bytes == 2 * B * D * 4  # e in, dpe out
    assert fifo_fwd.barriers == gated_bwd.barriers == 1
    assert fifo_fwd.smem_bytes == fifo_bwd.smem_bytes == 0


def test_wm_step_traffic_with_resident_weights():
    """Resident forward, w_hh and w_rh leave the L2 stream for shared memory and r_t
    travels through the exchange in bf16 (written and gathered by every program);
    resident backward, w_hh does."""
    B, H, S, D, P = 16, 768, 32, 64, 48
    fwd, bwd = floor.wm_step_traffic(B, H, S, D, torch.bfloat16, False, P, 1)
    kept_fwd, kept_bwd = floor.wm_step_traffic(B, H, S, D, torch.bfloat16, False, P, 1, True, True)
    assert fwd.l2_bytes - kept_fwd.l2_bytes == 4 * H * (H + D) * 2 + P * B * D * 4 - 2 * P * B * D * 2
    assert bwd.l2_bytes - kept_bwd.l2_bytes == 4 * H * H * 2
    assert kept_fwd.smem_bytes == 4 * (H + D) * 16 * 2 and kept_bwd.smem_bytes == 4 * H * 16 * 2
    assert (kept_fwd.hbm_bytes, kept_bwd.hbm_bytes) == (fwd.hbm_bytes, bwd.hbm_bytes)


def test_wm_floor_adds_the_memory_work_to_the_lstm_parts():
    T, B, I, H, S, D = 100, 16, 32, 64, 8, 16
    fifo = floor.wm_floor(T, B, I, H, S, D, torch.float16, False, RATES, 4, 1)
    fwd, bwd = floor.wm_step_traffic(B, H, S, D, torch.float16, False, 4, 1)
    step = lambda s: 1e-6 + max(s.hbm_bytes / 4e12, s.l2_bytes / 8e12)  # noqa: E731
    mm_fwd = 2 * T * B * 4 * H * I
    mm_bwd = 2 * mm_fwd + 2 * T * B * (4 * H * (H + D) + 2 * D * H)
    assert floor.wm_matmul_flops(T, B, I, H, D, False) == (mm_fwd, mm_bwd)
    assert fifo.total_ms == pytest.approx((T * (step(fwd) + step(bwd)) + (mm_fwd + mm_bwd) / 5e14) * 1e3)
    gated = floor.wm_floor(T, B, I, H, S, D, torch.float16, True, RATES, 4, 1)
    assert gated.total_ms > fifo.total_ms and gated.forward_ms > fifo.forward_ms


def test_bench_asks_for_the_wm_floor_on_a_gpu_only():
    assert bench._floor("wm_lstm_sequence[fifo]", "cpu", torch.float32, bench.DEFAULT_SIZES) is None
    assert bench._floor("lstm_cell", "cpu", torch.float32, bench.DEFAULT_SIZES) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU-only: the rates are measured on the device")
@pytest.mark.parametrize("gated", [False, True])
def test_wm_floor_on_a_gpu(gated):
    pytest.importorskip("triton")
    model = floor.wm_floor_on("cuda", torch.bfloat16, 1024, 16, 768, 768, 32, 64, gated)
    assert model is not None and model.rates.programs == 48
    assert 0 < model.forward_ms < model.total_ms

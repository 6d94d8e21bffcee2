"""The floor model (wmkernels.floor): its byte counts and arithmetic on CPU, its
measurements on a GPU."""
import pytest
import torch

from wmkernels import bench, floor

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
    kept, _ = floor.lstm_step_traffic(B, H, torch.bfloat16, 48, 1, resident=True)
    assert forward.l2_bytes - kept.l2_bytes == 4 * H * H * 2


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

"""The benchmark harness (wmkernels.tools.bench, ``python -m wmkernels bench``) at
tiny sizes: every row runs, lstm_sequence rows carry GFLOP/s and a fraction of
the measured peak, saved bytes are reported. Timings are not checked."""
import math
import os

import pytest
import torch

from wmkernels.tools import bench, timing
from wmkernels.__main__ import main

TINY = dict(T=3, B=2, I=4, H=5, S=3, D=4)


def test_lstm_flops_count():
    # forward 2·B·4H·(I+H) per step, backward twice that
    assert bench.lstm_flops(T=2, B=3, I=4, H=5) == 3 * 2 * (2 * 3 * 20 * 9)


def test_time_interleaved_marks_failures_nan():
    def boom():
        raise RuntimeError("no")
    ok, bad = timing.time_interleaved([lambda: None, boom], "cpu", repeat=2)
    assert ok.median >= 0 and ok.min <= ok.median and ok.iqr >= 0 and math.isnan(bad.median)


def test_spread_and_the_noise_warning():
    rounds = timing.Timing.of([1.0, 2.0, 3.0, 10.0])
    assert rounds.median == 2.5 and rounds.min == 1.0 and rounds.iqr > 0
    quiet = bench.Result("op", "impl", "base", 2.0, 1.0, 0, min_ms=1.9, iqr_ms=0.1)
    loud = bench.Result("op", "loud", "base", 2.0, 1.0, 0, min_ms=1.0, iqr_ms=0.5)
    assert not quiet.noisy and loud.noisy
    table = bench.format_table([quiet, loud])
    warning = table.split("warning:")[1]
    assert "NOISY" in table and "op loud" in warning and "op impl" not in warning


def test_run_benchmarks_lstm_rows():
    results = bench.run_benchmarks("cpu", torch.float32, repeat=1, sizes=TINY,
                                   ops_wanted=("lstm_sequence",), peak=100.0)
    impls = {r.impl for r in results}
    assert {"torch.nn.LSTM", "reference"} <= impls
    for r in results:
        assert r.error is None, r.error
        assert r.ms > 0 and r.gflops > 0
        assert r.peak_fraction == r.gflops / 100.0
        assert r.saved_bytes > 0
    assert next(r for r in results if r.impl == "torch.nn.LSTM").ratio == 1.0


def test_run_benchmarks_lstm_cell_rows():
    """The cell layer on every backend here beside torch.nn.LSTMCell (the evidence
    auto's choice for the cell waits for), each row a working forward+backward."""
    results = bench.run_benchmarks("cpu", torch.float32, repeat=1, sizes=TINY, ops_wanted=("lstm_cell",))
    assert {r.impl for r in results} == {"torch.nn.LSTMCell", "reference", "cpu", "aten"}
    for r in results:
        assert r.error is None and r.ms > 0 and r.saved_bytes > 0, r
    assert next(r for r in results if r.impl == "torch.nn.LSTMCell").ratio == 1.0


def test_cli_bench_prints_peak_and_table(capsys):
    args = ["bench", "--device", "cpu", "--repeat", "1", "--op", "lstm_sequence"]
    for key, value in TINY.items():
        args += [f"--{key}", str(value)]
    assert main(args) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "peak:" in out and "GFLOP/s" in out and "saved bytes" in out and "IQR" in out
    assert "torch.nn.LSTM" in out and "threads" in out and "ISA" in out
    assert "[bench 1/1] lstm_sequence" in captured.err  # progress


def test_cli_bench_plot_writes_scaling_curves(tmp_path, capsys):
    path = tmp_path / "scaling.png"
    args = ["bench", "--device", "cpu", "--repeat", "1", "--op", "lstm_sequence", "--plot", str(path)]
    for key, value in dict(TINY, T=4, B=4, H=4, I=4).items():
        args += [f"--{key}", str(value)]
    assert main(args) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10000
    err = capsys.readouterr().err
    assert err.count("[bench") >= 4 * 3  # every point of every axis was timed


def test_saved_bytes_column_says_more_or_less():
    rows = [bench.Result("lstm_cell", "base", "base", 1.0, 1.0, 100),
            bench.Result("lstm_cell", "lean", "base", 1.0, 1.0, 50),
            bench.Result("lstm_cell", "heavy", "base", 1.0, 1.0, 300)]
    table = bench.format_table(rows)
    assert "2.0x less" in table and "3.0x more" in table


def test_persistent_row_runs_forward_and_backward_under_its_schedule():
    pytest.importorskip("triton")
    from wmkernels.triton import schedule

    seen = []
    x = torch.ones(2, requires_grad=True)
    before = os.environ.get(schedule.SCHEDULE_ENV)

    def forward():
        seen.append(schedule.requested())
        return (x * 2,)
    base = bench.Workload("lstm_sequence", "triton", "torch.nn.LSTM", None, forward, [x], flops=7.0)
    row = bench._persistent_workload(base)
    assert (row.impl, row.baseline, row.flops) == ("triton persistent", "torch.nn.LSTM", 7.0)
    row.forward()
    row.run()
    assert seen == [schedule.Schedule("persistent")] * 2 and x.grad is None
    assert os.environ.get(schedule.SCHEDULE_ENV) == before
    swept = bench._persistent_workload(base, ":n64:streamed", "triton persistent n16")
    assert (swept.impl, swept.baseline) == ("triton persistent n64 streamed", "triton persistent n16")
    swept.run()
    assert seen[-1] == schedule.Schedule("persistent", False, 64, True)


def test_persistent_sweep_needs_the_triton_backend_on_a_gpu():
    sizes = dict(bench.DEFAULT_SIZES, T=2, I=3, H=4, S=2, D=3)
    groups = bench.persistent_sweep_workloads("cpu", torch.float32, **sizes)
    assert groups == []  # the interpreter is left out of timings
    assert bench.run_benchmarks("cpu", torch.float32, 1, sizes, ("persistent_sweep",)) == []


def test_rounds_stop_at_the_deadline_after_one_timed_round():
    calls = []
    timing, = bench.time_interleaved([lambda: calls.append(1)], "cpu", repeat=5, deadline=0.0)
    assert timing.rounds == 1 and len(calls) == 2  # the warm-up and one timed round
    timing, = bench.time_interleaved([lambda: None], "cpu", repeat=5)
    assert timing.rounds == 5


def test_group_deadlines_share_the_budget():
    assert bench.group_deadlines(None, 3, 100.0) == [None] * 3
    deadlines = bench.group_deadlines(60.0, 3, 100.0)
    assert deadlines[0] == (100.0 + 20 * 2 / 3, 120.0) and deadlines[-1][1] == 160.0


def test_cli_bench_says_what_it_measures_how_long_and_what_it_gains(capsys):
    args = ["bench", "--device", "cpu", "--repeat", "3", "--budget-s", "30", "--op", "lstm_sequence"]
    for key, value in TINY.items():
        args += [f"--{key}", str(value)]
    assert main(args) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[1].startswith("measuring forward+backward") and "about 30 s" in lines[1]
    assert "up to 3 timed rounds" in lines[1] and "up to 3 timed rounds" in captured.err
    assert "x 4 rounds" not in captured.err
    assert "(at most 3;" in captured.out  # the footer counts the rounds as the progress line does
    gain = next(line for line in lines if line.startswith("took "))
    assert "On this machine" in gain and "torch.nn.LSTM" in gain
    assert "--plot out.png" in lines[-1] and " min " in lines[-1]


def test_sweep_progress_names_the_point(capsys):
    from wmkernels.tools import bench_plot

    curves = bench_plot.sweep("cpu", torch.float32, 1, dict(TINY), axes=("T",), progress=True)
    err = capsys.readouterr().err
    points = bench_plot.sweep_points(TINY, ("T",))
    assert [v for v, _ in curves["T"]] == [v for _, v in points]
    for number, (axis, value) in enumerate(points, 1):
        assert f"[sweep {number}/{len(points)}: T={value}] [bench 1/3] lstm_sequence" in err
    assert bench_plot.sweep_groups(TINY) == sum(bench_plot.groups_per_point(bench_plot.AXIS_OPS[a])
                                                for a, _ in bench_plot.sweep_points(TINY))

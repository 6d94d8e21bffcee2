"""How the recurrent kernels are spread over programs and launches (wmkernels/triton/schedule.py)."""
import contextlib
import functools
import types

import pytest
import torch

pytest.importorskip("triton")

from wmkernels.triton import schedule  # noqa: E402
from wmkernels.triton.launch import RECORDED_DEVICES, recording  # noqa: E402
from wmkernels.lstm.lstm_sequence_triton import launch_config  # noqa: E402


@pytest.mark.parametrize("text, expected", [
    (None, schedule.Schedule("tile")), ("", schedule.Schedule("tile")),
    ("steps", schedule.Schedule("steps")), (" Persistent:reversed ", schedule.Schedule("persistent", True)),
    ("persistent:n64", schedule.Schedule("persistent", False, 64)),
    ("steps:n32:reversed", schedule.Schedule("steps", True, 32)),
    ("persistent:streamed:n16", schedule.Schedule("persistent", False, 16, True)),
])
def test_requested_schedule(monkeypatch, text, expected):
    if text is None:
        monkeypatch.delenv(schedule.SCHEDULE_ENV, raising=False)
    else:
        monkeypatch.setenv(schedule.SCHEDULE_ENV, text)
    assert schedule.requested() == expected


@pytest.mark.parametrize("text", ["fast", "steps:backwards", "tile:", "tile:n32", "persistent:n48",
                                  "persistent:n16:n32", "steps:reversed:reversed", "persistent:n",
                                  "tile:streamed", "steps:streamed:streamed"])
def test_unreadable_schedule_names_the_variable(monkeypatch, text):
    monkeypatch.setenv(schedule.SCHEDULE_ENV, text)
    with pytest.raises(ValueError, match=schedule.SCHEDULE_ENV):
        schedule.requested()


def test_tile_schedule_is_one_program_per_batch_tile(monkeypatch):
    monkeypatch.delenv(schedule.SCHEDULE_ENV, raising=False)
    plan = schedule.plan(40, 768, torch.empty(0), launch_config)
    assert plan.kind == "tile" and plan.grid[0] == 1 and plan.steps_per_launch is None
    assert plan.config["GRID_SYNC"] is False


@pytest.mark.parametrize("B, grid", [(16, (48, 1)), (64, (48, 1)), (128, (48, 2)), (512, (12, 8)), (1024, (6, 16))])
def test_persistent_grid_fits_the_sms(monkeypatch, B, grid):
    """Sized as on an H100 (while recording for the ahead-of-time compile): the smallest
    hidden-unit block whose grid is resident, one cooperative launch for all steps."""
    monkeypatch.setenv(schedule.SCHEDULE_ENV, "persistent")
    with recording():
        plan = schedule.plan(B, 768, torch.empty(0, dtype=torch.bfloat16), launch_config)
    assert plan.kind == "persistent" and plan.grid == grid
    assert grid[0] * grid[1] <= RECORDED_DEVICES[90].sms
    assert plan.config["GRID_SYNC"] and plan.config["launch_cooperative_grid"]
    assert plan.steps_per_launch is None


@pytest.mark.parametrize("B, H, grid, block_h", [(16, 256, (16, 1), 256), (128, 256, (16, 8), 256),
                                                (256, 256, (8, 16), 256), (16, 768, (48, 1), 1024),
                                                (64, 768, (48, 1), 0)])
def test_persistent_keeps_weights_resident_where_they_fit(monkeypatch, B, H, grid, block_h):
    """16-bit w_hh stays in each program (16-row batch tiles) while the gate tiles
    fit RESIDENT_ELEMENTS and the shared memory (H = 768 at BLOCK_N = 16; the backward takes 8
    warps); else 64-row tiles stream it. float32 always streams."""
    monkeypatch.setenv(schedule.SCHEDULE_ENV, "persistent")
    backward_split = functools.partial(schedule.lstm_split_config, backward=True)
    with recording():
        plan = schedule.plan(B, H, torch.empty(0, dtype=torch.float16), launch_config)
        backward = schedule.plan(B, H, torch.empty(0, dtype=torch.float16), launch_config, backward_split)
        streamed_fp32 = schedule.plan(B, H, torch.empty(0), launch_config)
    assert plan.grid == backward.grid == grid and plan.config["BLOCK_H"] == backward.config["BLOCK_H"] == block_h
    assert plan.config["BLOCK_B"] == (16 if block_h else 64)
    assert plan.config["BLOCK_H"] * plan.config["BLOCK_N"] <= schedule.RESIDENT_ELEMENTS
    assert plan.config["num_warps"] == 4
    assert backward.config["num_warps"] == (schedule.RESIDENT_BACKWARD_WARPS if block_h else 4)
    assert streamed_fp32.config["BLOCK_H"] == 0 and streamed_fp32.config["BLOCK_B"] == 16


@pytest.mark.parametrize("block_n, B, grid, kind", [(32, 16, (24, 1), "persistent"), (128, 16, (6, 1), "persistent"),
                                                    (16, 256, (48, 16), "steps")])
def test_split_block_asked_for(monkeypatch, block_n, B, grid, kind):
    """``:n<BLOCK_N>`` fixes the hidden-unit block (for measuring); a grid past
    the SMs still falls back to steps."""
    monkeypatch.setenv(schedule.SCHEDULE_ENV, f"persistent:n{block_n}")
    with recording(), pytest.warns(RuntimeWarning) if kind == "steps" else contextlib.nullcontext():
        plan = schedule.plan(B, 768, torch.empty(0, dtype=torch.bfloat16), launch_config)
    assert (plan.kind, plan.grid, plan.config["BLOCK_N"]) == (kind, grid, block_n)


def test_persistent_grid_too_large_falls_back_to_steps(monkeypatch):
    monkeypatch.setenv(schedule.SCHEDULE_ENV, "persistent")
    with recording(), pytest.warns(RuntimeWarning, match="exceed the 132"):
        plan = schedule.plan(4096, 768, torch.empty(0), launch_config)
    assert plan.kind == "steps" and plan.steps_per_launch == 1
    assert not plan.config["GRID_SYNC"] and "launch_cooperative_grid" not in plan.config


def test_run_launches_once_per_step_or_once(monkeypatch):
    monkeypatch.setenv(schedule.SCHEDULE_ENV, "steps")
    kernel = object()
    with recording() as launches:
        plan = schedule.plan(3, 20, torch.empty(0), launch_config)
        schedule.run(kernel, plan, 4, ("a",), torch.device("cpu"))
    assert [(lc.args[-2], lc.args[-1]) for lc in launches] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    monkeypatch.setenv(schedule.SCHEDULE_ENV, "tile")
    with recording() as launches:
        schedule.run(kernel, schedule.plan(3, 20, torch.empty(0), launch_config), 4, ("a",), torch.device("cpu"))
    assert [(lc.args[-2], lc.args[-1]) for lc in launches] == [(0, 4)]


def test_using_sets_and_restores(monkeypatch):
    monkeypatch.setenv(schedule.SCHEDULE_ENV, "steps")
    with schedule.using("persistent:reversed") as chosen:
        assert chosen == schedule.Schedule("persistent", True) and schedule.requested() == chosen
    assert schedule.requested() == schedule.Schedule("steps")
    monkeypatch.delenv(schedule.SCHEDULE_ENV)
    with pytest.raises(ValueError, match=schedule.SCHEDULE_ENV), schedule.using("sideways"):
        pass
    assert schedule.SCHEDULE_ENV not in __import__("os").environ


def test_streamed_option_streams_weights_that_would_be_resident(monkeypatch):
    """``:streamed`` (for measuring what residency buys) keeps the grid and streams w_hh."""
    like = torch.empty(0, dtype=torch.bfloat16)
    plans = []
    for text in ("persistent:n16", "persistent:n16:streamed"):
        monkeypatch.setenv(schedule.SCHEDULE_ENV, text)
        with recording():
            plans.append(schedule.plan(16, 768, like, launch_config))
    assert [(p.grid, p.config["BLOCK_H"]) for p in plans] == [((48, 1), 1024), ((48, 1), 0)]


class _CounterKernel:
    """Stands in for a kernel launched by ``schedule.run``: sets the barrier counter it is given."""

    fn = types.SimpleNamespace(__name__="stand_in")

    def __init__(self, value):
        self.value = value

    def __getitem__(self, grid):
        return lambda *args, **options: args[-3].fill_(self.value)


def test_persistent_run_checks_its_barrier_without_cuda():
    """After a persistent launch ``run`` reads the barrier counters; on tensors
    that are not on a GPU it must not ask CUDA whether a graph is being captured
    (a CPU build of torch raised "Tried to instantiate dummy base class")."""
    plan = schedule.Plan("persistent", (3, 2))
    schedule.run(_CounterKernel(3 * 4), plan, 4, (), torch.device("cpu"))
    with pytest.raises(RuntimeError, match="stand_in: a grid barrier timed out"):
        schedule.run(_CounterKernel(schedule.BROKEN), plan, 4, (), torch.device("cpu"))

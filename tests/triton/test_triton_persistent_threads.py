"""The persistent schedule executed: one cooperative launch whose programs
synchronise every step through the real grid barrier (wmkernels/triton/sync.py),
each program in its own thread (tests/triton/program_threads.py), free or under the
seeded scheduler, against the float64 reference; the planner chooses the
persistent schedule because co-residency is faked (an H100's SM count, as
the GPU would report). Copies of the barrier that wait for one arrival too
few, one too many or for none are caught.

The scheduler seeds follow the test's seed (conftest.py), so each run tries
new interleavings and WMKERNELS_TEST_SEED replays one, inputs and interleaving.
"""
import time

import pytest
import torch

from tests.triton.triton_support import assert_matches, needs_triton, quiet_interpreter
from wmkernels import testing

pytest.importorskip("triton")
pytestmark = [needs_triton, quiet_interpreter,
              pytest.mark.skipif(torch.cuda.is_available(), reason="runs Triton's interpreter (CPU only)")]

import triton  # noqa: E402
import triton.language as tl  # noqa: E402,F401 - the interpreter looks for it in the mutants' globals

from tests.triton.program_threads import Deadlock, concurrent_programs  # noqa: E402
from wmkernels.triton import schedule, sync  # noqa: E402
from wmkernels.triton.launch import RECORDED_DEVICES  # noqa: E402
from wmkernels.wm_lstm import wm_lstm_sequence_split_triton as wm_split  # noqa: E402

OPS = {"lstm": ("lstm_sequence", dict(T=3, I=3, H=37)),
       "wm-fifo": ("wm_lstm_sequence", dict(T=3, I=3, H=37, S=3, D=5, write_mode="fifo")),
       "wm-gated": ("wm_lstm_sequence", dict(T=3, I=3, H=37, S=3, D=5, write_mode="gated"))}
# B = 3 is one batch tile of 16 rows; B = 17 with 16-row tiles is two (each with its own barrier counter)
BATCH = {1: 3, 2: 17}
PROGRAMS_PER_TILE = 3  # H = 37 in 16-unit blocks


def force_blocks(monkeypatch, **blocks):
    """The split grid's blocks (both ops, forward and backward) with ``blocks`` in place."""
    lstm_config, wm_config = schedule.lstm_split_config, wm_split.split_config
    monkeypatch.setattr(schedule, "lstm_split_config", lambda *a, **k: dict(lstm_config(*a, **k), **blocks))
    monkeypatch.setattr(wm_split, "split_config", lambda *a: dict(wm_config(*a), **blocks))


@pytest.fixture
def persistent_plans(monkeypatch):
    """The persistent schedule chosen as on a GPU with enough SMs (a split grid
    of 16-row batch tiles); the list of every plan the kernels launch with."""
    monkeypatch.setattr(schedule, "resident_programs", lambda like: RECORDED_DEVICES[90].sms)
    force_blocks(monkeypatch, BLOCK_B=16)
    plans, plan = [], schedule.plan
    monkeypatch.setattr(schedule, "plan", lambda *a: plans.append(plan(*a)) or plans[-1])
    return plans


def run_persistent(monkeypatch, plans, op, tiles, order, seed, with_lengths=True, with_capacity=False, **extra):
    """``op``'s forward and backward on the persistent schedule under
    ``concurrent_programs(seed)``, checked against the float64 reference;
    ``with_capacity``: a random [T, B] capacity (the WM-LSTM's, contract §1.5)."""
    name, sizes = OPS[op]
    monkeypatch.setenv(schedule.SCHEDULE_ENV, "persistent" + order)
    case = testing.random_case(name, B=BATCH[tiles], **sizes, with_lengths=with_lengths)
    if with_capacity:
        case.extras["capacity"] = torch.randint(1, sizes["S"] + 1, (sizes["T"], BATCH[tiles]))
    print(f"{op}: {'free threads' if seed is None else f'scheduler seed {seed}'}")
    with concurrent_programs(seed, **extra) as record:
        assert_matches(case)
    grid = (PROGRAMS_PER_TILE, tiles)
    assert [(p.kind, p.grid, p.config["GRID_SYNC"]) for p in plans] == [("persistent", grid, True)] * 2
    assert [launch for _, launch in record.launches] == [grid + (1,)] * 2  # forward, backward: one launch each
    return record


# Per op, four runs: lengths x batch tiles x program order as an orthogonal
# array (each pair of levels once), on free threads and three scheduler seeds;
# the weights resident (the interpreter's choice) or streamed (as on a GPU
# where they do not fit) alternate, so every run is streamed for one op and
# resident for another.
RUNS = [(False, 1, "", None), (False, 2, ":reversed", 0), (True, 1, ":reversed", 1), (True, 2, "", 2)]


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("with_lengths, tiles, order, scheduler", RUNS, ids=[
    f"{'lengths' if lengths else 'full'}-{tiles}tiles-{'reversed' if order else 'normal'}-"
    f"{'free' if scheduler is None else f'seed+{scheduler}'}" for lengths, tiles, order, scheduler in RUNS])
def test_persistent_schedule_with_concurrent_programs(monkeypatch, persistent_plans, fresh_seed, op, with_lengths,
                                                      tiles, order, scheduler):
    streamed = (list(OPS).index(op) + RUNS.index((with_lengths, tiles, order, scheduler))) % 2 == 1
    if streamed:  # in 16-wide chunks of the reduction
        monkeypatch.setattr(schedule, "RESIDENT_ELEMENTS", 0)
        force_blocks(monkeypatch, BLOCK_K=16)
    seed = None if scheduler is None else fresh_seed + scheduler
    record = run_persistent(monkeypatch, persistent_plans, op, tiles, order, seed, with_lengths)
    assert all((p.config["BLOCK_H"] > 0) != streamed for p in persistent_plans)
    # every program arrived at and polled every step's barrier, forward and backward
    assert record.atomics >= 2 * PROGRAMS_PER_TILE * tiles * 2 * OPS[op][1]["T"]


@pytest.mark.parametrize("op, order, scheduler", [("wm-fifo", "", 0), ("wm-gated", ":reversed", 1)])
def test_persistent_schedule_with_capacity(monkeypatch, persistent_plans, fresh_seed, op, order, scheduler):
    """The WM-LSTM with a per-step capacity and lengths, two batch tiles."""
    run_persistent(monkeypatch, persistent_plans, op, 2, order, fresh_seed + scheduler, with_capacity=True)


# ------------------------------------------------------------------ mutants of the barrier
_barrier = sync.grid_barrier


@triton.jit
def _one_arrival_too_few(counter_ptr, arrivals):
    _barrier(counter_ptr, arrivals - 1)


@triton.jit
def _one_arrival_too_many(counter_ptr, arrivals):
    _barrier(counter_ptr, arrivals + 1)


@triton.jit
def _no_wait(counter_ptr, arrivals):
    _barrier(counter_ptr, 0)  # arrives, waits for nobody


@triton.jit
def _unchanged(counter_ptr, arrivals):
    _barrier(counter_ptr, arrivals)


# Each mutant under fixed scheduler seeds, on lstm_sequence and on the WM-LSTM:
# an interleaving is a function of its seed (not of the inputs), and each of
# these is known to expose its mutant, so the tests are deterministic.
EARLY = [("lstm", _one_arrival_too_few, 0), ("lstm", _one_arrival_too_few, 1), ("lstm", _no_wait, 0),
         ("lstm", _no_wait, 1), ("wm-fifo", _one_arrival_too_few, 2), ("wm-gated", _no_wait, 2)]
LATE = [("lstm", None), ("lstm", 0), ("wm-gated", 1)]


@pytest.mark.parametrize("op, mutant, seed", EARLY, ids=[f"{o}-{m.__name__.strip('_')}-{s}" for o, m, s in EARLY])
def test_a_barrier_that_lets_programs_through_early_gives_wrong_results(monkeypatch, persistent_plans, op, mutant,
                                                                         seed):
    monkeypatch.setattr(sync, "grid_barrier", mutant)
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"(out|grad)\["):
        run_persistent(monkeypatch, persistent_plans, op, 1, "", seed, with_lengths=False)
    assert time.monotonic() - start < 120


@pytest.mark.parametrize("op, seed", LATE)
def test_a_barrier_that_waits_for_one_arrival_too_many_is_a_reported_deadlock(monkeypatch, persistent_plans, op,
                                                                               seed):
    monkeypatch.setattr(sync, "grid_barrier", _one_arrival_too_many)
    start = time.monotonic()
    with pytest.raises(Deadlock, match=r"_forward_kernel\[grid \(3, 1, 1\)\].*programs \(0, 0, 0\), \(1, 0, 0\), "
                                       r"\(2, 0, 0\) wait"):
        run_persistent(monkeypatch, persistent_plans, op, 1, "", seed, with_lengths=False, patience=500)
    assert time.monotonic() - start < 120


def test_the_real_barrier_passes_where_the_mutants_fail(monkeypatch, persistent_plans):
    """The mutants' harness with the barrier itself (wrapped as they are)."""
    monkeypatch.setattr(sync, "grid_barrier", _unchanged)
    run_persistent(monkeypatch, persistent_plans, "lstm", 1, "", EARLY[0][2], with_lengths=False)

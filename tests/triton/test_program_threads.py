"""The thread-per-program interpreter (tests/triton/program_threads.py) on small kernels:
programs really wait for each other, atomics stay atomic, the seeded scheduler
replays, and a launch whose programs wait forever fails fast naming them."""
import threading
import time

import pytest
import torch

from tests.triton.triton_support import needs_triton, quiet_interpreter

pytest.importorskip("triton")
pytestmark = [needs_triton, quiet_interpreter,
              pytest.mark.skipif(torch.cuda.is_available(), reason="runs Triton's interpreter (CPU only)")]

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from tests.triton.program_threads import Deadlock, concurrent_programs  # noqa: E402
from wmkernels.triton.sync import grid_barrier  # noqa: E402

SEEDS = [0, 1, 2]
MODES = [None] + SEEDS  # free threads, then the seeded scheduler


@triton.jit
def _count_kernel(counter_ptr, ROUNDS: tl.constexpr):
    for _ in range(ROUNDS):
        tl.atomic_add(counter_ptr, 1)


@triton.jit
def _log_kernel(position_ptr, log_ptr, ROUNDS: tl.constexpr):
    """Each program appends its id ROUNDS times to one log: the order of the
    appends is the interleaving."""
    for _ in range(ROUNDS):
        slot = tl.atomic_add(position_ptr, 1)
        tl.store(log_ptr + slot, tl.program_id(0))


@triton.jit
def _neighbour_kernel(counter_ptr, out_ptr, STEPS: tl.constexpr):
    """Each step every program writes a value, passes the project's grid
    barrier, and reads what its neighbour wrote: right only if the barrier
    waited for the neighbour's store."""
    pid = tl.program_id(0)
    n = tl.num_programs(0)
    for step in range(STEPS):
        tl.store(out_ptr + step * 2 * n + pid, (step + 1) * 100 + pid)
        grid_barrier(counter_ptr, n * (step + 1))
        tl.store(out_ptr + step * 2 * n + n + pid, tl.load(out_ptr + step * 2 * n + (pid + 1) % n))


@triton.jit
def _wait_kernel(counter_ptr, ARRIVALS: tl.constexpr, FIRST_WAITER: tl.constexpr):
    """Programs from FIRST_WAITER on wait for ARRIVALS arrivals; the others leave at once."""
    if tl.program_id(0) >= FIRST_WAITER:
        grid_barrier(counter_ptr, ARRIVALS)


@triton.jit
def _register_loop_kernel(out_ptr):
    """Loops forever without touching memory."""
    x = tl.program_id(0)
    while x >= 0:
        x = x + 0
    tl.store(out_ptr, x)


@triton.jit
def _failing_kernel(counter_ptr, out_ptr):
    """Program 1 fails before its arrival (a block of 3 elements: not a power of
    two), while the others wait for it at the barrier."""
    if tl.program_id(0) == 1:
        tl.store(out_ptr, tl.sum(tl.zeros((3,), tl.int32)))
    grid_barrier(counter_ptr, tl.num_programs(0))


@pytest.mark.parametrize("seed", MODES)
def test_atomics_stay_atomic(seed):
    counter = torch.zeros(1, dtype=torch.int32)
    with concurrent_programs(seed) as record:
        _count_kernel[(6,)](counter, ROUNDS=40)
    assert counter.item() == 6 * 40
    assert record.launches == [("_count_kernel", (6, 1, 1))] and record.atomics == 6 * 40


@pytest.mark.parametrize("seed", MODES)
def test_programs_wait_for_each_other_at_the_barrier(seed):
    """The sequential interpreter would spin forever in the first program's barrier."""
    n, steps = 4, 3
    counter, out = torch.zeros(1, dtype=torch.int32), torch.full((steps * 2 * n,), -1, dtype=torch.int32)
    with concurrent_programs(seed):
        _neighbour_kernel[(n,)](counter, out, STEPS=steps)
    written = torch.tensor([[(s + 1) * 100 + p for p in range(n)] for s in range(steps)], dtype=torch.int32)
    assert torch.equal(out.view(steps, 2, n)[:, 0], written)
    assert torch.equal(out.view(steps, 2, n)[:, 1], written.roll(-1, 1))
    assert counter.item() == n * steps


def interleaving(seed, programs=4, rounds=6):
    position, log = torch.zeros(1, dtype=torch.int32), torch.full((programs * rounds,), -1, dtype=torch.int32)
    with concurrent_programs(seed) as record:
        _log_kernel[(programs,)](position, log, ROUNDS=rounds)
    return log.tolist(), record


def test_seeded_scheduler_replays_and_interleaves():
    """Same seed, same interleaving; other seeds, others; each program's id is its
    own (the grid index is per thread) however the programs interleave."""
    logs = {seed: interleaving(seed) for seed in SEEDS}
    assert interleaving(SEEDS[0])[0] == logs[SEEDS[0]][0]
    assert len({tuple(log) for log, _ in logs.values()}) == len(SEEDS)
    for log, record in logs.values():
        assert sorted(log) == sorted(list(range(4)) * 6)
        assert log != sorted(log) and record.switches > 4  # not one program after another


def test_free_threads_keep_each_programs_index():
    log, record = interleaving(None, programs=6, rounds=20)
    assert sorted(log) == sorted(list(range(6)) * 20) and record.memory_ops == 2 * 6 * 20


@pytest.mark.parametrize("seed", MODES)
@pytest.mark.parametrize("first_waiter", [0, 1])
def test_deadlock_is_reported_with_the_waiting_programs(seed, first_waiter):
    """One arrival too many: every waiting program is named, the launch fails
    within seconds, and no program thread is left behind."""
    counter = torch.zeros(1, dtype=torch.int32)
    start = time.monotonic()
    with concurrent_programs(seed, patience=200), pytest.raises(Deadlock) as failure:
        _wait_kernel[(3,)](counter, ARRIVALS=4, FIRST_WAITER=first_waiter)
    message = str(failure.value)
    waiting = ", ".join(f"({p}, 0, 0)" for p in range(first_waiter, 3))
    assert f"programs {waiting} wait (no memory write" in message
    assert f"{first_waiter} of 3 programs finished" in message
    assert ("free threads" if seed is None else f"scheduler seed {seed}") in message
    assert time.monotonic() - start < 30
    assert counter.item() == 3 - first_waiter  # they arrived; none broke the barrier (its spin limit is far)


@pytest.mark.parametrize("seed", [None, 0])
def test_a_program_that_never_touches_memory_is_stopped_at_the_timeout(seed):
    threads = threading.active_count()
    out = torch.zeros(1, dtype=torch.int32)
    with concurrent_programs(seed, timeout=0.5), pytest.raises(Deadlock, match=r"still running after 0.5 s"):
        _register_loop_kernel[(2,)](out)
    assert threading.active_count() == threads


@pytest.mark.parametrize("seed", MODES)
def test_an_error_in_one_program_stops_the_waiting_others(seed):
    counter, out = torch.zeros(1, dtype=torch.int32), torch.zeros(1, dtype=torch.int32)
    with concurrent_programs(seed), pytest.raises(Exception, match="power of 2") as failure:
        _failing_kernel[(3,)](counter, out)
    assert not isinstance(failure.value, Deadlock) and counter.item() <= 2  # program 1 never arrived


def test_the_interpreter_is_restored_after_the_block():
    from triton.runtime import interpreter
    with concurrent_programs(0):
        with pytest.raises(RuntimeError, match="does not nest"), concurrent_programs(1):
            pass
    assert type(interpreter.interpreter_builder) is interpreter.InterpreterBuilder
    counter = torch.zeros(1, dtype=torch.int32)
    _count_kernel[(3,)](counter, ROUNDS=2)  # one after another again
    assert counter.item() == 6

"""The barrier that ends one time step of the recurrent kernels.

A step's programs must all have written h_t (or dg_t) before any reads it
at step t+1. Within one program (the ``tile`` schedule) a CTA barrier is
enough. When the hidden units are split across programs (the ``persistent``
schedule), every program of a batch tile arrives on one global counter and
waits until all have arrived: a grid barrier, which is only safe when every
program is resident at once (a cooperative launch, the host checks).
"""
import triton
import triton.language as tl

# A counter at or above BROKEN marks a barrier that timed out (the host raises).
BROKEN = 1 << 30
# Polls of the counter before a barrier gives up: over a second, where a
# step's wait is microseconds.
SPIN_LIMIT = 1 << 24
_BROKEN = tl.constexpr(BROKEN)
_SPIN_LIMIT = tl.constexpr(SPIN_LIMIT)


@triton.jit
def grid_barrier(counter_ptr, arrivals):
    """Arrive on ``counter_ptr`` (int32) and wait until it counts ``arrivals``.

    The CTA barrier first puts every thread's stores of this step before the
    arrival; the release add publishes them at GPU scope, the acquire read
    makes the other programs' stores visible, and the last CTA barrier holds
    every thread back until then. (The scalar atomics run on one thread.)

    The wait is bounded: should programs not be co-resident, a program that
    polled ``SPIN_LIMIT`` times raises the counter to ``BROKEN``, which frees
    every waiter at once and tells the host, instead of hanging the GPU.
    """
    tl.debug_barrier()
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    spins = 0
    while (arrived < arrivals) & (spins < _SPIN_LIMIT):
        arrived = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
        spins += 1
    if arrived < arrivals:
        tl.atomic_max(counter_ptr, _BROKEN, sem="relaxed", scope="gpu")
    tl.debug_barrier()


@triton.jit
def step_barrier(counter_ptr, arrivals, GRID_SYNC: tl.constexpr):
    """End a step: a grid barrier when programs share the step, else a CTA barrier."""
    if GRID_SYNC:
        grid_barrier(counter_ptr, arrivals)
    else:
        tl.debug_barrier()


@triton.jit
def program_ids(REVERSED: tl.constexpr):
    """(column program, batch program), counted from the end when ``REVERSED``:
    the tests run a step's programs in both orders, so that a program reading
    what another writes in the same step shows up as a wrong result."""
    pid_n = tl.program_id(0)
    pid_b = tl.program_id(1)
    if REVERSED:
        pid_n = tl.num_programs(0) - 1 - pid_n
        pid_b = tl.num_programs(1) - 1 - pid_b
    return pid_n, pid_b


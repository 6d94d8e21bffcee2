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


# Why the grid barrier orders memory (PTX memory model; the one place this is
# argued). What crosses programs in a step: h_t (and the WM read r_t) stored
# into the exchange ``hx``, dg_t stored backward, and the fp32 atomic shares of
# q, the write's pre-activations and dr (wm_lstm_sequence_split_triton.py);
# each is read by other programs of the batch tile only after the step's barrier.
#
# - Release: the first CTA barrier (bar.sync) orders every thread's stores and
#   atomics of the step before the arrival, which one thread makes with
#   ``atom.add.release.gpu``; release is cumulative, so the whole CTA's writes
#   are visible at GPU scope no later than the count that includes them.
# - Acquire: a waiter's ``atom.add.acquire.gpu`` (an add of 0: a read-modify-
#   write) that returns a count >= ``arrivals`` read from the release sequence
#   of every arrival counted (later read-modify-writes of the counter, polls
#   included, extend each arrival's release sequence), so it synchronises with
#   all of them; the last bar.sync passes that on to every thread of the CTA.
#   Pairs: each program's arrival of step s with every program's poll that
#   sees n * (s + 1) arrivals (the counter counts up over the launch and is
#   never reset in it). No arrival of step s + 1 can be counted for step s:
#   a program arrives at s + 1 only after it passed s, which took all n
#   arrivals of s.
# - Reads after writes are then ordered by the pairs above; writes after reads
#   too: a program's loads of step s precede its release, so a store another
#   program makes after acquiring (step s + 1) cannot be read by them. That is
#   why two slots suffice for the exchange (step t reads slot t % 2, writes
#   slot (t + 1) % 2) and for the gated memory.
# - Past L1: the loads of what other programs wrote (h, r, dg, the summed
#   shares) carry ``.cg``. L1 is per SM and not coherent with other SMs'
#   writes; the same slot of the exchange was read two steps earlier, so an L1
#   line could still hold it. The model orders the loads after the acquire;
#   an implementation meets that by keeping stale L1 lines from being read
#   (invalidating L1 at the acquire). ``.cg`` reads from L2 and does not
#   depend on how, at no cost (the data is read once a step).
#
# The thread-per-program interpreter of the tests
# (tests/triton/program_threads.py) executes the arrivals and waits, but is
# sequentially consistent: it cannot check the fences. The ahead-of-time
# compile (wmkernels/tools/aot.py) checks that the release, the acquire and the
# ``ld.global.cg`` loads are in every compiled kernel that runs this barrier.
@triton.jit
def grid_barrier(counter_ptr, arrivals):
    """Arrive on ``counter_ptr`` (int32) and wait until it counts ``arrivals``
    (the memory ordering: the comment above). The scalar atomics run on one
    thread; the CTA barriers around them hold the others.

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


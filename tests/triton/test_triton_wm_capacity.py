"""The triton backend's wm_lstm_sequence with a ``capacity`` (contract §1.5):
row b at step t reads, and in gated mode writes, only its capacity[t, b]
active slots (fifo the last, gated the first), in each schedule (``tile``;
``steps``, the split grid's body; ``persistent`` is executed with its programs
in threads in test_triton_persistent_threads.py), against the float64 reference."""
import pytest
import torch

from tests.triton.triton_support import DEVICE, assert_matches, needs_triton, quiet_interpreter
from wmkernels import ops, testing
from wmkernels.triton import schedule

pytestmark = [needs_triton, quiet_interpreter]

MODES = ("fifo", "gated")
SCHEDULES = ("tile", "steps", "steps:reversed")  # the split grid with its programs in both orders


def with_capacity(case: testing.Case, capacity: torch.Tensor) -> testing.Case:
    case.extras["capacity"] = capacity
    return case


def random_capacity(T: int, B: int, S: int, per_step: bool) -> torch.Tensor:
    return torch.randint(1, S + 1, (T, B) if per_step else (B,))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sched", SCHEDULES)
@pytest.mark.parametrize("per_step", (True, False), ids=["TB", "B"])
@pytest.mark.parametrize("with_lengths", (True, False), ids=["lengths", "full"])
def test_capacity_matches_the_reference(fresh_seed, mode, sched, per_step, with_lengths):
    """Every output and input gradient, float32, fresh draws (capacity too);
    the split grid with H = 20: two hidden-unit programs share each step;
    gated: two checkpoint segments (2 and 1 steps)."""
    T, B, S = 3, 3, 5
    case = testing.random_case("wm_lstm_sequence", T=T, B=B, I=3, H=20 if sched != "tile" else 9, S=S, D=6,
                               write_mode=mode, with_lengths=with_lengths)
    with schedule.using(sched):
        assert_matches(with_capacity(case, random_capacity(T, B, S, per_step)))


AWKWARD = [  # (sizes, capacity: "one", "all" (= S) or "random")
    (dict(T=1, B=1, I=1, H=1, S=1, D=1), "one"),  # S = 1: every capacity is 1 = S
    (dict(T=3, B=1, I=2, H=3, S=4, D=3), "one"),
    (dict(T=3, B=2, I=2, H=3, S=4, D=5), "all"),
    (dict(T=5, B=4, I=2, H=3, S=7, D=2), "random"),  # gated: checkpoint segments of 3 steps
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sched", ("tile", "steps"))
@pytest.mark.parametrize("sizes, kind", AWKWARD, ids=lambda v: v if isinstance(v, str) else
                         "T{T}B{B}H{H}S{S}D{D}".format(**v))
def test_capacity_at_awkward_sizes(fresh_seed, mode, sched, sizes, kind):
    T, B, S = sizes["T"], sizes["B"], sizes["S"]
    capacity = {"one": torch.ones(T, B, dtype=torch.int64), "all": torch.full((B,), S, dtype=torch.int64),
                "random": random_capacity(T, B, S, True)}[kind]
    with schedule.using(sched):
        assert_matches(with_capacity(testing.random_case("wm_lstm_sequence", **sizes, write_mode=mode,
                                                         with_lengths=True), capacity))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sched", ("tile", "steps:reversed"))
def test_capacity_float16(fresh_seed, mode, sched):
    case = testing.random_case("wm_lstm_sequence", T=4, B=3, I=5, H=18, S=4, D=6, write_mode=mode,
                               with_lengths=True)
    with schedule.using(sched):
        assert_matches(with_capacity(case, random_capacity(4, 3, 4, True)), torch.float16)


@pytest.mark.parametrize("mode", MODES)
def test_capacity_across_batch_tiles_and_slot_chunks(fresh_seed, mode, monkeypatch):
    """Two batch tiles and memory tiles narrower than D, as on a GPU at large sizes."""
    from wmkernels.wm_lstm import wm_lstm_sequence_triton as wm_sequence
    monkeypatch.setattr(wm_sequence, "launch_config", lambda B, H, S, D, like: dict(
        BLOCK_B=16, BLOCK_N=16, BLOCK_K=16, BLOCK_S=8, BLOCK_D=16, BLOCK_DM=4, PRECISION="ieee", num_warps=4))
    case = testing.random_case("wm_lstm_sequence", T=3, B=17, I=3, H=18, S=5, D=17, write_mode=mode,
                               with_lengths=True)
    assert_matches(with_capacity(case, random_capacity(3, 17, 5, True)))


def run(case: testing.Case, inputs=None, capacity=None, upstream=None):
    """(outputs, input gradients) of ``case`` on triton in float32 (``inputs``:
    the case's tensors by default), ``capacity`` passed only when given."""
    inputs = [t.float().requires_grad_() for t in (inputs or case.tensors.values())]
    extras = dict(case.extras, **({} if capacity is None else {"capacity": capacity}))
    outputs = testing.Case(case.op, case.tensors, extras).run(inputs, "triton")
    upstream = upstream or [torch.randn_like(o) for o in outputs]
    grads = torch.autograd.grad(outputs, inputs, upstream, allow_unused=True)
    return outputs, grads, upstream


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sched", ("tile", "steps"))
def test_full_capacity_is_bit_for_bit_no_capacity(fresh_seed, mode, sched):
    """A [T, B] capacity of S everywhere gives exactly what no capacity (S for
    every row, a [B] tensor read at every step) gives."""
    case = testing.random_case("wm_lstm_sequence", T=4, B=3, I=3, H=20, S=4, D=5, write_mode=mode,
                               with_lengths=True)
    with schedule.using(sched):
        want, want_grads, upstream = run(case)
        got, got_grads, _ = run(case, capacity=torch.full((4, 3), 4, dtype=torch.int64), upstream=upstream)
    for a, b in zip(got + got_grads, want + want_grads):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sched", ("tile", "steps"))
def test_nan_in_an_inactive_slot_does_not_reach_the_outputs(fresh_seed, mode, sched):
    """M0 holds NaN in slots that stay inactive at every step (fifo: below
    S - c, which the shift only moves further down; gated: from c up): y, h, c
    and every gradient are finite and y matches the reference; gated, those slots
    come out as they went in (NaN) and every inactive slot gets no gradient from y."""
    T, B, S = 4, 3, 5
    case = testing.random_case("wm_lstm_sequence", T=T, B=B, I=3, H=20, S=S, D=4, write_mode=mode,
                               with_lengths=True)
    capacity = torch.tensor([2, 3, 1])
    M0 = case.tensors["M0"]
    for b, c in enumerate(capacity.tolist()):
        inactive = slice(c, S) if mode == "gated" else slice(0, S - c)
        M0[b, inactive] = float("nan")
    want_y, _ = ops.wm_lstm_sequence(case.tensors["x"], (case.tensors["h0"], case.tensors["c0"], M0),
                                     {k: v for k, v in case.tensors.items() if k not in ("x", "h0", "c0", "M0")},
                                     mode, case.extras["lengths"], capacity, backend="reference")
    assert torch.isfinite(want_y).all()
    with schedule.using(sched):
        (y, h, c, M), grads, _ = run(case, capacity=capacity)
    assert testing.rel_err(y, want_y) <= 1e-5
    assert all(torch.isfinite(t).all() for t in (y, h, c)) and all(torch.isfinite(g).all() for g in grads)
    if mode == "gated":
        for b, cap in enumerate(capacity.tolist()):
            assert torch.isnan(M[b, cap:]).all()


@pytest.mark.parametrize("sched", ("tile", "steps"))
def test_inactive_gated_slots_come_out_as_given_with_no_gradient_from_y(fresh_seed, sched):
    """To the bit: a -0.0 there stays -0.0 (not written, not even with a weight of 0)."""
    T, B, S = 4, 4, 5
    case = testing.random_case("wm_lstm_sequence", T=T, B=B, I=3, H=20, S=S, D=4, write_mode="gated")
    per_row = [1, 2, 3, 5]
    case.tensors["M0"][:, :, ::2] = -0.0
    inputs = [t.float().requires_grad_() for t in case.tensors.values()]
    M0 = inputs[3]
    with schedule.using(sched):
        y, _, _, M = testing.Case(case.op, case.tensors, dict(case.extras, capacity=torch.tensor(per_row))).run(
            inputs, "triton")
        (grad,) = torch.autograd.grad(y.square().sum(), M0)
    for b, c in enumerate(per_row):
        assert torch.equal(M[b, c:], M0[b, c:].detach()) and torch.equal(M[b, c:].signbit(), M0[b, c:].signbit())
        assert torch.all(grad[b, c:] == 0) and grad[b, :c].abs().sum() > 0


@pytest.mark.parametrize("mode", MODES)
def test_capacity_changes_the_result(mode):
    """The capacity is not ignored: a capacity of 1 reads one slot, not S."""
    case = testing.random_case("wm_lstm_sequence", T=3, B=2, I=3, H=5, S=4, D=3, write_mode=mode)
    full, _, upstream = run(case)
    one, _, _ = run(case, capacity=torch.ones(2, dtype=torch.int64), upstream=upstream)
    assert testing.rel_err(one[0], full[0]) > 1e-3


def test_the_backend_takes_capacity_by_name():
    from wmkernels.backends import decide
    device = torch.device(DEVICE)
    assert decide("wm_lstm_sequence", "triton", device, torch.float32, with_capacity=True).backend == "triton"


@pytest.mark.parametrize("sched", ("tile", "persistent"))
def test_one_compiled_kernel_serves_with_and_without_a_capacity(sched):
    """capacity=None and a capacity launch the same kernels with the same
    constexprs and launch options (one compiled variant); without one the
    kernels read every row's capacity as S (a [B] tensor, step stride 0), with
    a [T, B] one that (step stride B). Recorded as for a GPU (nothing runs),
    forward and backward, both write modes."""
    import inspect

    from wmkernels.tools import aot
    from wmkernels.triton.launch import recording

    T, B, S = (aot.SMALL[k] for k in "TBS")
    for mode in MODES:
        recorded = {}
        for with_cap in (False, True):
            case = aot.CaptureCase("wm_lstm_sequence", aot.SMALL,
                                   {"write_mode": mode, "with_capacity": with_cap, "schedule": sched})
            made = aot._random_inputs(case)
            with recording() as launches, aot._ProductsSkipped():
                aot._run_case(case, torch.float32, made)
            recorded[with_cap] = (made.extras.get("capacity"),
                                  [launch for launch in launches
                                   if "cap_ptr" in inspect.signature(launch.kernel.fn).parameters])
        (_, without), (capacity, with_) = recorded[False], recorded[True]
        assert len(without) == len(with_) == 2  # forward, backward (persistent: one launch each)
        for a, b in zip(without, with_):
            assert a.kernel is b.kernel and a.options == b.options and a.grid == b.grid
            assert a.options.get("GRID_SYNC", False) == (sched == "persistent")
            names = list(inspect.signature(b.kernel.fn).parameters)
            cap, step = names.index("cap_ptr"), names.index("cap_step")
            assert torch.equal(a.args[cap], torch.full((B,), S)) and a.args[step] == 0
            assert torch.equal(b.args[cap], capacity) and b.args[step] == B

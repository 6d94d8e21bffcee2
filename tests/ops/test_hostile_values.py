"""Hostile values, as properties over random draws (hypothesis): NaN and ±inf in
any input give, on every backend, NaN and ±inf exactly where the reference has
them; results do not depend on the thread count; a backward through outputs
that depend on nothing (T = 0) works."""
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wmkernels import ops, testing
from wmkernels.backends import BACKENDS

CPU = torch.device("cpu")
OPS = ["lstm_cell", "wm_read", "wm_shift_write", "wm_write", "lstm_sequence", "wm_lstm_sequence"]
BACKEND_NAMES = [name for name in ("cpu", "triton", "aten") if BACKENDS[name].device_reason(CPU) is None]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def special_pattern(t: torch.Tensor):
    return torch.isnan(t), torch.isposinf(t), torch.isneginf(t)


@SETTINGS
@given(op=st.sampled_from(OPS), special=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
       gated=st.booleans(), which=st.integers(0, 20), count=st.integers(1, 3), seed=st.integers(0, 2 ** 31 - 1))
def test_specials_propagate_as_in_the_reference(op, special, gated, which, count, seed):
    torch.manual_seed(seed)
    case = testing.random_case(op, T=3, B=3, I=3, H=4, S=3, D=3, write_mode="gated" if gated else "fifo",
                               with_lengths=op.endswith("sequence"), with_mask=op == "wm_read")
    name = list(case.tensors)[which % len(case.tensors)]
    target = case.tensors[name]
    target.view(-1)[torch.randint(0, target.numel(), (count,))] = special
    tensors = [t.float() for t in case.tensors.values()]
    want = case.run(tensors, "reference")
    for backend in BACKEND_NAMES:
        if BACKENDS[backend].case_reason(op, CPU, torch.float32) is not None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the Triton interpreter's numpy notes
            got = case.run(tensors, backend)
        for k, (g, w) in enumerate(zip(got, want)):
            for got_mask, want_mask, kind in zip(special_pattern(g), special_pattern(w), ("NaN", "+inf", "-inf")):
                assert torch.equal(got_mask, want_mask), (
                    f"{op} on {backend}: output {k} has {kind} at {got_mask.nonzero().tolist()}, the reference at "
                    f"{want_mask.nonzero().tolist()} ({special} in {name})")


@pytest.mark.skipif(BACKENDS["cpu"].device_reason(CPU) is not None, reason="the cpu extension is not built")
@pytest.mark.parametrize("op", OPS)
def test_cpu_results_do_not_depend_on_the_thread_count(op):
    case = testing.random_case(op, T=9, B=37, I=33, H=65, S=9, D=17, write_mode="gated",
                               with_lengths=op.endswith("sequence"), with_mask=op == "wm_read")
    tensors = [t.float().requires_grad_() for t in case.tensors.values()]
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outputs = case.run(tensors, "cpu")
            grads = torch.autograd.grad(sum(o.sum() for o in outputs), tensors, allow_unused=True)
            results.append([o.detach() for o in outputs] + [g for g in grads if g is not None])
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("backend", ["reference", "aten", "cpu"])
def test_backward_when_nothing_depends_on_the_inputs(backend):
    if BACKENDS[backend].device_reason(CPU) is not None:
        pytest.skip(BACKENDS[backend].device_reason(CPU))
    x = torch.randn(0, 2, 3, requires_grad=True)
    w_ih, w_hh = torch.randn(16, 3, requires_grad=True), torch.randn(16, 4, requires_grad=True)
    y, h, c = ops.lstm_sequence(x, torch.randn(2, 4), torch.randn(2, 4), w_ih, w_hh, backend=backend)
    (y.sum() + h.sum() + c.sum()).backward()
    for t in (x, w_ih, w_hh):
        assert t.grad is None or not t.grad.any()

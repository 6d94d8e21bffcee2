"""torch.compile of the layers and ops (fullgraph=True: a graph break fails),
forward and backward equal to eager; torch.library.opcheck of the C++ ops.

Most tests compile with the ``aot_eager`` backend: dynamo traces the Python,
AOTAutograd traces forward and backward through the ops' Functions and the
kernels' fake implementations — everything torch.compile does short of
Inductor's code generation, which one test covers end to end (Inductor is slow
to compile on a small CPU machine, so sizes are tiny: T ≤ 4).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd
from torch.utils._python_dispatch import TorchDispatchMode

import wmkernels
from wmkernels import ops, testing
from wmkernels.backends import BACKENDS
from wmkernels.testing import rel_err

T, B, I, H, S, D = 4, 2, 3, 4, 3, 2
TOL = 1e-6  # compiled vs eager, float32: the same math, maybe fused or reordered


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def outputs_and_grads(fn, module: torch.nn.Module, inputs, upstream=None):
    """Run ``fn(*inputs)``, backprop a fixed random weighting of every output tensor;
    return (outputs, grads of inputs requiring grad and of module parameters, upstream)."""
    out = [t for t in torch.utils._pytree.tree_leaves(fn(*inputs)) if isinstance(t, torch.Tensor)]
    if upstream is None:
        upstream = [torch.randn_like(t) for t in out]
    leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad] + list(module.parameters())
    # materialize_grads: a parameter the call does not use (a gated WMLSTM's m0 when
    # the state is given) gets zeros, in eager and compiled alike
    grads = torch.autograd.grad(sum((t * u).sum() for t, u in zip(out, upstream)), leaves,
                                materialize_grads=True)
    return out, grads, upstream


def assert_compiled_equals_eager(module, inputs, backend="aot_eager"):
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    got, got_grads, upstream = outputs_and_grads(compiled, module, inputs)
    want, want_grads, _ = outputs_and_grads(module, module, inputs, upstream)
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and rel_err(a, b) <= TOL, f"output {k}: {rel_err(a, b):.2e}"
    for k, (a, b) in enumerate(zip(got_grads, want_grads)):
        assert rel_err(a, b) <= TOL, f"gradient {k}: {rel_err(a, b):.2e}"


def test_backend_choice_is_marked_constant_as_torch_marks_it():
    """ops marks its trace-time backend choice as torch.compiler.assume_constant_result
    does, without importing torch._dynamo (a third of ``import wmkernels``)."""
    def marked_by_torch():
        pass

    torch.compiler.assume_constant_result(marked_by_torch)
    for fn in (ops._traced_backend_name, ops._traced_has_size_rules):
        assert {k: v for k, v in vars(fn).items() if k.startswith("_dynamo")} == vars(marked_by_torch), fn
    imported = subprocess.run([sys.executable, "-c", "import sys, wmkernels; print('torch._dynamo' in sys.modules)"],
                              capture_output=True, text=True, timeout=120)
    assert imported.stdout.strip() == "False", imported.stderr[-2000:]


def test_lstm_compiles_fullgraph():
    """wmkernels.nn.LSTM is a torch.nn.LSTM, which dynamo refuses to trace unless
    allow_rnn is set; with it, the whole layer is one graph of our ops."""
    lstm = wmkernels.nn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True)
    state = (torch.randn(4, B, H, requires_grad=True), torch.randn(4, B, H, requires_grad=True))
    with torch._dynamo.config.patch(allow_rnn=True):
        assert_compiled_equals_eager(lstm, (torch.randn(B, T, I, requires_grad=True), state[0:2]))


def test_lstm_in_a_compiled_model_breaks_the_graph_as_torch_lstm_does():
    """Without allow_rnn, a compiled model graph-breaks around the layer (as
    around every torch.nn.LSTM) and stays equal to eager; the only breaks are those."""
    from torch._dynamo.utils import counters

    model = torch.nn.Sequential(wmkernels.nn.LSTM(I, H), Select(0), torch.nn.Linear(H, 2))
    x = torch.randn(T, B, I, requires_grad=True)
    counters.clear()
    got, got_grads, upstream = outputs_and_grads(torch.compile(model, backend="aot_eager"), model, (x,))
    want, want_grads, _ = outputs_and_grads(model, model, (x,), upstream)
    for a, b in zip(got + list(got_grads), want + list(want_grads)):
        assert rel_err(a, b) <= TOL
    reasons = set(counters["graph_break"])
    assert reasons and all("RNN, GRU, or LSTM" in reason for reason in reasons), reasons


class Select(torch.nn.Module):
    """``output[k]`` of the module before it (``nn.Sequential`` glue)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, output):
        return output[self.k]


def test_dynamic_shapes_stay_dynamic():
    """With no size rule for the op, auto's choice does not read the sizes, so a
    dynamic=True graph serves every sequence length without recompiling."""
    from torch._dynamo.utils import counters

    layer = wmkernels.nn.WMLSTM(I, H, S, D)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager", dynamic=True)
    counters.clear()
    for steps in (5, 6, 7):  # none equal to another size: duck sizing would tie them
        x = torch.randn(steps, B, I)
        assert rel_err(compiled(x)[0], layer(x)[0]) <= TOL
    assert counters["stats"]["unique_graphs"] == 1


@pytest.mark.parametrize("mode", ("fifo", "gated"))
@pytest.mark.parametrize("with_state", (True, False))
def test_wmlstm_compiles_fullgraph(mode, with_state):
    layer = wmkernels.nn.WMLSTM(I, H, S, D, write_mode=mode)
    state = tuple(torch.randn(*shape, requires_grad=True) for shape in ((B, H), (B, H), (B, S, D)))
    assert_compiled_equals_eager(layer, (torch.randn(T, B, I, requires_grad=True), state if with_state else None))


def test_cells_compile_fullgraph_on_the_kernels():
    """LSTMCell and WMLSTMCell run the cpu backend's C++ kernels (through the ops'
    autograd Functions): the compiled forward and backward graphs call them."""
    seen = {"forward": set(), "backward": set()}

    def recorder(kind):
        def compiler(gm, example_inputs):
            seen[kind].update(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
            return make_boxed_func(gm)
        return compiler

    backend = aot_autograd(fw_compiler=recorder("forward"), bw_compiler=recorder("backward"))

    class Loop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = wmkernels.nn.LSTMCell(I, H)
            self.wm = wmkernels.nn.WMLSTMCell(H, H, S, D, write_mode="gated")

        def forward(self, x):
            state, wm_state, ys = None, None, []
            for t in range(x.shape[0]):
                state = self.cell(x[t], state)
                y, wm_state = self.wm(state[0], wm_state)
                ys.append(y)
            return torch.stack(ys), wm_state

    loop = Loop()
    assert_compiled_equals_eager(loop, (torch.randn(T, B, I, requires_grad=True),), backend=backend)
    require_cpp()
    for op in ("lstm_cell", "wm_read", "wm_write"):  # the ops of a gated WMLSTMCell step
        if op in BACKENDS["cpu"].implemented_ops():  # auto picks cpu on CPU tensors
            assert f"wmkernels.{op}_forward.default" in seen["forward"], (op, seen["forward"])
            assert f"wmkernels.{op}_backward.default" in seen["backward"], (op, seen["backward"])
    assert "wmkernels.lstm_cell_forward.default" in seen["forward"]


@pytest.mark.parametrize("backend", ("reference", "cpu"))
def test_op_compiles_on_a_named_backend(backend):
    """The backend named by use_backend() is the one the compiled graph runs (both
    paths: the reference traced as plain PyTorch, the cpu kernels through the Function)."""
    gates = torch.randn(B, 4 * H, requires_grad=True)
    c = torch.randn(B, H, requires_grad=True)

    def fn(gates, c):
        return ops.lstm_cell(gates, c)

    with wmkernels.use_backend(backend):
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        got, got_grads, upstream = outputs_and_grads(compiled, torch.nn.Module(), (gates, c))
    want, want_grads, _ = outputs_and_grads(fn, torch.nn.Module(), (gates, c), upstream)
    for a, b in zip(got + list(got_grads), want + list(want_grads)):
        assert rel_err(a, b) <= TOL


def test_lengths_are_checked_inside_the_graph():
    w_ih, w_hh = torch.randn(4 * H, I), torch.randn(4 * H, H)
    h0 = torch.zeros(B, H)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def fn(x, lengths):
        return ops.lstm_sequence(x, h0, h0, w_ih, w_hh, lengths=lengths)

    x = torch.randn(T, B, I)
    y, h, _ = fn(x, torch.tensor([T, 1]))
    y_eager, h_eager, _ = ops.lstm_sequence(x, h0, h0, w_ih, w_hh, lengths=torch.tensor([T, 1]))
    assert rel_err(y, y_eager) <= TOL and rel_err(h, h_eager) <= TOL
    with pytest.raises(RuntimeError, match="lengths"):
        fn(x, torch.tensor([T + 1, 1]))


def test_inductor_end_to_end():
    """A small model, compiled by the default backend (Inductor), trains like eager."""
    model = torch.nn.Sequential()
    model.lstm = wmkernels.nn.LSTM(I, H)
    state = (torch.randn(1, B, H), torch.randn(1, B, H))
    x = torch.randn(3, B, I, requires_grad=True)
    with torch._dynamo.config.patch(allow_rnn=True):
        assert_compiled_equals_eager(model.lstm, (x, state), backend="inductor")


# ----------------------------------------------------------------------------- opcheck
# The C++ ops are checked with the very arguments the cpu backend passes them:
# every op the backend implements runs forward and backward on a small random
# case (lengths and mask included) while a dispatch mode records each
# torch.ops.wmkernels call; each recorded call then goes through opcheck (schema,
# fake tensor and AOT-dispatch tests, static and dynamic shapes). New kernels are
# covered as soon as the backend uses them.

def has_fake(qualname: str) -> bool:
    """True if ``qualname`` ("ns::op") has a fake (Python) or Meta (C++) implementation."""
    from torch._library.simple_registry import singleton

    if singleton.find(qualname).fake_impl.kernel is not None:
        return True
    return torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "Meta")


def require_cpp() -> None:
    """Fail (skip with WMKERNELS_ALLOW_NO_EXTENSION=1, as tests/ops/test_ops.py) without wmkernels._C."""
    from wmkernels.backends import cpu

    if cpu.LOAD_ERROR is not None:
        if os.environ.get("WMKERNELS_ALLOW_NO_EXTENSION") == "1":
            pytest.skip(cpu.LOAD_ERROR)
        pytest.fail(cpu.LOAD_ERROR)


class _RecordKernelCalls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "wmkernels":
            self.calls.setdefault(func.name(), (func, *torch.utils._pytree.tree_map_only(
                torch.Tensor, lambda t: t.detach().clone(), (args, kwargs))))
        return func(*args, **kwargs)


def recorded_kernel_calls(dtype):
    """{"wmkernels::op.overload": (op, args, kwargs)} from running every op of the cpu backend."""
    require_cpp()
    recorder = _RecordKernelCalls()
    for op in sorted(BACKENDS["cpu"].implemented_ops()):
        for kwargs in ({}, {"with_lengths": True, "with_mask": True, "write_mode": "gated"}):
            case = testing.random_case(op, T=3, B=3, I=2, H=3, S=2, D=3, **kwargs)
            tensors = [t.to(dtype).requires_grad_() for t in case.tensors.values()]
            with recorder:
                outputs = case.run(tensors, "cpu")
                torch.autograd.backward(outputs, [torch.randn_like(o) for o in outputs])
    return recorder.calls


def test_every_cpp_op_has_a_fake():
    require_cpp()
    names = {name for name in torch._C._dispatch_get_all_op_names() if name.startswith("wmkernels::")}
    assert "wmkernels::lstm_cell_forward" in names, names
    for name in sorted(names):
        schema = torch._C._get_schema(name, "")
        if any("Tensor" in str(a.type) for a in schema.arguments):  # cpu_capability() needs none
            assert has_fake(name), f"{name} has no fake implementation"


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_opcheck_every_kernel_call(dtype):
    calls = recorded_kernel_calls(dtype)
    assert "wmkernels::lstm_cell_forward" in calls and "wmkernels::lstm_cell_backward" in calls, sorted(calls)
    for name, (func, args, kwargs) in sorted(calls.items()):
        try:
            torch.library.opcheck(func, args, kwargs)
        except Exception as error:
            raise AssertionError(f"opcheck of {name} failed: {error}") from error

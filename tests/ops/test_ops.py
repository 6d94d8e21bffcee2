"""Tests of the op / backend layer (``wmkernels.ops``, ``wmkernels.backends``).

1. Every backend agrees with the float64 reference (``testing.compare``) on
   every op it implements, at awkward sizes, in float64 and float32.
2. Backend selection (contract §3): ``backend=`` > innermost ``use_backend`` >
   ``WMKERNELS_BACKEND`` > auto; a backend named but unable to run raises.
3. Autograd: one Function per op, retain_graph, no_grad, partial
   requires_grad, double backward, in-place modification after forward.
4. Outputs are new tensors (T = 0, frozen rows); inputs are never modified.

The ``cpu`` backend (``wmkernels._C``) is built by the README's install step:
its tests fail when it does not load, unless ``WMKERNELS_ALLOW_NO_EXTENSION=1``
(for a pure-Python checkout), where they skip. Which ops a backend
is tested on comes from ``backend.implemented_ops()``, so new kernels get
tested as soon as they land. Inputs are drawn afresh inside every test
(conftest seeds torch per test and prints the seed).
"""
from __future__ import annotations

import contextlib
import os
from unittest import mock

import pytest
import torch

import wmkernels
from wmkernels import ops, testing
from wmkernels.backends import (AUTO_ORDER, BACKENDS, TORCH_FIRST, ENV_VAR, BackendUnavailableError,
                                requested_backend, select_backend)
from wmkernels.backends import cpu as cpu_module

TESTED_BACKENDS = ("reference", "cpu", "aten")
DTYPES = (torch.float64, torch.float32)
CPU = torch.device("cpu")


# --------------------------------------------------------------------------- helpers

def require_backend(name: str) -> None:
    """Fail (or, with WMKERNELS_ALLOW_NO_EXTENSION=1, skip) when the cpu extension does not load."""
    if name == "cpu" and cpu_module.LOAD_ERROR is not None:
        if os.environ.get("WMKERNELS_ALLOW_NO_EXTENSION") == "1":
            pytest.skip(f"cpu backend unavailable: {cpu_module.LOAD_ERROR}")
        pytest.fail(f"the cpu backend is unavailable: {cpu_module.LOAD_ERROR}")


def backend_ops():
    """(backend, op) for every op each tested backend implements."""
    return [(name, op) for name in TESTED_BACKENDS
            for op in sorted(BACKENDS[name].implemented_ops())]


def backend_op_params():
    return [pytest.param(b, op, id=f"{b}-{op}") for b, op in backend_ops()]


def small_case(op: str, **kw) -> testing.Case:
    """A small awkward case of ``op`` with every optional feature on."""
    sizes = dict(T=4, B=3, I=5, H=3, S=4, D=2)
    if op in ("lstm_sequence", "wm_lstm_sequence"):
        sizes["with_lengths"] = True
    if op == "wm_read":
        sizes["with_mask"] = True
    if op == "wm_lstm_sequence":
        sizes["write_mode"] = kw.pop("write_mode", "gated")
    sizes.update(kw)
    return testing.random_case(op, **sizes)


def leaves(case: testing.Case, dtype=torch.float64, requires_grad=True):
    return [t.detach().to(dtype).clone().requires_grad_(requires_grad) for t in case.tensors.values()]


def weighted_loss(outputs, upstream):
    return sum((o * g).sum() for o, g in zip(outputs, upstream))


def grads_of(case: testing.Case, backend: str, tensors, upstream, retain_graph=False):
    """Forward on ``tensors``, backward of Σ upstream·outputs; returns (outputs, [t.grad])."""
    outputs = case.run(tensors, backend)
    weighted_loss(outputs, upstream).backward(retain_graph=retain_graph)
    return outputs, [t.grad for t in tensors]


def function_name(op: str) -> str:
    return "".join(part.capitalize() for part in op.split("_")) + "Function"


# --------------------------------------------------------------------------- 1. correctness

# (id, op, random_case keywords): awkward sizes, not the full product.
CASES = [
    ("cell-B1H1", "lstm_cell", dict(B=1, H=1)),
    ("cell-B3H3", "lstm_cell", dict(B=3, H=3)),
    ("cell-B3H65", "lstm_cell", dict(B=3, H=65)),
    ("cell-B1H65", "lstm_cell", dict(B=1, H=65)),
    ("seq-T1B1I1H1", "lstm_sequence", dict(T=1, B=1, I=1, H=1)),
    ("seq-T5B3I6H65-len-nobias", "lstm_sequence", dict(T=5, B=3, I=6, H=65, with_lengths=True, with_bias=False)),
    ("seq-T5B3I1H3-len", "lstm_sequence", dict(T=5, B=3, I=1, H=3, with_lengths=True)),
    ("seq-T1B3I6H3-len", "lstm_sequence", dict(T=1, B=3, I=6, H=3, with_lengths=True)),
    ("seq-T5B1I6H1-nobias", "lstm_sequence", dict(T=5, B=1, I=6, H=1, with_bias=False)),
    ("seq-T5B3I6H65", "lstm_sequence", dict(T=5, B=3, I=6, H=65)),
    ("read-B1S1D1", "wm_read", dict(B=1, S=1, D=1)),
    ("read-B3S5D6", "wm_read", dict(B=3, S=5, D=6)),
    ("read-B3S5D6-mask", "wm_read", dict(B=3, S=5, D=6, with_mask=True)),
    ("read-B3S1D6-mask", "wm_read", dict(B=3, S=1, D=6, with_mask=True)),
    ("read-B1S5D1-mask", "wm_read", dict(B=1, S=5, D=1, with_mask=True)),
    ("shift-B1S1D1", "wm_shift_write", dict(B=1, S=1, D=1)),
    ("shift-B3S5D6", "wm_shift_write", dict(B=3, S=5, D=6)),
    ("shift-B3S1D6", "wm_shift_write", dict(B=3, S=1, D=6)),
    ("write-B1S1D1", "wm_write", dict(B=1, S=1, D=1)),
    ("write-B3S5D6", "wm_write", dict(B=3, S=5, D=6)),
    ("write-B3S1D6", "wm_write", dict(B=3, S=1, D=6)),
    ("write-B1S5D1", "wm_write", dict(B=1, S=5, D=1)),
    ("wm-fifo-T1B1I1H1S1D1", "wm_lstm_sequence", dict(T=1, B=1, I=1, H=1, S=1, D=1, write_mode="fifo")),
    ("wm-fifo-T5B3I6H3S5D6-len", "wm_lstm_sequence", dict(T=5, B=3, I=6, H=3, S=5, D=6, write_mode="fifo", with_lengths=True)),
    ("wm-fifo-T5B3I1H65S1D6", "wm_lstm_sequence", dict(T=5, B=3, I=1, H=65, S=1, D=6, write_mode="fifo")),
    ("wm-gated-T5B3I6H65S5D6", "wm_lstm_sequence", dict(T=5, B=3, I=6, H=65, S=5, D=6, write_mode="gated")),
    ("wm-gated-T5B3I6H3S1D1-len", "wm_lstm_sequence", dict(T=5, B=3, I=6, H=3, S=1, D=1, write_mode="gated", with_lengths=True)),
    ("wm-gated-T1B1I6H3S5D6-len", "wm_lstm_sequence", dict(T=1, B=1, I=6, H=3, S=5, D=6, write_mode="gated", with_lengths=True)),
    ("wm-gated-T5B3I1H1S5D1-len", "wm_lstm_sequence", dict(T=5, B=3, I=1, H=1, S=5, D=1, write_mode="gated", with_lengths=True)),
]


def compare_params():
    params = []
    for backend in TESTED_BACKENDS:
        implemented = BACKENDS[backend].implemented_ops()
        for dtype in DTYPES:
            for case_id, op, kw in CASES:
                if op in implemented:
                    params.append(pytest.param(backend, dtype, op, kw,
                                               id=f"{backend}-{str(dtype)[6:]}-{case_id}"))
    return params


def test_case_list_covers_every_op():
    assert {op for _, op, _ in CASES} == set(ops.OP_INPUTS)


def failing_rows(case: testing.Case, backend: str, dtype: torch.dtype):
    """compare(case, backend, dtype) -> (all rows, failing rows as text). The
    float32 conditioning rule lives in testing.Row.passed."""
    rows = testing.compare(case, backend, dtype)
    return rows, [f"{r.name}: err={r.error:.3g} > tol={r.tolerance:g} (reference in this dtype: {r.floor})"
                  for r in rows if not r.passed]


@pytest.mark.parametrize("backend, dtype, op, kw", compare_params())
def test_matches_float64_reference(backend, dtype, op, kw):
    require_backend(backend)
    case = testing.random_case(op, **kw)  # fresh inputs, drawn inside the test
    rows, failing = failing_rows(case, backend, dtype)
    names = [r.name for r in rows]
    assert len(names) == len(set(names))
    assert all(r.tolerance == testing.TOLERANCE[dtype] for r in rows)
    assert {f"grad[{n}]" for n in case.tensors} <= set(names), names
    assert not failing, f"{op} {case.describe()} on {backend} in {dtype}: failing rows: " + "; ".join(failing)


@pytest.mark.parametrize("backend", TESTED_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_standard_cases_match_reference(backend, dtype):
    """The cases ``python -m wmkernels check`` runs pass on every implemented op."""
    require_backend(backend)
    implemented = BACKENDS[backend].implemented_ops()
    failures = []
    for case in testing.standard_cases():
        if case.op in implemented:
            _, bad = failing_rows(case, backend, dtype)
            if bad:
                failures.append(f"{case.op} {case.describe()}: " + "; ".join(bad))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("backend, op", backend_op_params())
def test_non_contiguous_inputs(backend, op):
    """contract §5: non-contiguous inputs give the results (and grads) of contiguous ones."""
    require_backend(backend)
    case = small_case(op)
    upstream = [torch.randn_like(o) for o in case.run(list(case.tensors.values()), "reference")]
    dense = leaves(case)
    strided = []
    for t in case.tensors.values():
        wide = torch.zeros(*t.shape, 2, dtype=t.dtype)
        wide[..., 0] = t
        leaf = wide.requires_grad_()
        strided.append(leaf)
    views = [w[..., 0] for w in strided]
    assert not any(v.is_contiguous() for v in views if v.numel() > 1)
    out_d, grad_d = grads_of(case, backend, dense, upstream)
    out_s = case.run(views, backend)
    weighted_loss(out_s, upstream).backward()
    for k, (a, b) in enumerate(zip(out_s, out_d)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13, msg=f"out[{k}]")
    for name, w, g in zip(case.tensors, strided, grad_d):
        torch.testing.assert_close(w.grad[..., 0], g, rtol=1e-12, atol=1e-13, msg=f"grad[{name}]")
        assert torch.count_nonzero(w.grad[..., 1]) == 0, f"grad[{name}] leaked into the gaps"


# --------------------------------------------------------------------------- 2. backend selection

@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    return monkeypatch


# A backend that exists but cannot run the CPU tensors of these tests: triton
# without the interpreter (the fixture below turns it off).
UNAVAILABLE = "triton"


@pytest.fixture
def no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


@contextlib.contextmanager
def recording():
    """Patch every backend's ``forward`` with a recording wrapper; yields a list of names that ran."""
    ran = []
    with contextlib.ExitStack() as stack:
        for name, backend in BACKENDS.items():
            def record(*args, _name=name, _forward=backend.forward, **kwargs):
                ran.append(_name)
                return _forward(*args, **kwargs)
            stack.enter_context(mock.patch.object(backend, "forward", side_effect=record))
        yield ran


def cell_inputs(dtype=torch.float64):
    return torch.randn(2, 12, dtype=dtype), torch.randn(2, 3, dtype=dtype)


def which_ran(call) -> str:
    with recording() as ran:
        call()
    assert len(ran) == 1, ran
    return ran[0]


def auto_choice(op: str, dtype: torch.dtype) -> str:
    """auto on CPU tensors: torch's own kernel where it comes first (lstm_sequence:
    no MEASURED_FASTER rule covers these small sizes), else cpu where it runs the
    case, else torch's own (aten) where it has the op, else the reference."""
    if ("cpu", op) in TORCH_FIRST:
        return TORCH_FIRST[("cpu", op)]
    if cpu_module.LOAD_ERROR is None and BACKENDS["cpu"].build_reason(op, dtype) is None:
        return "cpu"
    if op in BACKENDS["aten"].implemented_ops():
        return "aten"
    return "reference"


def run_case_in(case: testing.Case, dtype, backend=None):
    """The case as a training call: its inputs want gradients (auto's choice for
    inference can differ: tests/backends/test_backend_choice.py)."""
    return case.run([t.to(dtype).requires_grad_() for t in case.tensors.values()], backend)


def test_recording_sees_the_backend():
    gates, c = cell_inputs()
    assert which_ran(lambda: ops.lstm_cell(gates, c, backend="reference")) == "reference"


def test_argument_beats_context_and_env(no_env, no_interpreter):
    gates, c = cell_inputs()
    no_env.setenv(ENV_VAR, UNAVAILABLE)
    with wmkernels.use_backend(UNAVAILABLE):
        assert which_ran(lambda: ops.lstm_cell(gates, c, backend="reference")) == "reference"
        assert requested_backend("reference") == "reference"


def test_argument_auto_beats_context(no_env, no_interpreter):
    gates, c = cell_inputs()
    with wmkernels.use_backend(UNAVAILABLE):
        assert which_ran(lambda: ops.lstm_cell(gates, c, backend="auto")) == auto_choice("lstm_cell", gates.dtype)


def test_context_beats_env(no_env, no_interpreter):
    gates, c = cell_inputs()
    no_env.setenv(ENV_VAR, UNAVAILABLE)
    with wmkernels.use_backend("reference"):
        assert which_ran(lambda: ops.lstm_cell(gates, c)) == "reference"
    no_env.setenv(ENV_VAR, "reference")
    with wmkernels.use_backend("auto"):
        assert which_ran(lambda: ops.lstm_cell(gates, c)) == auto_choice("lstm_cell", gates.dtype)


def test_env_beats_auto(no_env, no_interpreter):
    gates, c = cell_inputs()
    no_env.setenv(ENV_VAR, "reference")
    assert which_ran(lambda: ops.lstm_cell(gates, c)) == "reference"
    no_env.setenv(ENV_VAR, "auto")
    assert which_ran(lambda: ops.lstm_cell(gates, c)) == auto_choice("lstm_cell", gates.dtype)
    no_env.setenv(ENV_VAR, UNAVAILABLE)
    with recording() as ran, pytest.raises(BackendUnavailableError, match=UNAVAILABLE):
        ops.lstm_cell(gates, c)
    assert ran == []


def test_env_read_at_call_time(no_env):
    gates, c = cell_inputs()
    assert which_ran(lambda: ops.lstm_cell(gates, c)) == auto_choice("lstm_cell", gates.dtype)
    no_env.setenv(ENV_VAR, "reference")
    assert which_ran(lambda: ops.lstm_cell(gates, c)) == "reference"


@pytest.mark.parametrize("op", sorted(ops.OP_INPUTS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=lambda d: str(d)[6:])
def test_auto_choice_on_cpu(no_env, op, dtype):
    """auto on CPU tensors: cpu where it implements the op in that dtype and _C loads, else aten
    (lstm_sequence), else reference."""
    if os.environ.get("WMKERNELS_ALLOW_NO_EXTENSION") != "1":
        assert cpu_module.LOAD_ERROR is None, cpu_module.LOAD_ERROR
    case = small_case(op)
    assert which_ran(lambda: run_case_in(case, dtype)) == auto_choice(op, dtype)
    assert select_backend(op, None, CPU, dtype).name == auto_choice(op, dtype)


def test_auto_without_extension_falls_back_named_cpu_raises(no_env):
    """Simulate an unbuilt _C: auto runs torch's own ops (aten) or the reference,
    backend='cpu' raises with the load error."""
    reason = "wmkernels._C is not built (simulated by the test)"
    no_env.setattr(cpu_module, "LOAD_ERROR", reason)
    gates, c = cell_inputs()
    assert which_ran(lambda: ops.lstm_cell(gates, c)) == "aten"
    assert which_ran(lambda: run_case_in(small_case("wm_read"), torch.float32)) == "reference"
    case = small_case("lstm_sequence")
    assert which_ran(lambda: run_case_in(case, torch.float32)) == "aten"  # torch's LSTM, not the loop
    with recording() as ran, pytest.raises(BackendUnavailableError) as info:
        ops.lstm_cell(gates, c, backend="cpu")
    assert ran == []
    assert reason in str(info.value) and "cpu" in str(info.value)
    assert wmkernels.availability(CPU)["cpu"] == reason


def test_nested_use_backend_restores_outer(no_env, no_interpreter):
    gates, c = cell_inputs()
    assert requested_backend(None) == "auto"
    with wmkernels.use_backend(UNAVAILABLE):
        assert requested_backend(None) == UNAVAILABLE
        with wmkernels.use_backend("reference"):
            assert requested_backend(None) == "reference"
            assert which_ran(lambda: ops.lstm_cell(gates, c)) == "reference"
            with wmkernels.use_backend("auto"):
                assert which_ran(lambda: ops.lstm_cell(gates, c)) == auto_choice("lstm_cell", gates.dtype)
            assert which_ran(lambda: ops.lstm_cell(gates, c)) == "reference"
        assert requested_backend(None) == UNAVAILABLE
        with pytest.raises(BackendUnavailableError):
            ops.lstm_cell(gates, c)
    assert requested_backend(None) == "auto"


def test_use_backend_restored_on_exception(no_env, no_interpreter):
    gates, c = cell_inputs()
    with wmkernels.use_backend("reference"):
        with pytest.raises(ZeroDivisionError):
            with wmkernels.use_backend(UNAVAILABLE):
                assert requested_backend(None) == UNAVAILABLE
                1 / 0
        assert requested_backend(None) == "reference"
        assert which_ran(lambda: ops.lstm_cell(gates, c)) == "reference"
    with pytest.raises(BackendUnavailableError):
        with wmkernels.use_backend(UNAVAILABLE):
            ops.lstm_cell(gates, c)
    assert requested_backend(None) == "auto"


def named_unavailable_params():
    """(backend, op, dtype) that cannot run on CPU tensors, whatever the build."""
    params = []
    for op in sorted(ops.OP_INPUTS):
        params.append(pytest.param("cpu", op, torch.float16, id=f"cpu-{op}-float16"))
        if op not in ("lstm_cell", "lstm_sequence", "wm_lstm_sequence"):  # bf16: contract §3.4
            params.append(pytest.param("cpu", op, torch.bfloat16, id=f"cpu-{op}-bfloat16"))
        # under TRITON_INTERPRET=1 triton runs CPU tensors, but never float64
        params.append(pytest.param("triton", op, torch.float64, id=f"triton-{op}-float64"))
        if op not in BACKENDS["aten"].implemented_ops():  # torch has its own kernel for lstm_sequence only
            params.append(pytest.param("aten", op, torch.float32, id=f"aten-{op}"))
    return params


@pytest.mark.parametrize("backend, op, dtype", named_unavailable_params())
@pytest.mark.parametrize("how", ["argument", "use_backend", "env"])
def test_named_backend_unable_to_run_raises(no_env, backend, op, dtype, how):
    """Never a silent fallback: the error names the backend and gives the reason."""
    reason = BACKENDS[backend].case_reason(op, CPU, dtype)
    assert reason, f"{backend} claims it can run {op} in {dtype} on CPU tensors"
    case = small_case(op)
    with contextlib.ExitStack() as stack:
        if how == "use_backend":
            stack.enter_context(wmkernels.use_backend(backend))
        elif how == "env":
            no_env.setenv(ENV_VAR, backend)
        ran = stack.enter_context(recording())
        with pytest.raises(BackendUnavailableError) as info:
            run_case_in(case, dtype, backend if how == "argument" else None)
    assert ran == []
    message = str(info.value)
    assert reason in message and f"'{backend}'" in message and op in message, message
    if backend == "cpu" and cpu_module.LOAD_ERROR is None and op in BACKENDS["cpu"].implemented_ops():
        assert str(dtype)[6:] in message, message


@pytest.mark.parametrize("op", sorted(set(ops.OP_INPUTS) - BACKENDS["cpu"].implemented_ops()) or ["none"])
def test_cpu_named_for_unimplemented_op_raises(no_env, op):
    if op == "none":
        pytest.skip("the cpu backend implements every op")
    case = small_case(op)
    with recording() as ran, pytest.raises(BackendUnavailableError) as info:
        case.run(list(case.tensors.values()), "cpu")
    assert ran == []
    if cpu_module.LOAD_ERROR is None:
        assert "implement" in str(info.value) and op in str(info.value), str(info.value)


def test_named_cpu_runs_only_what_it_implements(no_env):
    """backend='cpu' runs the cpu kernels (never the reference) for the ops it implements."""
    require_backend("cpu")
    for op in sorted(BACKENDS["cpu"].implemented_ops()):
        for dtype in BACKENDS["cpu"].dtypes:
            if BACKENDS["cpu"].build_reason(op, dtype) is not None:  # bf16: some ops only (§3.4)
                continue
            case = small_case(op)
            assert which_ran(lambda: run_case_in(case, dtype, "cpu")) == "cpu"


def test_cpu_extension_loads():
    require_backend("cpu")
    assert "lstm_cell" in BACKENDS["cpu"].implemented_ops()


@pytest.mark.parametrize("how", ["argument", "use_backend", "env"])
def test_unknown_backend_name(no_env, how):
    gates, c = cell_inputs()
    with pytest.raises(ValueError, match="nope") as info:
        if how == "argument":
            ops.lstm_cell(gates, c, backend="nope")
        elif how == "use_backend":
            with wmkernels.use_backend("nope"):
                pass
        else:
            no_env.setenv(ENV_VAR, "nope")
            ops.lstm_cell(gates, c)
    assert "reference" in str(info.value)  # lists the known names
    if how == "env":
        assert ENV_VAR in str(info.value)
    with pytest.raises(TypeError):
        ops.lstm_cell(gates, c, backend=3)


def test_availability_on_cpu():
    avail = wmkernels.availability(CPU)
    assert set(avail) == set(BACKENDS)
    assert avail["reference"] is None
    assert avail["cpu"] == cpu_module.LOAD_ERROR
    assert AUTO_ORDER["cpu"][-1] == "reference" and AUTO_ORDER["cuda"][-1] == "reference"
    assert "cuda" not in BACKENDS  # the GPU kernels are the triton backend's


# --------------------------------------------------------------------------- 3. autograd

@pytest.mark.parametrize("backend, op", backend_op_params())
def test_grad_fn_is_the_ops_function(backend, op):
    require_backend(backend)
    case = small_case(op)
    outputs = case.run(leaves(case), backend)
    for k, out in enumerate(outputs):
        assert out.requires_grad, f"out[{k}]"
        name = type(out.grad_fn).__name__
        assert function_name(op) in name, f"out[{k}] of {op}: grad_fn {name}"
    assert len({id(o.grad_fn) for o in outputs}) == 1  # one node for all outputs


@pytest.mark.parametrize("backend, op", backend_op_params())
def test_backward_twice_with_retain_graph(backend, op):
    require_backend(backend)
    case = small_case(op)
    tensors = leaves(case)
    outputs = case.run(tensors, backend)
    upstream = [torch.randn_like(o) for o in outputs]
    loss = weighted_loss(outputs, upstream)
    loss.backward(retain_graph=True)
    first = [t.grad.clone() for t in tensors]
    for t in tensors:
        t.grad = None
    loss.backward(retain_graph=True)
    for name, t, g in zip(case.tensors, tensors, first):
        assert torch.equal(t.grad, g), f"grad[{name}] differs on the second backward"
    # and once more accumulating, without retain_graph: 2x
    loss.backward()
    for name, t, g in zip(case.tensors, tensors, first):
        torch.testing.assert_close(t.grad, 2 * g, rtol=1e-14, atol=0, msg=f"grad[{name}]")
    with pytest.raises(RuntimeError):
        loss.backward()  # graph freed


@pytest.mark.parametrize("backend, op", backend_op_params())
def test_no_grad_forward(backend, op):
    require_backend(backend)
    case = small_case(op)
    tensors = leaves(case)
    with_grad = case.run(tensors, backend)
    with torch.no_grad():
        outputs = case.run(tensors, backend)
    for k, (o, w) in enumerate(zip(outputs, with_grad)):
        assert o.grad_fn is None and not o.requires_grad, f"out[{k}]"
        assert torch.equal(o, w.detach()), f"out[{k}] differs under no_grad"
    # inputs that do not require grad at all: same, with grad mode on
    plain = case.run(leaves(case, requires_grad=False), backend)
    for k, o in enumerate(plain):
        assert o.grad_fn is None and not o.requires_grad, f"out[{k}]"


def subsets(n):
    """A few proper, non-empty subsets of range(n) (which inputs want a gradient)."""
    out = {(0,), tuple(range(1, n)), tuple(range(0, n, 2)), tuple(range(1, n, 2)), (n - 1,)}
    return sorted(s for s in out if s and len(s) < n)


@pytest.mark.parametrize("backend, op", backend_op_params())
def test_gradients_flow_only_to_inputs_that_require_grad(backend, op):
    require_backend(backend)
    case = small_case(op)
    full = leaves(case)
    outputs = case.run(full, backend)
    upstream = [torch.randn_like(o) for o in outputs]
    weighted_loss(outputs, upstream).backward()
    names = list(case.tensors)
    for subset in subsets(len(names)):
        tensors = [t.detach().clone().requires_grad_(k in subset) for k, t in enumerate(full)]
        outputs = case.run(tensors, backend)
        weighted_loss(outputs, upstream).backward()
        for k, (name, t, ref) in enumerate(zip(names, tensors, full)):
            if k in subset:
                assert t.grad is not None, f"{subset}: grad[{name}] missing"
                torch.testing.assert_close(t.grad, ref.grad, rtol=1e-12, atol=1e-14,
                                           msg=f"{subset}: grad[{name}]")
            else:
                assert t.grad is None, f"{subset}: grad[{name}] should stay None"


@pytest.mark.parametrize("backend, op", backend_op_params())
def test_double_backward_equals_pure_autograd(backend, op):
    """A second derivative through an op (create_graph=True) is right: pure autograd
    of the reference as ground truth."""
    require_backend(backend)
    case = small_case(op)
    upstream = [torch.randn_like(o) for o in case.run(list(case.tensors.values()), "reference")]
    probes = [torch.randn_like(t) for t in case.tensors.values()]

    def second_derivative(run, tensors):
        # the cubes make every first derivative require grad, whatever the op does
        loss = weighted_loss(run(tensors), upstream) + sum((t ** 3).sum() for t in tensors)
        grads = torch.autograd.grad(loss, tensors, create_graph=True)
        probe = sum((g * p).sum() for g, p in zip(grads, probes))
        return torch.autograd.grad(probe, tensors, allow_unused=True)

    got = second_derivative(lambda ts: case.run(ts, backend), leaves(case))

    def run_pure(ts):
        named = dict(zip(case.tensors, ts))
        return BACKENDS["reference"].run_traceable(op, [named.get(n) for n in ops.OP_INPUTS[op]], case.extras)

    want = second_derivative(run_pure, leaves(case))
    for name, g, w in zip(case.tensors, got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12,
                                   msg=f"double backward gave a wrong second derivative for {name}")


@pytest.mark.parametrize("backend, op", backend_op_params())
def test_inplace_change_of_input_after_forward(backend, op):
    """Modifying an input between forward and backward: an error or the right grads, never wrong ones."""
    require_backend(backend)
    case = small_case(op)
    names = list(case.tensors)
    base = leaves(case)
    outputs = case.run(base, backend)
    upstream = [torch.randn_like(o) for o in outputs]
    weighted_loss(outputs, upstream).backward()
    for k, name in enumerate(names):
        tensors = leaves(case)
        outputs = case.run(tensors, backend)
        with torch.no_grad():
            tensors[k].mul_(1.5).add_(0.25)
        try:
            weighted_loss(outputs, upstream).backward()
        except RuntimeError as error:
            assert "modified by an inplace operation" in str(error), str(error)
            continue
        for j, (t, ref) in enumerate(zip(tensors, base)):
            torch.testing.assert_close(t.grad, ref.grad, rtol=1e-12, atol=1e-14,
                                       msg=f"after changing {name} in place: grad[{names[j]}] is wrong")


# --------------------------------------------------------------------------- 4. new tensors, inputs untouched

@pytest.mark.parametrize("backend, op", backend_op_params())
@pytest.mark.parametrize("requires_grad", [True, False], ids=["grad", "nograd"])
def test_inputs_never_modified(backend, op, requires_grad):
    require_backend(backend)
    case = small_case(op)
    tensors = leaves(case, requires_grad=requires_grad)
    before = [t.detach().clone() for t in tensors]
    extras_before = {k: v.clone() for k, v in case.extras.items() if isinstance(v, torch.Tensor)}
    outputs = case.run(tensors, backend)
    if requires_grad:
        weighted_loss(outputs, [torch.randn_like(o) for o in outputs]).backward()
    for name, t, b in zip(case.tensors, tensors, before):
        assert torch.equal(t.detach(), b), f"input {name} was modified"
    for k, v in extras_before.items():
        assert torch.equal(case.extras[k], v), f"{k} was modified"


def storage_shared(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.numel() == 0 or b.numel() == 0:  # empty tensors own no memory (data_ptr 0)
        return False
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def check_new_tensors(outputs, inputs, expected_equal):
    """Every output owns its storage, and writing to it leaves the inputs alone."""
    snapshot = [t.detach().clone() for t in inputs]
    for name, out in outputs.items():
        for inp in inputs:
            assert not storage_shared(out, inp), f"{name} shares storage with an input"
    for name, (out, value) in expected_equal.items():
        torch.testing.assert_close(out.detach(), value, rtol=0, atol=0, msg=name)
    with torch.no_grad():
        for out in outputs.values():
            out.detach().fill_(123.0)
    for t, s in zip(inputs, snapshot):
        assert torch.equal(t.detach(), s), "writing to an output changed an input"


def new_state_params():
    params = []
    for backend, op in backend_ops():
        if op not in ("lstm_sequence", "wm_lstm_sequence"):
            continue
        for mode in (("fifo", "gated") if op == "wm_lstm_sequence" else (None,)):
            for steps, zero_lengths, label in ((0, False, "T0"), (3, True, "lengths0")):
                for requires_grad in (True, False):
                    params.append(pytest.param(
                        backend, op, mode, steps, zero_lengths, requires_grad,
                        id="-".join(filter(None, (backend, op, mode, label,
                                                  "grad" if requires_grad else "nograd")))))
    return params


@pytest.mark.parametrize("backend, op, write_mode, steps, all_zero_lengths, requires_grad", new_state_params())
def test_states_are_new_tensors(backend, op, write_mode, steps, all_zero_lengths, requires_grad):
    """T = 0 (or every row of length 0): the returned state equals the initial one but is a new tensor."""
    require_backend(backend)
    B, H, S, D = 3, 4, 5, 2
    kw = dict(T=steps, B=B, I=3, H=H, S=S, D=D)
    case = testing.random_case(op, **kw, **({"write_mode": write_mode} if write_mode else {}))
    if all_zero_lengths:
        case.extras["lengths"] = torch.zeros(B, dtype=torch.int64)
    tensors = leaves(case, requires_grad=requires_grad)
    named = dict(zip(case.tensors, tensors))
    outputs = case.run(tensors, backend)
    if op == "lstm_sequence":
        y, h, c = outputs
        assert y.shape == (steps, B, H)
        finals = {"h_n": (h, named["h0"].detach()), "c_n": (c, named["c0"].detach())}
    else:
        y, h, c, M = outputs
        assert y.shape == (steps, B, H + D)
        finals = {"h_T": (h, named["h0"].detach()), "c_T": (c, named["c0"].detach()),
                  "M_T": (M, named["M0"].detach())}
    assert torch.count_nonzero(y) == 0
    if requires_grad:  # the state passes through: its gradient is the upstream one
        ups = {k: torch.randn_like(v[0]) for k, v in finals.items()}
        sum((v[0] * ups[k]).sum() for k, v in finals.items()).backward()
        init = {"h": named["h0"], "c": named["c0"], "M": named.get("M0")}
        for k, g in ups.items():
            torch.testing.assert_close(init[k[0]].grad, g, rtol=0, atol=0, msg=f"grad through {k}")
    check_new_tensors({k: v[0] for k, v in finals.items()} | {"y": y}, tensors, finals)


@pytest.mark.parametrize("backend, op", backend_op_params())
def test_outputs_never_alias_inputs(backend, op):
    require_backend(backend)
    case = small_case(op)
    tensors = leaves(case)
    outputs = case.run(tensors, backend)
    check_new_tensors({f"out[{k}]": o for k, o in enumerate(outputs)}, tensors, {})

"""The backend x op matrix, derived from the table of ops (contract §1, §3).

Every backend holds one implementation per op it runs (``impls``, or
``traceable`` for the plain-PyTorch backends), each taking the op's inputs and
extras in the table's order. Every (backend, op) pair either matches the
float64 reference or, asked for by name, raises ``BackendUnavailableError``
with its reason; which pairs may not run here is written down below, so a
backend that stops running an op fails instead of passing silently. The
triton backend runs on CPU tensors under ``TRITON_INTERPRET=1`` (conftest).
"""
import inspect
import re

import pytest
import torch

from wmkernels import ops, testing
from wmkernels.backends import BACKENDS, BackendUnavailableError
from wmkernels.backends.plain import PlainTorchBackend
from wmkernels.contract import OPS, OP_NAMES

from tests.triton.triton_support import quiet_interpreter

CPU = torch.device("cpu")
# Small awkward sizes (each Triton program costs milliseconds under the interpreter).
SIZES = dict(T=3, B=3, I=5, H=7, S=4, D=5)
# Which pairs may not run CPU float32 tensors here, and why: aten has no memory
# kernels; triton and cpu may be absent from a checkout (no Triton, no built _C).
NEVER = {("aten", op) for op in OP_NAMES if op not in ("lstm_cell", "lstm_sequence")}
MAY_BE_ABSENT = {"triton": ("not installed", "does not load"), "cpu": ("not built", "out of date")}


def implementations(backend):
    """The backend's table: {op: forward function} (the traceable function of a plain-PyTorch backend)."""
    if isinstance(backend, PlainTorchBackend):
        return dict(backend.traceable)
    return {op: impl.forward for op, impl in backend.impls.items()}


@pytest.mark.parametrize("name", list(BACKENDS))
def test_tables_follow_the_table_of_ops(name):
    """Each implementation takes the op's inputs, then its extras, by the names of the table."""
    table = implementations(BACKENDS[name])
    assert set(table) <= set(OPS), set(table) - set(OPS)
    assert BACKENDS[name].implemented_ops() == frozenset(table)
    for op, forward in table.items():
        params = list(inspect.signature(forward).parameters)
        assert params == list(OPS[op].inputs + OPS[op].extras), (name, op, params)
    if not isinstance(BACKENDS[name], PlainTorchBackend):
        for op, impl in BACKENDS[name].impls.items():  # backward(saved, info, *grads of the outputs)
            assert len(inspect.signature(impl.backward).parameters) == 2 + len(OPS[op].outputs), (name, op)


@quiet_interpreter
@pytest.mark.parametrize("op", OP_NAMES)
@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_backend_runs_every_op_or_says_why(name, op):
    case = testing.random_case(op, **SIZES, **({"with_lengths": True} if "lengths" in OPS[op].extras else {}))
    reason = BACKENDS[name].case_reason(op, CPU, torch.float32)
    if reason is not None:
        absent = any(why in reason for why in MAY_BE_ABSENT.get(name, ()))
        assert (name, op) in NEVER or absent, f"{name} cannot run {op} here: {reason}"
        with pytest.raises(BackendUnavailableError, match=re.escape(reason)):
            case.run([t.float() for t in case.tensors.values()], name)
        return
    assert (name, op) not in NEVER, f"{name} runs {op}: update NEVER"
    rows = testing.compare(case, name, torch.float32)
    bad = [f"{r.name}: {r.error:.2e} > {r.tolerance:.0e}" for r in rows if not r.passed]
    assert not bad, f"{name} {case.describe()}: " + "; ".join(bad)


@quiet_interpreter
@pytest.mark.parametrize("name", [n for n in BACKENDS if "lstm_sequence" in BACKENDS[n].implemented_ops()])
def test_lstm_sequence_bias_gradients_are_two_tensors(name):
    """b_ih and b_hh get equal gradients that never share storage (each may become a
    .grad accumulated into in place); the triton backend once returned one tensor for both."""
    if BACKENDS[name].case_reason("lstm_sequence", CPU, torch.float32) is not None:
        pytest.skip(BACKENDS[name].case_reason("lstm_sequence", CPU, torch.float32))
    case = testing.random_case("lstm_sequence", **SIZES)
    inputs = [t.float().requires_grad_() for t in case.tensors.values()]
    y, h_n, c_n = ops.lstm_sequence(*inputs, backend=name)
    grad_b_ih, grad_b_hh = torch.autograd.grad((y.sum() + h_n.sum() + c_n.sum(),), inputs[-2:])
    assert grad_b_ih.untyped_storage().data_ptr() != grad_b_hh.untyped_storage().data_ptr()
    torch.testing.assert_close(grad_b_ih, grad_b_hh, rtol=0, atol=0)

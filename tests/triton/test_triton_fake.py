"""The triton backend's launches are torch ops (``torch.ops.wmkernels_triton``)
whose fake implementations match the real ones, which is what torch.compile
traces: torch.library.opcheck (schema and fake-tensor checks) on the forward
and backward op that one forward+backward of every public op runs."""
import sys

import pytest
import torch

import wmkernels.backends.triton as triton_backend
from tests.triton.triton_support import DEVICE, needs_triton, quiet_interpreter
from wmkernels import testing
from wmkernels.contract import OP_NAMES

pytestmark = [needs_triton, quiet_interpreter]
SIZES = {
    "lstm_cell": dict(B=2, H=3),
    "lstm_sequence": dict(T=2, B=2, I=3, H=3, with_lengths=True),
    "wm_read": dict(B=2, S=3, D=5, with_mask=True),
    "wm_shift_write": dict(B=2, S=3, D=5),
    "wm_write": dict(B=2, S=3, D=5),
    "wm_lstm_sequence": dict(T=3, B=2, I=3, H=3, S=2, D=3, with_lengths=True),
}


def recorded_launches(op: str, write_mode: str, monkeypatch):
    """[(custom op, args)] of one forward and backward of ``op`` on the triton backend."""
    calls = []
    module = sys.modules[triton_backend.IMPLS[op].forward.__module__]  # the op family's Triton module
    for name in (f"{op}_forward", f"{op}_backward"):
        fn = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, fn=fn: calls.append((fn, args)) or fn(*args))
    extra = {"write_mode": write_mode} if op == "wm_lstm_sequence" else {}
    case = testing.random_case(op, **SIZES[op], **extra)
    inputs = [t.float().to(DEVICE).requires_grad_() for t in case.tensors.values()]
    on_device = testing.Case(op, case.tensors, {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v
                                               for k, v in case.extras.items()})
    outputs = [o for o in on_device.run(inputs, "triton") if o.requires_grad]
    torch.autograd.backward(outputs, [torch.randn_like(o) for o in outputs])
    return calls


@pytest.mark.parametrize("op, write_mode", [(op, "fifo") for op in OP_NAMES] + [("wm_lstm_sequence", "gated")])
def test_fake_implementations_match(op, write_mode, monkeypatch):
    calls = recorded_launches(op, write_mode, monkeypatch)
    assert [fn._qualname for fn, _ in calls] == [f"wmkernels_triton::{op}_{p}" for p in ("forward", "backward")]
    for fn, args in calls:
        torch.library.opcheck(fn, args, test_utils=("test_schema", "test_faketensor"))

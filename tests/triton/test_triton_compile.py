"""torch.compile (fullgraph, aot_eager: dynamo and AOTAutograd through the ops'
Functions and the triton ops' fake implementations) of every op on the triton
backend: forward and backward equal to eager."""
import pytest
import torch

from tests.triton.triton_support import DEVICE, needs_triton, quiet_interpreter
from wmkernels import testing
from wmkernels.testing import rel_err

pytestmark = [needs_triton, quiet_interpreter]
CASES = [
    ("lstm_cell", dict(B=2, H=3)),
    ("wm_read", dict(B=2, S=3, D=4, with_mask=True)),
    ("wm_shift_write", dict(B=2, S=3, D=4)),
    ("wm_write", dict(B=2, S=3, D=4)),
    ("lstm_sequence", dict(T=3, B=2, I=3, H=4, with_lengths=True)),
    ("wm_lstm_sequence", dict(T=3, B=2, I=3, H=4, S=2, D=3, write_mode="fifo", with_lengths=True)),
    ("wm_lstm_sequence", dict(T=3, B=2, I=3, H=4, S=2, D=3, write_mode="gated", with_lengths=True)),
]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def outputs_and_grads(fn, inputs, upstream):
    outputs = fn(*inputs)
    pairs = [(o, u) for o, u in zip(outputs, upstream) if o.requires_grad]
    grads = torch.autograd.grad([o for o, _ in pairs], inputs, [u for _, u in pairs], allow_unused=True)
    return list(outputs) + [g for g in grads if g is not None]


@pytest.mark.parametrize("op, sizes", CASES, ids=[f"{op}-{s.get('write_mode', '')}" for op, s in CASES])
def test_compiled_equals_eager(op, sizes):
    case = testing.random_case(op, **sizes)
    case.extras = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in case.extras.items()}
    inputs = [t.float().to(DEVICE).requires_grad_() for t in case.tensors.values()]

    def run(*tensors):
        return case.run(tensors, "triton")

    upstream = [torch.randn_like(o) for o in run(*inputs)]
    got = outputs_and_grads(torch.compile(run, fullgraph=True, backend="aot_eager"), inputs, upstream)
    want = outputs_and_grads(run, inputs, upstream)
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and rel_err(a, b) <= 1e-6, f"{k}: {rel_err(a, b):.2e}"

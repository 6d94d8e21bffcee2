"""PyTorch's own samples of torch.nn.LSTM / LSTMCell (``module_db`` of
torch.testing._internal.common_modules, shipped in the wheel) run against
wmkernels.nn: every sample's outputs and gradients equal torch's, and every
error sample raises the type torch raises, with torch's message."""
import re

import pytest
import torch

from torch.testing._internal.common_modules import module_db  # needs expecttest (requirements-dev.txt)

import wmkernels
from wmkernels.testing import rel_err

OURS = {torch.nn.LSTM: wmkernels.nn.LSTM, torch.nn.LSTMCell: wmkernels.nn.LSTMCell}
INFOS = [info for info in module_db if info.module_cls in OURS]
TOLERANCE = {torch.float32: 2e-5, torch.float64: 1e-10}


def samples():
    for info in INFOS:
        for dtype in (torch.float32, torch.float64):
            for training in (True, False):
                for k, sample in enumerate(info.module_inputs_func(info, device="cpu", dtype=dtype,
                                                                   requires_grad=True, training=training)):
                    yield pytest.param(info, sample, dtype, training,
                                       id=f"{info.name}-{str(dtype)[6:]}-{'train' if training else 'eval'}-{k}")


def error_samples():
    for info in INFOS:
        if info.module_error_inputs_func is None:
            continue
        for k, error in enumerate(info.module_error_inputs_func(info, device="cpu", dtype=torch.float32,
                                                                requires_grad=False, training=True)):
            yield pytest.param(info, error, id=f"{info.name}-error-{k}")


def flat(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flat(v)]
    return []


def clone_args(args):
    return tuple(a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor)
                 else clone_args(a) if isinstance(a, tuple) else a for a in args)


@pytest.mark.parametrize("info, sample, dtype, training", samples())
@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
def test_module_db_sample_matches_torch(info, sample, dtype, training):
    args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
    theirs = info.module_cls(*args, **kwargs).to(dtype).train(training)
    ours = OURS[info.module_cls](*args, **kwargs).to(dtype).train(training)
    ours.load_state_dict(theirs.state_dict())
    results = []
    for layer in (theirs, ours):
        inputs = clone_args(sample.forward_input.args)
        out = layer(*inputs, **sample.forward_input.kwargs)
        leaves = [t for t in flat(inputs) if t.requires_grad] + list(layer.parameters())
        outputs = flat(out)
        grads = torch.autograd.grad(sum((o * (k + 1)).sum() for k, o in enumerate(outputs)), leaves,
                                    allow_unused=True)
        results.append((outputs, grads))
    (want_out, want_grads), (got_out, got_grads) = results
    assert len(got_out) == len(want_out)
    for k, (g, w) in enumerate(zip(got_out, want_out)):
        assert g.shape == w.shape and g.dtype == w.dtype, k
        assert rel_err(g, w) <= TOLERANCE[dtype], f"output {k}: {rel_err(g, w):.2e}"
    for k, (g, w) in enumerate(zip(got_grads, want_grads)):
        if w is None:
            assert g is None or not g.any(), k
            continue
        assert rel_err(g, w) <= 50 * TOLERANCE[dtype], f"gradient {k}: {rel_err(g, w):.2e}"


@pytest.mark.parametrize("info, error", error_samples())
def test_module_db_error_sample_raises_as_torch(info, error):
    sample = error.module_error_input
    with pytest.raises(error.error_type) as raised:  # in the constructor or in forward, as for torch
        layer = OURS[info.module_cls](*sample.constructor_input.args, **sample.constructor_input.kwargs)
        layer(*sample.forward_input.args, **sample.forward_input.kwargs)
    assert re.search(error.error_regex, str(raised.value)), str(raised.value)

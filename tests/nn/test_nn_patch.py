"""wmkernels.patch(model): every torch.nn.LSTM / LSTMCell replaced by the drop-in,
recursively, with the same Parameter objects (weights, device, dtype), the
training flag kept, and the model's outputs unchanged."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import wmkernels
from wmkernels.testing import rel_err


class Tagger(nn.Module):
    """LSTMs at several depths: a direct child, inside Sequential / ModuleList, a cell, one shared."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.lstm = nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True)
        self.stack = nn.ModuleList([nn.LSTM(10, 3), nn.Linear(3, 3)])
        self.cell = nn.LSTMCell(3, 3, bias=False)
        self.shared = self.cell

    def forward(self, x):
        y, _ = self.lstm(self.encoder(x))                 # [B, T, 10]
        y, _ = self.stack[0](y.transpose(0, 1))           # [T, B, 3]
        y = self.stack[1](y)
        state = None
        for t in range(y.shape[0]):
            state = self.cell(y[t], state)
            state = self.shared(y[t], state)
        return state[0]


def test_patch_replaces_every_lstm_and_keeps_outputs():
    model = Tagger().double()
    model.stack.eval()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    before = model(x)
    params_before = {name: p for name, p in model.named_parameters()}
    patched = wmkernels.patch(model)
    assert patched is model
    assert type(model.lstm) is wmkernels.nn.LSTM
    assert type(model.stack[0]) is wmkernels.nn.LSTM
    assert type(model.cell) is wmkernels.nn.LSTMCell
    assert model.shared is model.cell  # sharing kept
    assert not any(type(m) in (nn.LSTM, nn.LSTMCell) for m in model.modules())
    # The very same Parameter objects, so dtype/device are kept and an optimizer still holds them.
    for name, p in model.named_parameters():
        assert p is params_before[name], name
        assert p.dtype == torch.float64
    assert model.lstm.training and not model.stack[0].training
    assert rel_err(model(x), before) <= 1e-12


def test_patch_keeps_training_with_an_existing_optimizer():
    model = nn.Sequential(nn.LSTM(3, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    wmkernels.patch(model)
    x = torch.randn(5, 2, 3)
    loss = model(x)[0].pow(2).sum()
    loss.backward()
    optimizer.step()
    assert model(x)[0].pow(2).sum() < loss  # the optimizer moved the weights the drop-in uses


def test_patch_of_a_bare_layer_returns_the_drop_in():
    lstm = nn.LSTM(3, 4, proj_size=2, bias=False).eval()
    new = wmkernels.patch(lstm)
    assert type(new) is wmkernels.nn.LSTM and not new.training
    assert new.proj_size == 2 and not new.bias
    x = torch.randn(5, 2, 3)
    assert rel_err(new(x)[0], lstm(x)[0]) <= 2e-5
    assert type(wmkernels.patch(nn.LSTMCell(3, 4))) is wmkernels.nn.LSTMCell


def test_patch_leaves_subclasses_and_other_modules_alone():
    class MyLSTM(nn.LSTM):
        pass

    model = nn.Sequential(MyLSTM(3, 4), nn.GRU(4, 4))
    wmkernels.patch(model)
    assert type(model[0]) is MyLSTM and type(model[1]) is nn.GRU
    with pytest.raises(TypeError, match="nn.Module"):
        wmkernels.patch("model")


@pytest.mark.parametrize("make", [lambda: wmkernels.nn.LSTM(3, 4, num_layers=2, bidirectional=True),
                                  lambda: wmkernels.nn.LSTMCell(3, 4),
                                  lambda: wmkernels.nn.WMLSTM(3, 4, 2, 3, write_mode="gated")],
                         ids=["LSTM", "LSTMCell", "WMLSTM"])
def test_layer_saved_whole_loads_with_weights_only(make, tmp_path):
    """torch.load's default (weights_only=True) loads our layers saved whole."""
    layer = make()
    torch.save(layer, tmp_path / "layer.pt")
    loaded = torch.load(tmp_path / "layer.pt")  # weights_only=True is the default
    assert type(loaded) is type(layer)
    for (name, a), (_, b) in zip(layer.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_patch_keeps_hooks_buffers_and_training_flag():
    """The replaced layer is the same object with the drop-in's class: forward
    hooks and pre-hooks keep firing, buffers and the training flag stay."""
    model = nn.Sequential(nn.LSTM(3, 4), nn.LSTMCell(3, 4)).eval()
    lstm, cell = model[0], model[1]
    fired = []
    lstm.register_forward_pre_hook(lambda module, args: fired.append(("pre", type(module))))
    lstm.register_forward_hook(lambda module, args, out: fired.append(("post", type(module))))
    cell.register_forward_hook(lambda module, args, out: (out[0] * 2, out[1]))  # a hook that changes the output
    lstm.register_buffer("steps_seen", torch.tensor(7))
    x = torch.randn(5, 2, 3)
    want_cell = cell(x[0])[0]
    wmkernels.patch(model)
    assert model[0] is lstm and model[1] is cell
    assert type(lstm) is wmkernels.nn.LSTM and type(cell) is wmkernels.nn.LSTMCell
    assert not lstm.training and not cell.training
    assert torch.equal(lstm.steps_seen, torch.tensor(7)) and "steps_seen" in lstm.state_dict()
    lstm(x)
    assert fired == [("pre", wmkernels.nn.LSTM), ("post", wmkernels.nn.LSTM)]
    assert rel_err(cell(x[0])[0], want_cell) <= 1e-6  # the hook still doubles h


def test_patch_keeps_registered_parametrizations():
    """A layer with a registered parametrization (torch.nn.utils.parametrize)
    becomes the drop-in still parametrized: the same outputs, gradients reach
    the original weight, and removing the parametrization leaves the drop-in."""
    from torch.nn.utils import parametrize

    class Doubled(nn.Module):
        def forward(self, w):
            return 2 * w

    model = nn.Sequential(nn.LSTM(3, 4))
    parametrize.register_parametrization(model[0], "weight_hh_l0", Doubled())
    original = model[0].parametrizations.weight_hh_l0.original
    x = torch.randn(5, 2, 3)
    want = model(x)[0]
    wmkernels.patch(model)
    layer = model[0]
    assert isinstance(layer, wmkernels.nn.LSTM) and parametrize.is_parametrized(layer, "weight_hh_l0")
    assert rel_err(layer(x)[0], want) <= 2e-5
    layer(x)[0].sum().backward()
    assert original.grad is not None and original.grad.abs().sum() > 0
    doubled = layer.weight_hh_l0.detach().clone()
    assert torch.equal(doubled, 2 * original.detach())
    parametrize.remove_parametrizations(layer, "weight_hh_l0")
    assert type(layer) is wmkernels.nn.LSTM
    assert torch.equal(layer.weight_hh_l0, doubled)

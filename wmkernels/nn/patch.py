"""``wmkernels.patch(model)``: swap torch's LSTM layers for the drop-ins, in place."""
from __future__ import annotations

from typing import Dict, Optional

from torch import nn

from wmkernels.nn.cell import LSTMCell
from wmkernels.nn.lstm import LSTM


def _drop_in(module: nn.Module) -> Optional[nn.Module]:
    """The drop-in for ``module`` if it is exactly a ``torch.nn.LSTM`` / ``LSTMCell``, else None.

    The new layer is built on the meta device and then takes over the old
    layer's Parameter objects themselves: same weights, device and dtype, and
    an optimizer that already holds them keeps training the patched model.
    """
    if type(module) is nn.LSTM:  # exact type: a user subclass may override forward
        new = LSTM(module.input_size, module.hidden_size, module.num_layers, module.bias,
                   module.batch_first, module.dropout, module.bidirectional, module.proj_size,
                   device="meta")
    elif type(module) is nn.LSTMCell:
        new = LSTMCell(module.input_size, module.hidden_size, module.bias, device="meta")
    else:
        return None
    old = dict(module.named_parameters(recurse=False))
    if set(old) != set(dict(new.named_parameters(recurse=False))):
        raise RuntimeError(f"wmkernels.patch: parameters of {module} do not match the drop-in's: "
                           f"{sorted(old)} vs {sorted(dict(new.named_parameters()))}")
    for name in new._parameters:
        if new._parameters[name] is not None:
            new._parameters[name] = old[name]
    new.train(module.training)
    return new


def patch(model: nn.Module, _done: Optional[Dict[int, nn.Module]] = None) -> nn.Module:
    """Replace every ``torch.nn.LSTM`` and ``torch.nn.LSTMCell`` inside ``model``
    (recursively, ``model`` itself included) by ``wmkernels.nn.LSTM`` / ``LSTMCell``
    sharing the same parameters (so weights, device, dtype and training flag are
    kept). Returns the patched model: ``model`` itself, or the drop-in when
    ``model`` is itself an LSTM. A layer used in several places stays shared.
    Hooks registered on a replaced layer are not carried over.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"wmkernels.patch: model must be a torch.nn.Module, got {type(model).__name__}")
    done = {} if _done is None else _done
    if id(model) in done:
        return done[id(model)]
    new = _drop_in(model)
    if new is not None:
        done[id(model)] = new
        return new
    done[id(model)] = model
    for name, child in list(model._modules.items()):  # named_children() skips a repeated child
        if child is None:
            continue
        replaced = patch(child, done)
        if replaced is not child:
            setattr(model, name, replaced)
    return model


__all__ = ["patch"]

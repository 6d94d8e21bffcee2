"""``wmkernels.patch(model)``: turn torch's LSTM layers into the drop-ins, in place."""
from __future__ import annotations

from typing import Optional, Set

from torch import nn
from torch.nn.utils import parametrize

from wmkernels.nn.cell import LSTMCell
from wmkernels.nn.lstm import LSTM

DROP_INS = {nn.LSTM: LSTM, nn.LSTMCell: LSTMCell}


def _parametrized_class(cls: type) -> Optional[type]:
    """The drop-in for ``torch.nn.utils.parametrize``'s class ``Parametrized<Layer>``
    (a subclass of exactly nn.LSTM / nn.LSTMCell that holds the parametrized
    tensors' properties): the same class built on the drop-in, so that removing
    the parametrizations later leaves the drop-in. None for any other class."""
    if len(cls.__bases__) != 1 or cls.__bases__[0] not in DROP_INS:
        return None
    base = cls.__bases__[0]
    if cls.__name__ != f"Parametrized{base.__name__}":
        return None
    drop_in = DROP_INS[base]
    body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
    return type(f"Parametrized{drop_in.__name__}", (drop_in,), body)


def _drop_in_class(module: nn.Module) -> Optional[type]:
    """The class ``module`` becomes: the drop-in if it is exactly a
    ``torch.nn.LSTM`` / ``LSTMCell`` (a user subclass may override forward, so
    it stays), parametrized or not; else None."""
    cls = type(module)
    if cls in DROP_INS:
        return DROP_INS[cls]
    if parametrize.is_parametrized(module):
        return _parametrized_class(cls)
    return None


def patch(model: nn.Module, _done: Optional[Set[int]] = None) -> nn.Module:
    """Turn every ``torch.nn.LSTM`` and ``torch.nn.LSTMCell`` inside ``model``
    (recursively, ``model`` itself included) into ``wmkernels.nn.LSTM`` /
    ``LSTMCell``, in place: the drop-ins subclass torch's layers and add no
    state, so each layer only changes its class and keeps everything else —
    its Parameter objects (weights, device, dtype, an optimizer holding them),
    buffers, training flag, forward hooks and pre-hooks, state-dict hooks and
    registered parametrizations. Returns ``model`` (now patched).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"wmkernels.patch: model must be a torch.nn.Module, got {type(model).__name__}")
    done = set() if _done is None else _done
    if id(model) in done:
        return model
    done.add(id(model))
    new_class = _drop_in_class(model)
    if new_class is not None:
        model.__class__ = new_class
        return model
    for child in model._modules.values():  # named_children() skips a repeated child
        if child is not None:
            patch(child, done)
    return model


__all__ = ["patch"]

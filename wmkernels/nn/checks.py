"""Argument checks of the layers (contract §5): constructor sizes, the input
tensor and the recurrent state. Each failure names the layer, the argument, the
expected shape and the one given; shapes inside the ops are checked again there.
"""
from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import Tensor


class LayerShapeError(ValueError, RuntimeError):
    """A tensor of the wrong rank or shape given to a layer: a ValueError naming
    the argument (contract §5) that is also the RuntimeError torch.nn.LSTM and
    LSTMCell raise there, so code catching either keeps working."""


def positive_int(layer: str, name: str, value) -> int:
    """A constructor size: an int ≥ 1 (TypeError / ValueError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{layer}: {name} should be of type int, got: {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{layer}: {name} must be greater than zero, got {value}")
    return value


def dropout(value) -> float:
    """A dropout probability: a number in [0, 1], not a bool (torch.nn.LSTM's message)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Number) or not 0 <= value <= 1:
        raise ValueError("dropout should be a number in range [0, 1] representing the "
                         f"probability of an element being zeroed, got {value!r}")
    return float(value)


def flag(layer: str, name: str, value) -> bool:
    """A constructor switch (``bias``, ``batch_first``, ``bidirectional``): a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{layer}: {name} should be of type bool, got: {type(value).__name__}")
    return value


def tensor(layer: str, name: str, value, dims: Sequence[int]) -> Tensor:
    """``value`` must be a floating-point tensor with one of ``dims`` dimensions."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{layer}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() not in dims:  # the rank before the dtype, as torch's layers check
        wanted = " or ".join(f"{d}D" for d in dims)
        raise LayerShapeError(f"{layer}: Expected {name} to be {wanted}, got {value.dim()}D instead "
                              f"(shape {list(value.shape)})")
    if not value.dtype.is_floating_point:
        raise TypeError(f"{layer}: {name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def size(layer: str, name: str, value: Tensor, expected: Sequence[int], labels: str) -> None:
    """``value`` must have shape ``expected`` (``labels`` spells it out, e.g. "[B, H]");
    the message starts as torch.nn.LSTM's ("Expected hidden[0] size (1, 2, 20), got [1, 2, 19]")."""
    if tuple(value.shape) != tuple(expected):
        raise LayerShapeError(f"{layer}: Expected {name} size {tuple(expected)}, got {list(value.shape)} "
                              f"(shape {labels})")


def matches_weights(layer: str, name: str, value: Tensor, weight: Tensor) -> None:
    """``value`` must share the parameters' dtype and device."""
    if value.dtype != weight.dtype:
        raise ValueError(f"{layer}: RNN {name} dtype ({value.dtype}) does not match weight dtype "
                         f"({weight.dtype}). Convert input: input.to({weight.dtype}), or convert "
                         f"model: model.to({value.dtype})")
    if value.device != weight.device:
        raise ValueError(f"{layer}: {name} is on {value.device} but the weights are on "
                         f"{weight.device}; they must be on one device")


def state_pair(layer: str, name: str, value) -> tuple:
    """``value`` must be a tuple/list of length 2 (e.g. ``(h0, c0)``)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{layer}: Expected {name} to be a tuple of 2 tensors (h, c), got "
                         f"{type(value).__name__}" + (f" of length {len(value)}"
                                                      if isinstance(value, (tuple, list)) else ""))
    return tuple(value)


def zeros(shape, like: Tensor) -> Tensor:
    return torch.zeros(shape, dtype=like.dtype, device=like.device)

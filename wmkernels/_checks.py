"""Argument checks of the public ops (contract §5), done once, in Python.

Every failure names the op, the argument, what was expected and what was
given: ``TypeError`` for a wrong kind of value (not a tensor, an integer
tensor where floats are due, mixed dtypes), ``ValueError`` for a wrong shape,
size, device or value.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

Dim = Tuple[str, Optional[int]]  # (label, required size or None for any)


def _shape_text(dims: Sequence[Dim]) -> str:
    return "[" + ", ".join(label if size is None else f"{label}={size}" for label, size in dims) + "]"


def float_tensor(op: str, name: str, value) -> Tensor:
    """``value`` must be a real floating-point tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(value).__name__}")
    if not value.dtype.is_floating_point:
        raise TypeError(
            f"{op}: argument '{name}' must be a floating-point tensor, got dtype {value.dtype}")
    if value.layout != torch.strided:
        raise TypeError(f"{op}: argument '{name}' must be a dense (strided) tensor, got layout {value.layout}")
    return value


def shape(op: str, name: str, tensor: Tensor, dims: Sequence[Dim]) -> Tuple[int, ...]:
    """``tensor`` must have ``len(dims)`` dimensions and the required sizes; returns its shape."""
    got = list(tensor.shape)
    if tensor.dim() != len(dims) or any(
            size is not None and size != g for (_, size), g in zip(dims, got)):
        raise ValueError(
            f"{op}: argument '{name}' must have shape {_shape_text(dims)}, got {got}")
    return tuple(got)


def at_least_one(op: str, name: str, tensor: Tensor, label: str, size: int, dims: Sequence[Dim]):
    if size < 1:
        raise ValueError(f"{op}: argument '{name}' must have {label} ≥ 1 (shape "
                         f"{_shape_text(dims)}), got {list(tensor.shape)}")


def same_kind(op: str, first: Tuple[str, Tensor], others: Sequence[Tuple[str, Optional[Tensor]]]):
    """Every tensor of ``others`` shares the dtype and device of ``first``."""
    first_name, first_tensor = first
    for name, tensor in others:
        if tensor is None:
            continue
        if tensor.dtype != first_tensor.dtype:
            raise TypeError(f"{op}: argument '{name}' has dtype {tensor.dtype} but "
                            f"'{first_name}' has {first_tensor.dtype}; they must match")
        if tensor.device != first_tensor.device:
            raise ValueError(f"{op}: argument '{name}' is on {tensor.device} but "
                             f"'{first_name}' is on {first_tensor.device}; they must be on one device")


def lengths(op: str, value, batch: int, steps: int) -> Optional[Tensor]:
    """``lengths``: None or an integer tensor [B] with values in [0, T]; returned
    as int64 on the device it came on (each backend moves it where it needs it).

    Lengths on the CPU are checked on the host: no device-to-host sync, whatever
    the device of the other tensors. Lengths on a GPU are checked on the GPU
    (``torch._assert_async``: a device-side assert on bad values, as torch's
    own indexing does, rather than a sync on every call) and clamped to [0, T],
    so a kernel never reads out of bounds whatever they hold. Under
    torch.compile the check is the same in-graph assert.
    """
    if value is None:
        return None
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: argument 'lengths' must be a torch.Tensor or None, got {type(value).__name__}")
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(f"{op}: argument 'lengths' must be an integer (int64) tensor, got dtype {value.dtype}")
    shape(op, "lengths", value, [("B", batch)])
    if value.device.type == "meta" or value.layout != torch.strided:
        raise ValueError(f"{op}: argument 'lengths' must be a dense tensor holding values, "
                         f"got one on {value.device} with layout {value.layout}")
    value = value.to(torch.int64)
    if torch.compiler.is_compiling() or value.device.type != "cpu":
        # reading the values back would break the graph, or wait for the GPU
        torch._assert_async(((value >= 0) & (value <= steps)).all(),
                            f"{op}: argument 'lengths' must lie in [0, T={steps}]")
        return value.clamp(0, steps)
    if value.numel() > 0:
        low, high = int(value.min()), int(value.max())
        if low < 0 or high > steps:
            raise ValueError(f"{op}: argument 'lengths' must lie in [0, T={steps}], "
                             f"got values in [{low}, {high}]")
    return value


def capacity(op: str, value, batch: int, steps: Optional[int], slots: int,
             device: torch.device) -> Optional[Tensor]:
    """``capacity``: None or an int64 tensor [B] or (with ``steps``) [T, B] with
    values in [1, S], on the CPU or on ``device``; returned as [T, B] (a [B]
    one expanded over the steps; [B] when ``steps`` is None) on the device it
    came on. Checked as ``lengths`` are: on the host with the offending index
    named when it is on the CPU (no sync), with a device-side assert and a
    clamp into [1, S] on a GPU or under torch.compile."""
    if value is None:
        return None
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: argument 'capacity' must be a torch.Tensor or None, got {type(value).__name__}")
    if value.dtype != torch.int64:
        raise TypeError(f"{op}: argument 'capacity' must be an int64 tensor, got dtype {value.dtype}")
    if value.layout != torch.strided or value.device.type == "meta":
        raise ValueError(f"{op}: argument 'capacity' must be a dense tensor holding values, "
                         f"got one on {value.device} with layout {value.layout}")
    if value.device.type != "cpu" and value.device != device:
        raise ValueError(f"{op}: argument 'capacity' is on {value.device} but the other tensors are on "
                         f"{device}; it must be on the CPU or on {device}")
    shapes = [[("B", batch)]] + ([] if steps is None else [[("T", steps), ("B", batch)]])
    if not any(value.dim() == len(dims) and tuple(value.shape) == tuple(n for _, n in dims) for dims in shapes):
        raise ValueError(f"{op}: argument 'capacity' must have shape "
                         f"{' or '.join(_shape_text(d) for d in shapes)}, got {list(value.shape)}")
    if torch.compiler.is_compiling() or value.device.type != "cpu":
        # reading the values back would break the graph, or wait for the GPU
        torch._assert_async(((value >= 1) & (value <= slots)).all(),
                            f"{op}: argument 'capacity' must lie in [1, S={slots}]")
        value = value.clamp(1, slots)
    else:
        bad = ((value < 1) | (value > slots)).nonzero()
        if bad.numel() > 0:
            index = tuple(bad[0].tolist())
            raise ValueError(f"{op}: argument 'capacity' must lie in [1, S={slots}], got "
                             f"capacity[{', '.join(map(str, index))}] = {int(value[index])}")
    return value.expand(steps, batch) if steps is not None and value.dim() == 1 else value


def mask(op: str, value, batch: int, slots: int, device: torch.device) -> Optional[Tensor]:
    """``mask``: None or a bool tensor [B, S] on ``device``."""
    if value is None:
        return None
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: argument 'mask' must be a torch.Tensor or None, got {type(value).__name__}")
    if value.dtype != torch.bool:
        raise TypeError(f"{op}: argument 'mask' must be a bool tensor, got dtype {value.dtype}")
    shape(op, "mask", value, [("B", batch), ("S", slots)])
    if value.device != device:
        raise ValueError(f"{op}: argument 'mask' is on {value.device} but 'M' is on {device}; "
                         "they must be on one device")
    return value


def scale(op: str, value, width: int) -> float:
    """``scale``: None (meaning 1/sqrt(D)) or a real number; returned as a float."""
    if value is None:
        return 1.0 / math.sqrt(width)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: argument 'scale' must be a real number or None, got {type(value).__name__}")
    return float(value)

"""The table of ops (contract §1): what each op takes, returns and keeps.

For every op: its differentiable ``inputs`` in the order every backend
receives them (``optional`` ones may be None), its other arguments
(``extras``, by name), its ``outputs``, and the labels of every dimension of
each. The WM-LSTM's parameter keys, their shapes and the write modes are here
too. Everything that lists ops derives from this table: the argument checks of
``wmkernels.ops``, the backends' tables of implementations (one ``Impl`` per
op), the fake kernels' shapes, the CLI, the ahead-of-time compile list and
the test matrix. Adding an op means: its entry here, its reference, its
kernels, its tests.

Labels (contract §1): ``T`` steps, ``B`` batch rows, ``I`` input width, ``H``
hidden width, ``S`` memory slots, ``D`` slot width; ``4H`` and ``H+D`` are
what they say.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

# The keys of the WM-LSTM parameter mapping (contract §1.4), in the order
# backends receive them, and the shape of each by its dimension labels.
WM_PARAM_SHAPES: Dict[str, Tuple[str, ...]] = {
    "w_ih": ("4H", "I"), "w_hh": ("4H", "H"), "w_rh": ("4H", "D"), "b": ("4H",),
    "w_q": ("D", "H"), "b_q": ("D",), "w_v": ("D", "H"), "b_v": ("D",),
    "w_e": ("D", "H"), "b_e": ("D",),
}
WM_PARAM_KEYS: Tuple[str, ...] = tuple(WM_PARAM_SHAPES)
WM_GATED_ONLY_KEYS: Tuple[str, ...] = ("w_e", "b_e")
WRITE_MODES: Tuple[str, ...] = ("fifo", "gated")

# The dimensions a call's sizes are named by, in the order they are reported.
SIZE_LETTERS = "TBIHSD"


@dataclass(frozen=True)
class Op:
    """One op of contract §1 (``section``)."""

    name: str
    section: str
    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]
    dims: Mapping[str, Tuple[str, ...]]
    extras: Tuple[str, ...] = ()
    optional: Tuple[str, ...] = ()

    @property
    def sizes(self) -> Tuple[str, ...]:
        """The single-letter dimensions of the op (what auto's measured rules and
        the CLI see), in ``SIZE_LETTERS`` order."""
        seen = {label for labels in self.dims.values() for label in labels}
        return tuple(letter for letter in SIZE_LETTERS if letter in seen)


OPS: Dict[str, Op] = {op.name: op for op in (
    Op("lstm_cell", "§1.1", inputs=("gates", "c_prev"), outputs=("h", "c"),
       dims={"gates": ("B", "4H"), "c_prev": ("B", "H"), "h": ("B", "H"), "c": ("B", "H")}),
    Op("lstm_sequence", "§1.2", inputs=("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"),
       optional=("b_ih", "b_hh"), extras=("lengths",), outputs=("y", "h_n", "c_n"),
       dims={"x": ("T", "B", "I"), "h0": ("B", "H"), "c0": ("B", "H"), "w_ih": ("4H", "I"),
             "w_hh": ("4H", "H"), "b_ih": ("4H",), "b_hh": ("4H",), "lengths": ("B",),
             "y": ("T", "B", "H"), "h_n": ("B", "H"), "c_n": ("B", "H")}),
    Op("wm_read", "§1.3", inputs=("M", "q"), extras=("mask", "scale"), outputs=("r", "attn"),
       dims={"M": ("B", "S", "D"), "q": ("B", "D"), "mask": ("B", "S"), "r": ("B", "D"), "attn": ("B", "S")}),
    Op("wm_shift_write", "§1.3", inputs=("M", "v"), outputs=("M_new",),
       dims={"M": ("B", "S", "D"), "v": ("B", "D"), "M_new": ("B", "S", "D")}),
    Op("wm_write", "§1.3", inputs=("M", "w", "e", "a"), outputs=("M_new",),
       dims={"M": ("B", "S", "D"), "w": ("B", "S"), "e": ("B", "D"), "a": ("B", "D"),
             "M_new": ("B", "S", "D")}),
    Op("wm_lstm_sequence", "§1.4", inputs=("x", "h0", "c0", "M0") + WM_PARAM_KEYS,
       optional=WM_GATED_ONLY_KEYS, extras=("write_mode", "lengths", "capacity"),
       outputs=("y", "h_n", "c_n", "M_n"),
       dims={"x": ("T", "B", "I"), "h0": ("B", "H"), "c0": ("B", "H"), "M0": ("B", "S", "D"),
             **WM_PARAM_SHAPES, "lengths": ("B",), "capacity": ("T", "B"),
             "y": ("T", "B", "H+D"), "h_n": ("B", "H"), "c_n": ("B", "H"), "M_n": ("B", "S", "D")}),
)}
OP_NAMES: Tuple[str, ...] = tuple(OPS)
# The tensors each op differentiates, in the order backends receive them.
OP_INPUTS: Dict[str, Tuple[str, ...]] = {name: op.inputs for name, op in OPS.items()}


def sizes_of(op: str, **tensors) -> Dict[str, int]:
    """The single-letter sizes of a call of ``op`` read off its tensors (by name,
    None for an absent one) through the table's dimension labels."""
    sizes: Dict[str, int] = {}
    for name, tensor in tensors.items():
        if tensor is not None:
            sizes.update((label, n) for label, n in zip(OPS[op].dims[name], tensor.shape) if label in SIZE_LETTERS)
    return sizes


def shape(labels: Tuple[str, ...], sizes: Mapping[str, int]) -> Tuple[int, ...]:
    """The shape that dimension labels (``T``, ``4H``, ``H+D``, ``T+1``) name at ``sizes``."""
    def size(label: str) -> int:
        terms = label.split("+")
        return sum(int(t) if t.isdigit() else int(t[:-1] or 1) * sizes[t[-1]] for t in terms)
    return tuple(size(label) for label in labels)


def empty_outputs(op: str, like, **tensors) -> tuple:
    """Uninitialised outputs of ``op`` (new tensors of ``like``'s dtype and device,
    shaped by the table) for a call on ``tensors``: what a fake kernel returns first."""
    sizes = sizes_of(op, **tensors)
    return tuple(like.new_empty(shape(OPS[op].dims[name], sizes)) for name in OPS[op].outputs)


class Impl(NamedTuple):
    """One backend's kernels of one op (contract §3.1)::

        forward(*inputs, **extras) -> (outputs, saved, info)
        backward(saved, info, *grads) -> one gradient per input

    ``inputs`` in the op's ``inputs`` order (None for an absent optional one),
    ``extras`` by name; ``saved`` is the tuple of tensors the op's autograd
    Function keeps for backward, ``info`` anything else backward needs;
    ``grads`` are the gradients of the outputs (zeros for unused ones).
    ``inference(*inputs, **extras) -> outputs``, where a kernel has one, runs
    instead of forward when no input wants a gradient: it saves nothing."""

    forward: Callable[..., Tuple[Tuple[Any, ...], tuple, Any]]
    backward: Callable[..., tuple]
    inference: Optional[Callable[..., Tuple[Any, ...]]] = None


def checkpoint_interval(T: int) -> int:
    """K, the steps between two memory checkpoints of gated wm_lstm_sequence
    (contract §1.4), shared by every fused backend.

    Forward saves the memory [B, S, D] every K steps: about T/K copies held
    until backward; backward recomputes the K states of one segment at a time:
    K copies, transient. Both terms are multiples of B·S·D, so S and D cancel
    out of the choice and K = ceil(sqrt(T)) minimises their sum (about
    2·sqrt(T)·B·S·D at any time), against T·B·S·D for saving every step.
    """
    return max(1, math.ceil(math.sqrt(T)))

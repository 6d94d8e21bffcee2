"""The public ops of contract §1.

Each op checks its arguments once against the table of ops
(``wmkernels.contract``: names, dimension labels), picks a backend (contract
§3) and runs through its own ``torch.autograd.Function``, which calls the
backend's forward and backward (the protocol of ``wmkernels.backends.base``).
Shapes: ``T`` steps, ``B`` batch, ``I`` input, ``H`` hidden, ``S`` slots,
``D`` slot width.
"""
from __future__ import annotations

import contextlib
import operator
from typing import Mapping, Optional, Tuple

import torch
from torch import Tensor

from wmkernels import _checks as check
from wmkernels.backends import BACKENDS, has_size_rules, select_backend
from wmkernels.backends.plain import PlainTorchBackend
from wmkernels.contract import (OP_INPUTS, OP_NAMES, OPS, WM_GATED_ONLY_KEYS, WM_PARAM_KEYS,  # noqa: F401
                                WM_PARAM_SHAPES, WRITE_MODES)


def _make_function(op: str):
    """The autograd Function of ``op``: forward and backward go to the backend.

    A backward that must itself be differentiable (``create_graph=True``:
    double backward, gradient penalties, ``gradgradcheck``) recomputes the op
    with the reference, as plain differentiable PyTorch, from the inputs the
    Function keeps (references to tensors the caller holds anyway), and
    differentiates that: correct to any order, at the reference's speed.
    """

    def forward(ctx, backend, extras, *inputs):
        needs_grad = ctx.needs_input_grad[2:]
        outputs, saved, info = backend.forward(op, inputs, extras, needs_grad)
        ctx.backend, ctx.info, ctx.extras, ctx.n_saved = backend, info, extras, len(saved)
        ctx.save_for_backward(*saved, *inputs)
        return outputs

    def backward(ctx, *grads):
        needs_grad = ctx.needs_input_grad[2:]
        saved, inputs = ctx.saved_tensors[:ctx.n_saved], ctx.saved_tensors[ctx.n_saved:]
        with autocast_off(inputs[0].device.type):  # a backward called inside an autocast block
            if torch.is_grad_enabled():  # create_graph=True: the kernels' backward is not differentiable
                return (None, None, *_differentiable_backward(op, inputs, ctx.extras, grads, needs_grad))
            input_grads = ctx.backend.backward(op, saved, ctx.info, grads, needs_grad)
        return (None, None, *input_grads)

    name = "".join(part.capitalize() for part in op.split("_")) + "Function"
    return type(name, (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(backward),
        "__doc__": f"Autograd Function of wmkernels.ops.{op}."})


def _differentiable_backward(op: str, inputs, extras, grads, needs_grad):
    """The input gradients of ``op`` as a differentiable graph: the reference
    recomputed on ``inputs`` and differentiated with ``create_graph=True``."""
    with torch.enable_grad():
        outputs = BACKENDS["reference"].run_traceable(op, inputs, extras)
    wanted = [t for t, need in zip(inputs, needs_grad) if need]
    pairs = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad]
    if not wanted or not pairs:
        return tuple(None for _ in needs_grad)
    found = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                     create_graph=True, allow_unused=True))
    return tuple(next(found) if need else None for need in needs_grad)


FUNCTIONS = {op: _make_function(op) for op in OP_NAMES}


# torch.compile: dynamo traces the op's Function, whose forward and backward
# call the backend's registered torch ops (each with a fake implementation).
# Two things it cannot trace are handled here: the backend choice reads a
# ContextVar (it is resolved once, at trace time, and baked into the graph: a
# different use_backend() around an already compiled call does not retrace), and
# the reference backend runs autograd inside its Function (under compile it runs
# as plain differentiable PyTorch, which traces and gives the same results).

def _assume_constant_result(fn):
    """``torch.compiler.assume_constant_result`` without importing torch._dynamo
    (1.2 s, a third of ``import wmkernels``, for users who never compile): the
    decorator only marks the function, as done here (torch 2.13; a test checks
    the two marks agree)."""
    fn._dynamo_marked_constant = True
    return fn


@_assume_constant_result
def _traced_has_size_rules(op: str, device_type: str) -> bool:
    return has_size_rules(op, device_type)


@_assume_constant_result
def _traced_backend_name(op: str, argument: Optional[str], device: torch.device, dtype: torch.dtype,
                         inference: bool, with_lengths: bool,
                         sizes: Optional[Tuple[Tuple[str, int], ...]], recording: bool,
                         with_capacity: bool, with_projection: bool) -> str:
    return select_backend(op, argument, device, dtype, None if sizes is None else dict(sizes), inference,
                          traced_lengths=with_lengths, recording=recording, with_capacity=with_capacity,
                          with_projection=with_projection).name


def _recording() -> bool:
    """True while torch.jit.trace or torch.export records the running code."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


def _select(op: str, argument: Optional[str], device: torch.device, dtype: torch.dtype,
            inference: bool = False, with_lengths: bool = False, with_capacity: bool = False,
            with_projection: bool = False, **sizes: int):
    """The backend of one call (``select_backend``, traceable by torch.compile);
    ``sizes`` are the call's dimensions by name, for auto's measured rules;
    ``inference``: no input wants a gradient; ``with_lengths``: the call has
    lengths (under torch.compile only backends that trace them qualify);
    ``with_capacity``: the call has a capacity (only backends that take it qualify);
    ``with_projection``: an LSTM with ``proj_size > 0`` (only aten runs one).
    Under torch.jit.trace and torch.export only plain-PyTorch backends qualify."""
    recording = _recording()
    if torch.compiler.is_compiling():
        # Sizes under dynamic shapes are symbolic, not constants. Only where a
        # size rule exists are they made constant (operator.index guards each
        # one, so the graph specializes on them); otherwise they stay out and
        # dynamic shapes stay dynamic.
        constant_sizes = (tuple((k, operator.index(v)) for k, v in sizes.items())
                          if _traced_has_size_rules(op, device.type) else None)
        return BACKENDS[_traced_backend_name(op, argument, device, dtype, inference, with_lengths,
                                             constant_sizes, recording, with_capacity, with_projection)]
    return select_backend(op, argument, device, dtype, sizes, inference,
                          traced_lengths=recording and with_lengths, recording=recording,
                          with_capacity=with_capacity, with_projection=with_projection)


def wants_no_gradient(*tensors: Optional[Tensor]) -> bool:
    """True when no gradient will be taken through a call on ``tensors``."""
    return not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))


def chosen_backend(op: str, device: torch.device, dtype: torch.dtype, inference: bool = False,
                   with_lengths: bool = False, with_projection: bool = False, **sizes: int) -> str:
    """The name of the backend a call of ``op`` on tensors of ``device`` and
    ``dtype`` (dimensions ``sizes``; ``inference``: nothing wants a gradient;
    ``with_lengths``: the call has lengths; ``with_projection``: an LSTM with
    ``proj_size > 0``) takes now; traceable by torch.compile."""
    return _select(op, None, device, dtype, inference, with_lengths, with_projection=with_projection,
                   **sizes).name


def _apply(op: str, backend, extras: dict, *inputs):
    """Run ``op`` on ``backend``: through its Function, or traced as plain
    PyTorch when compiling, jit-tracing or exporting a backend that is plain
    PyTorch (reference, aten). Under ``torch.autocast`` the op computes in
    its inputs' dtype, as a fused kernel does: autocast would recast the
    matrix products inside some backends and not others."""
    with autocast_off(inputs[0].device.type):
        if (torch.compiler.is_compiling() or _recording()) and isinstance(backend, PlainTorchBackend):
            return backend.run_traceable(op, inputs, extras)
        return FUNCTIONS[op].apply(backend, extras, *inputs)


def autocast_enabled(device_type: str) -> bool:
    """True inside ``torch.autocast`` for ``device_type`` (False for device types
    autocast does not know, such as meta)."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def autocast_off(device_type: str):
    """A block where autocast is off for ``device_type`` (a no-op where it already is):
    the ops, and the layers built on them, compute in their inputs' dtype."""
    if autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _dims(op: str, name: str, sizes: Mapping[str, Optional[int]]):
    """The expected shape of input ``name`` of ``op`` by the table of ops: [(label, size)]."""
    return [(label, sizes.get(label)) for label in OPS[op].dims[name]]


def lstm_cell(gates: Tensor, c_prev: Tensor, *, backend: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """LSTM cell update from pre-activations (contract §1.1).

    gates [B, 4H] (gate order i, f, g, o), c_prev [B, H] -> (h [B, H], c [B, H]).
    """
    op = "lstm_cell"
    check.float_tensor(op, "gates", gates)
    check.float_tensor(op, "c_prev", c_prev)
    if gates.dim() == 2 and gates.shape[1] % 4 != 0:
        raise ValueError(f"{op}: argument 'gates' must have shape [B, 4H]: its width "
                         f"{gates.shape[1]} is not a multiple of 4 (got {list(gates.shape)})")
    B, four_h = check.shape(op, "gates", gates, _dims(op, "gates", {}))
    check.at_least_one(op, "gates", gates, "4H", four_h, _dims(op, "gates", {"B": B}))
    check.shape(op, "c_prev", c_prev, _dims(op, "c_prev", {"B": B, "H": four_h // 4}))
    check.same_kind(op, ("gates", gates), [("c_prev", c_prev)])
    chosen = _select(op, backend, gates.device, gates.dtype)
    return _apply(op, chosen, {}, gates, c_prev)


def _check_lstm_weights(op: str, x: Tensor, h0: Tensor, c0: Tensor, named):
    """x [T, B, I], h0/c0 [B, H], weights by name -> (T, B, I, H)."""
    T, B, I = check.shape(op, "x", x, _dims(op, "x", {}))
    _, H = check.shape(op, "h0", h0, _dims(op, "h0", {"B": B}))
    check.at_least_one(op, "h0", h0, "H", H, _dims(op, "h0", {"B": B}))
    check.shape(op, "c0", c0, _dims(op, "c0", {"B": B, "H": H}))
    sizes = {"I": I, "H": H, "4H": 4 * H}
    for name, tensor in named:
        if tensor is not None:
            check.float_tensor(op, name, tensor)
            check.shape(op, name, tensor, _dims(op, name, sizes))
    check.same_kind(op, ("x", x), [("h0", h0), ("c0", c0)] + list(named))
    return T, B, I, H


def lstm_sequence(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
                  b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None,
                  lengths: Optional[Tensor] = None, *,
                  backend: Optional[str] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """One direction of one LSTM layer over a sequence (contract §1.2).

    x [T, B, I], h0/c0 [B, H], w_ih [4H, I], w_hh [4H, H], b_ih/b_hh [4H] or None,
    lengths int [B] (any device) or None -> (y [T, B, H], h_n [B, H], c_n [B, H]).
    Lengths on the CPU are checked there, with no device-to-host sync, whatever
    the device of ``x`` (as ``PackedSequence`` keeps them); lengths on a GPU are
    checked on the GPU (a device-side assert on bad values) and clamped to [0, T].
    """
    op = "lstm_sequence"
    for name, tensor in (("x", x), ("h0", h0), ("c0", c0), ("w_ih", w_ih), ("w_hh", w_hh)):
        check.float_tensor(op, name, tensor)
    T, B, I, H = _check_lstm_weights(op, x, h0, c0, [("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih),
                                                     ("b_hh", b_hh)])
    lengths = check.lengths(op, lengths, B, T)
    inference = wants_no_gradient(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    chosen = _select(op, backend, x.device, x.dtype, inference, lengths is not None, T=T, B=B, I=I, H=H)
    extras = {"lengths": chosen.place_lengths(lengths, x.device)}
    return _apply(op, chosen, extras, x, h0, c0, w_ih, w_hh, b_ih, b_hh)


def _check_memory(op: str, name: str, M: Tensor) -> Tuple[int, int, int]:
    """M [B, S, D] with S ≥ 1 and D ≥ 1 -> (B, S, D)."""
    check.float_tensor(op, name, M)
    dims = _dims("wm_read", "M", {})
    B, S, D = check.shape(op, name, M, dims)
    check.at_least_one(op, name, M, "S", S, dims)
    check.at_least_one(op, name, M, "D", D, dims)
    return B, S, D


def wm_read(M: Tensor, q: Tensor, mask: Optional[Tensor] = None, scale: Optional[float] = None,
            *, backend: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """Content-addressed read of the memory (contract §1.3).

    M [B, S, D], q [B, D], mask bool [B, S] or None, scale (default 1/sqrt(D))
    -> (r [B, D], attn [B, S]).
    """
    op = "wm_read"
    B, S, D = _check_memory(op, "M", M)
    check.float_tensor(op, "q", q)
    check.shape(op, "q", q, _dims(op, "q", {"B": B, "D": D}))
    check.same_kind(op, ("M", M), [("q", q)])
    extras = {"mask": check.mask(op, mask, B, S, M.device), "scale": check.scale(op, scale, D)}
    chosen = _select(op, backend, M.device, M.dtype)
    return _apply(op, chosen, extras, M, q)


def wm_shift_write(M: Tensor, v: Tensor, *, backend: Optional[str] = None) -> Tensor:
    """FIFO write (contract §1.3): M [B, S, D], v [B, D] -> M_new [B, S, D]."""
    op = "wm_shift_write"
    B, S, D = _check_memory(op, "M", M)
    check.float_tensor(op, "v", v)
    check.shape(op, "v", v, _dims(op, "v", {"B": B, "D": D}))
    check.same_kind(op, ("M", M), [("v", v)])
    chosen = _select(op, backend, M.device, M.dtype)
    (M_new,) = _apply(op, chosen, {}, M, v)
    return M_new


def wm_write(M: Tensor, w: Tensor, e: Tensor, a: Tensor, *, backend: Optional[str] = None) -> Tensor:
    """Gated erase/add write (contract §1.3).

    M [B, S, D], w [B, S], e [B, D], a [B, D] -> M_new = M ⊙ (1 − w eᵀ) + w aᵀ.
    """
    op = "wm_write"
    B, S, D = _check_memory(op, "M", M)
    for name, tensor in (("w", w), ("e", e), ("a", a)):
        check.float_tensor(op, name, tensor)
        check.shape(op, name, tensor, _dims(op, name, {"B": B, "S": S, "D": D}))
    check.same_kind(op, ("M", M), [("w", w), ("e", e), ("a", a)])
    chosen = _select(op, backend, M.device, M.dtype)
    (M_new,) = _apply(op, chosen, {}, M, w, e, a)
    return M_new


def wm_lstm_sequence(x: Tensor, state, params: Mapping[str, Tensor], write_mode: str = "fifo",
                     lengths: Optional[Tensor] = None, capacity: Optional[Tensor] = None, *,
                     backend: Optional[str] = None):
    """The working-memory LSTM over a sequence (contract §1.4).

    x [T, B, I], state (h0 [B, H], c0 [B, H], M0 [B, S, D]), params a mapping of
    the contract §1.4 keys, write_mode "fifo" or "gated", lengths int [B] or None,
    capacity int64 [B] or [T, B] with values in [1, S] (the active slots of
    each row, per step; contract §1.5) or None (all S)
    -> (y [T, B, H + D], (h_T [B, H], c_T [B, H], M_T [B, S, D])).
    """
    op = "wm_lstm_sequence"
    if not isinstance(write_mode, str) or write_mode not in WRITE_MODES:
        raise ValueError(f"{op}: argument 'write_mode' must be one of {list(WRITE_MODES)}, got {write_mode!r}")
    if not isinstance(state, (tuple, list)) or len(state) != 3:
        raise TypeError(f"{op}: argument 'state' must be a tuple (h0, c0, M0), got "
                        f"{type(state).__name__}" + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else ""))
    if not isinstance(params, Mapping):
        raise TypeError(f"{op}: argument 'params' must be a mapping (dict) of tensors, got {type(params).__name__}")
    h0, c0, M0 = state
    check.float_tensor(op, "x", x)
    for name, tensor in (("state[0] (h0)", h0), ("state[1] (c0)", c0)):
        check.float_tensor(op, name, tensor)
    _, _, D = _check_memory(op, "state[2] (M0)", M0)
    keys = [k for k in WM_PARAM_KEYS if write_mode == "gated" or k not in WM_GATED_ONLY_KEYS]
    unknown = [k for k in params if k not in WM_PARAM_KEYS]
    if unknown:
        raise ValueError(f"{op}: argument 'params' has unknown key(s) {unknown} (its keys are among "
                         f"{list(WM_PARAM_KEYS)})")
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"{op}: argument 'params' is missing key(s) {missing} "
                         f"(write_mode={write_mode!r} needs {keys})")
    T, B, I = check.shape(op, "x", x, [("T", None), ("B", None), ("I", None)])
    check.shape(op, "state[2] (M0)", M0, [("B", B), ("S", None), ("D", None)])
    _, H = check.shape(op, "state[0] (h0)", h0, [("B", B), ("H", None)])
    check.at_least_one(op, "state[0] (h0)", h0, "H", H, [("B", B), ("H", None)])
    check.shape(op, "state[1] (c0)", c0, [("B", B), ("H", H)])
    sizes = {"I": I, "H": H, "4H": 4 * H, "D": D}
    weights = []
    for key in WM_PARAM_KEYS:
        if key not in keys:
            weights.append(None)
            continue
        name = f"params['{key}']"
        check.float_tensor(op, name, params[key])
        check.shape(op, name, params[key], [(label, sizes[label]) for label in WM_PARAM_SHAPES[key]])
        weights.append(params[key])
    check.same_kind(op, ("x", x), [("state[0] (h0)", h0), ("state[1] (c0)", c0), ("state[2] (M0)", M0)]
                    + [(f"params['{k}']", w) for k, w in zip(WM_PARAM_KEYS, weights)])
    lengths = check.lengths(op, lengths, B, T)
    S = M0.shape[1]
    capacity = check.capacity(op, capacity, B, T, S, x.device)
    chosen = _select(op, backend, x.device, x.dtype, with_capacity=capacity is not None,
                     T=T, B=B, I=I, H=H, S=S, D=D)
    extras = {"write_mode": write_mode, "lengths": chosen.place_lengths(lengths, x.device)}
    if capacity is not None:  # only backends that take it see it (capacity=None: the call of before)
        extras["capacity"] = chosen.place_lengths(capacity, x.device)
    y, h, c, M = _apply(op, chosen, extras, x, h0, c0, M0, *weights)
    return y, (h, c, M)

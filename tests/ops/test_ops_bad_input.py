"""Bad input to the public ops (contract §5), backend selection errors
(contract §3), and the odd-but-valid inputs every op must take (empty
batch, T = 0, non-contiguous views, lengths as int32, inputs left untouched).

The bad-input tests are table-driven: for every op (``wm_lstm_sequence`` in
both write modes) and every tensor argument, a wrong rank, one wrong size per
constrained dimension, an integer tensor, a list, a float64 tensor among
float32 ones and a tensor on the ``meta`` device; then the op-specific
arguments (lengths, mask, scale, params, write_mode, state, S = 0, D = 0,
H = 0). Each test asserts the exception type and that the message names the
argument and, for a shape error, gives the expected pattern (``[B=3, H]``)
and the shape given (``[2, 5]``). Every backend's ``forward`` is replaced by
a function that fails the test, so an error must come from the Python checks,
before any backend runs; if a check were removed, the test would get an
``AssertionError`` from that spy, a different type, or no error at all.

Nothing here needs the C++ extension: ops run on ``backend="auto"`` or
``backend="reference"``.
"""
import pytest
import torch

import wmkernels
from wmkernels import ops
from wmkernels.backends import BACKENDS, ENV_VAR, BackendUnavailableError

# Sizes, all different, so that a message shows which one was meant.
T, B, I, H, S, D = 2, 3, 6, 5, 4, 7
SIZES = {"T": T, "B": B, "I": I, "H": H, "4H": 4 * H, "S": S, "D": D}
F32, F64 = torch.float32, torch.float64

# The op variants under test: wm_lstm_sequence once per write mode.
OPS = ["lstm_cell", "lstm_sequence", "wm_read", "wm_shift_write", "wm_write",
       "wm_lstm_fifo", "wm_lstm_gated"]
SEQUENCE_OPS = ["lstm_sequence", "wm_lstm_fifo", "wm_lstm_gated"]
MEMORY_OPS = ["wm_read", "wm_shift_write", "wm_write", "wm_lstm_fifo", "wm_lstm_gated"]
WM_LSTM_KEYS = ("w_ih", "w_hh", "w_rh", "b", "w_q", "b_q", "w_v", "b_v")
WM_GATED_KEYS = ("w_e", "b_e")

# The tensor arguments of each op, in the order the op checks them, with the
# labels of their dimensions. "X=" marks a dimension whose size is fixed by an
# earlier argument (the message then reads "X=size"); a bare "X" is free there.
_WM_LSTM_ARGS = {
    "x": "T B I", "h0": "B= H", "c0": "B= H=", "M0": "B= S D",
    "w_ih": "4H= I=", "w_hh": "4H= H=", "w_rh": "4H= D=", "b": "4H=",
    "w_q": "D= H=", "b_q": "D=", "w_v": "D= H=", "b_v": "D=",
}
TENSOR_ARGS = {
    "lstm_cell": {"gates": "B 4H", "c_prev": "B= H="},
    "lstm_sequence": {"x": "T B I", "h0": "B= H", "c0": "B= H=", "w_ih": "4H= I=",
                      "w_hh": "4H= H=", "b_ih": "4H=", "b_hh": "4H="},
    "wm_read": {"M": "B S D", "q": "B= D="},
    "wm_shift_write": {"M": "B S D", "v": "B= D="},
    "wm_write": {"M": "B S D", "w": "B= S=", "e": "B= D=", "a": "B= D="},
    "wm_lstm_fifo": dict(_WM_LSTM_ARGS),
    "wm_lstm_gated": dict(_WM_LSTM_ARGS, w_e="D= H=", b_e="D="),
}
# Where a wrong rank is caught by an earlier check than the size check:
# M0's rank is checked (all dims free) before B is known.
RANK_PATTERN = {("wm_lstm_fifo", "M0"): "[B, S, D]", ("wm_lstm_gated", "M0"): "[B, S, D]"}


# --------------------------------------------------------------------------- helpers

def rnd(*shape, dtype=F32):
    return torch.randn(*shape, dtype=dtype) * 0.5


def is_wm_lstm(op):
    return op.startswith("wm_lstm")


def make_args(op, *, T=T, B=B, I=I, H=H, S=S, D=D, dtype=F32):
    """Valid arguments of ``op`` as a flat dict (wm_lstm: state parts and params kept apart)."""
    r = lambda *shape: rnd(*shape, dtype=dtype)  # noqa: E731
    if op == "lstm_cell":
        return {"gates": r(B, 4 * H), "c_prev": r(B, H)}
    if op == "lstm_sequence":
        return {"x": r(T, B, I), "h0": r(B, H), "c0": r(B, H), "w_ih": r(4 * H, I),
                "w_hh": r(4 * H, H), "b_ih": r(4 * H), "b_hh": r(4 * H), "lengths": None}
    if op == "wm_read":
        return {"M": r(B, S, D), "q": r(B, D), "mask": None, "scale": None}
    if op == "wm_shift_write":
        return {"M": r(B, S, D), "v": r(B, D)}
    if op == "wm_write":
        return {"M": r(B, S, D), "w": torch.rand(B, S, dtype=dtype), "e": torch.rand(B, D, dtype=dtype),
                "a": r(B, D)}
    gated = op == "wm_lstm_gated"
    shapes = {"w_ih": (4 * H, I), "w_hh": (4 * H, H), "w_rh": (4 * H, D), "b": (4 * H,),
              "w_q": (D, H), "b_q": (D,), "w_v": (D, H), "b_v": (D,), "w_e": (D, H), "b_e": (D,)}
    keys = WM_LSTM_KEYS + (WM_GATED_KEYS if gated else ())
    return {"x": r(T, B, I), "h0": r(B, H), "c0": r(B, H), "M0": r(B, S, D),
            "params": {k: r(*shapes[k]) for k in keys},
            "write_mode": "gated" if gated else "fifo", "lengths": None}


def get(args, key):
    return args[key] if key in args else args["params"][key]


def put(args, key, value):
    if key in args:
        args[key] = value
    else:
        args["params"][key] = value


def call(op, args, backend="auto"):
    """Run ``op`` on ``args``; a "state" entry, when present, replaces (h0, c0, M0)."""
    if is_wm_lstm(op):
        state = args["state"] if "state" in args else (args["h0"], args["c0"], args["M0"])
        return ops.wm_lstm_sequence(args["x"], state, args["params"], args["write_mode"],
                                    args["lengths"], backend=backend)
    return getattr(ops, op)(**args, backend=backend)


def flat(outputs):
    """The output tensors of any op as a flat list."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    result = []
    for o in outputs:
        result.extend(flat(o))
    return result


def tensor_items(args):
    """(key, tensor) of every tensor argument, params included, lengths and mask too."""
    for key, value in args.items():
        if key == "params":
            yield from ((k, v) for k, v in value.items() if isinstance(v, torch.Tensor))
        elif isinstance(value, torch.Tensor):
            yield key, value


def float_items(args):
    return [(k, t) for k, t in tensor_items(args) if t.dtype.is_floating_point]


def msg_name(op, key):
    """The argument's name as the op's error messages spell it."""
    if is_wm_lstm(op):
        if key in ("h0", "c0", "M0"):
            return f"state[{('h0', 'c0', 'M0').index(key)}] ({key})"
        if key not in ("x", "lengths"):
            return f"params['{key}']"
    return key


def pattern(dims):
    """'B= H' -> '[B=3, H]', the expected-shape text of the messages."""
    parts = []
    for label in dims.split():
        fixed = label.endswith("=")
        label = label.rstrip("=")
        parts.append(f"{label}={SIZES[label]}" if fixed else label)
    return "[" + ", ".join(parts) + "]"


def shape_of(dims):
    return [SIZES[label.rstrip("=")] for label in dims.split()]


def expected_shapes(op, T=T, B=B):
    return {
        "lstm_cell": [(B, H), (B, H)],
        "lstm_sequence": [(T, B, H), (B, H), (B, H)],
        "wm_read": [(B, D), (B, S)],
        "wm_shift_write": [(B, S, D)],
        "wm_write": [(B, S, D)],
        "wm_lstm_fifo": [(T, B, H + D), (B, H), (B, H), (B, S, D)],
        "wm_lstm_gated": [(T, B, H + D), (B, H), (B, H), (B, S, D)],
    }[op]


@pytest.fixture
def no_backend_runs(monkeypatch):
    """Every backend's forward fails the test: errors must come from the checks."""
    def spy(*args, **kwargs):
        raise AssertionError("a backend ran: the argument check did not stop this call")

    for backend in BACKENDS.values():
        monkeypatch.setattr(backend, "forward", spy)


# --------------------------------------------------------------------------- the table

def _case(op, what, mutate, exc, needles, marks=()):
    return pytest.param(op, mutate, exc, tuple(needles), id=f"{op}-{what}", marks=marks)


def _set(key, make):
    """A mutation: args[key] = make(current value)."""
    def mutate(args):
        put(args, key, make(get(args, key)))
    return mutate


def _replace(key, value_factory):
    def mutate(args):
        put(args, key, value_factory())
    return mutate


def _tensor_arg_cases():
    for op, table in TENSOR_ARGS.items():
        names = list(table)
        first = names[0]
        for index, (key, dims) in enumerate(table.items()):
            name, shape = msg_name(op, key), shape_of(dims)
            tag = key if name == key or "(" in name else f"params.{key}"
            rank_pattern = RANK_PATTERN.get((op, key), pattern(dims))
            # wrong rank, one more and one fewer dimension
            yield _case(op, f"{tag}-rank+1", _set(key, lambda t: t.unsqueeze(-1)), ValueError,
                        [f"'{name}'", rank_pattern, str(shape + [1])])
            yield _case(op, f"{tag}-rank-1", _set(key, lambda t: t[0]), ValueError,
                        [f"'{name}'", rank_pattern, str(shape[1:])])
            # one wrong size per constrained dimension
            for axis, label in enumerate(dims.split()):
                if not label.endswith("="):
                    continue
                bad = list(shape)
                bad[axis] += 1
                yield _case(op, f"{tag}-{label.rstrip('=')}+1", _replace(key, lambda s=bad: rnd(*s)),
                            ValueError, [f"'{name}'", pattern(dims), str(bad)])
            # not a float tensor
            yield _case(op, f"{tag}-int64", _set(key, lambda t: t.to(torch.int64)), TypeError,
                        [f"'{name}'", "floating-point", "torch.int64"])
            yield _case(op, f"{tag}-list", _set(key, lambda t: t.tolist()), TypeError,
                        [f"'{name}'", "Tensor", "list"])
            if index == 0:
                for dtype in (torch.int32, torch.bool, torch.complex64):
                    yield _case(op, f"{tag}-{str(dtype)[6:]}", _set(key, lambda t, d=dtype: t.to(d)),
                                TypeError, [f"'{name}'", "floating-point", str(dtype)])
                # the first tensor alone in float64 / on meta: the second is named
                second = msg_name(op, names[1])
                yield _case(op, f"{tag}-float64-vs-float32", _set(key, lambda t: t.to(F64)), TypeError,
                            [f"'{second}'", f"'{name}'", "float64", "float32"])
                yield _case(op, f"{tag}-on-meta", _set(key, lambda t: t.to("meta")), ValueError,
                            [f"'{second}'", f"'{name}'", "meta", "cpu"])
            else:
                first_name = msg_name(op, first)
                yield _case(op, f"{tag}-float64-vs-float32", _set(key, lambda t: t.to(F64)), TypeError,
                            [f"'{name}'", f"'{first_name}'", "float64", "float32"])
                yield _case(op, f"{tag}-on-meta", _set(key, lambda t: t.to("meta")), ValueError,
                            [f"'{name}'", f"'{first_name}'", "meta", "cpu"])


def _lengths_cases():
    for op in SEQUENCE_OPS:
        specs = [
            ("negative", lambda: torch.tensor([T, -1, 1]), ValueError, [f"[0, T={T}]", "[-1, 2]"]),
            ("above-T", lambda: torch.tensor([T + 1, 0, 1]), ValueError, [f"[0, T={T}]", "[0, 3]"]),
            ("float", lambda: torch.tensor([1.0, 2.0, 2.0]), TypeError, ["integer", "torch.float32"]),
            ("bool", lambda: torch.tensor([True, False, True]), TypeError, ["integer", "torch.bool"]),
            ("B+1", lambda: torch.tensor([1, 2, 2, 1]), ValueError, [f"[B={B}]", "[4]"]),
            ("rank+1", lambda: torch.tensor([[1], [2], [2]]), ValueError, [f"[B={B}]", "[3, 1]"]),
            ("0-dim", lambda: torch.tensor(2), ValueError, [f"[B={B}]", "[]"]),
            ("list", lambda: [1, 2, 2], TypeError, ["Tensor", "list"]),
            ("on-meta", lambda: torch.tensor([1, 2, 2], device="meta"), ValueError, ["dense", "meta"]),
            ("sparse", lambda: torch.tensor([1, 2, 2]).to_sparse(), ValueError, ["dense", "sparse"]),
        ]
        for what, value, exc, needles in specs:
            yield _case(op, f"lengths-{what}", _replace("lengths", value), exc, ["'lengths'"] + needles)


def _wm_read_cases():
    op = "wm_read"
    specs = [
        ("mask-int64", "mask", lambda: torch.ones(B, S, dtype=torch.int64), TypeError,
         ["bool", "torch.int64"]),
        ("mask-float", "mask", lambda: torch.ones(B, S), TypeError, ["bool", "torch.float32"]),
        ("mask-S+1", "mask", lambda: torch.ones(B, S + 1, dtype=torch.bool), ValueError,
         [f"[B={B}, S={S}]", f"[{B}, {S + 1}]"]),
        ("mask-B+1", "mask", lambda: torch.ones(B + 1, S, dtype=torch.bool), ValueError,
         [f"[B={B}, S={S}]", f"[{B + 1}, {S}]"]),
        ("mask-rank-1", "mask", lambda: torch.ones(S, dtype=torch.bool), ValueError,
         [f"[B={B}, S={S}]", f"[{S}]"]),
        ("mask-list", "mask", lambda: [[True] * S] * B, TypeError, ["Tensor", "list"]),
        ("mask-on-meta", "mask", lambda: torch.ones(B, S, dtype=torch.bool, device="meta"), ValueError,
         ["meta", "cpu"]),
        ("scale-str", "scale", lambda: "0.5", TypeError, ["real number", "str"]),
        ("scale-bool", "scale", lambda: True, TypeError, ["real number", "bool"]),
    ]
    for what, key, value, exc, needles in specs:
        yield _case(op, what, _replace(key, value), exc, [f"'{key}'"] + needles)


def _empty_dims_cases():
    """S = 0 and D = 0 for the memory ops, H = 0 for the LSTM ops, with every other size consistent."""
    def rebuild(op, **sizes):
        def mutate(args):
            args.clear()
            args.update(make_args(op, **sizes))
        return mutate

    for op in MEMORY_OPS:
        name = msg_name(op, "M0") if is_wm_lstm(op) else "M"
        yield _case(op, "S=0", rebuild(op, S=0), ValueError,
                    [f"'{name}'", "S ≥ 1", "[B, S, D]", f"[{B}, 0, {D}]"])
        yield _case(op, "D=0", rebuild(op, D=0), ValueError,
                    [f"'{name}'", "D ≥ 1", "[B, S, D]", f"[{B}, {S}, 0]"])
    for op in SEQUENCE_OPS:
        name = msg_name(op, "h0")
        yield _case(op, "H=0", rebuild(op, H=0), ValueError,
                    [f"'{name}'", "H ≥ 1", f"[B={B}, H]", f"[{B}, 0]"])
    yield _case("lstm_cell", "H=0", rebuild("lstm_cell", H=0), ValueError,
                ["'gates'", "4H ≥ 1", f"[B={B}, 4H]", f"[{B}, 0]"])
    yield _case("lstm_cell", "gates-width-not-4H", _replace("gates", lambda: rnd(B, 4 * H + 1)), ValueError,
                ["'gates'", "[B, 4H]", "multiple of 4", f"[{B}, {4 * H + 1}]"])


def _wm_lstm_cases():
    for op in ("wm_lstm_fifo", "wm_lstm_gated"):
        keys = WM_LSTM_KEYS + (WM_GATED_KEYS if op == "wm_lstm_gated" else ())
        for key in keys:
            def drop(args, key=key):
                del args["params"][key]
            yield _case(op, f"params-missing-{key}", drop, ValueError, ["'params'", "missing", f"'{key}'"])
        yield _case(op, "params-unknown-key", lambda a: a["params"].update(w_hhh=a["params"]["w_hh"]), ValueError,
                    ["'params'", "unknown", "'w_hhh'"])  # a misspelt key was silently ignored
        yield _case(op, "params-list-of-items", lambda a: a.update(params=list(a["params"].items())),
                    TypeError, ["'params'", "mapping", "list"])
        yield _case(op, "params-None", lambda a: a.update(params=None), TypeError,
                    ["'params'", "mapping", "NoneType"])
        for what, value in (("lifo", "lifo"), ("FIFO", "FIFO"), ("None", None), ("int", 1)):
            yield _case(op, f"write_mode-{what}", lambda a, v=value: a.update(write_mode=v), ValueError,
                        ["'write_mode'", "'fifo'", "'gated'", repr(value)])
        yield _case(op, "state-length-2", lambda a: a.update(state=(a["h0"], a["c0"])), TypeError,
                    ["'state'", "length 2"])
        yield _case(op, "state-length-4", lambda a: a.update(state=(a["h0"], a["c0"], a["M0"], a["M0"])),
                    TypeError, ["'state'", "length 4"])
        yield _case(op, "state-a-tensor", lambda a: a.update(state=a["M0"]), TypeError, ["'state'", "Tensor"])
        yield _case(op, "state-None", lambda a: a.update(state=None), TypeError, ["'state'", "NoneType"])


BAD_INPUT_CASES = (list(_tensor_arg_cases()) + list(_lengths_cases()) + list(_wm_read_cases())
                   + list(_empty_dims_cases()) + list(_wm_lstm_cases()))


@pytest.mark.parametrize("op, mutate, exc, needles", BAD_INPUT_CASES)
def test_bad_input_raises_naming_the_argument(op, mutate, exc, needles, no_backend_runs):
    args = make_args(op)
    mutate(args)
    with pytest.raises(exc) as info:
        call(op, args)
    assert type(info.value) is exc, f"got {type(info.value).__name__}, want exactly {exc.__name__}"
    message = str(info.value)
    missing = [n for n in needles if n not in message]
    assert not missing, f"message {message!r} lacks {missing}"
    assert op.replace("_fifo", "_sequence").replace("_gated", "_sequence") in message, \
        f"message {message!r} does not name the op"


@pytest.mark.parametrize("op", OPS)
def test_sparse_tensor_rejected_naming_the_argument(op, no_backend_runs):
    args = make_args(op)
    key = next(iter(TENSOR_ARGS[op]))
    put(args, key, get(args, key).to_sparse())
    with pytest.raises((TypeError, ValueError)) as info:
        call(op, args)
    assert f"'{msg_name(op, key)}'" in str(info.value)


def test_table_covers_every_op_and_argument():
    """Sanity of the table: each op, each tensor argument, each kind of fault."""
    ids = {p.id for p in BAD_INPUT_CASES}
    for op, table in TENSOR_ARGS.items():
        for key in table:
            tag = key if msg_name(op, key) == key or key in ("h0", "c0", "M0") else f"params.{key}"
            for fault in ("rank+1", "rank-1", "int64", "list", "float64-vs-float32", "on-meta"):
                assert f"{op}-{tag}-{fault}" in ids
    assert len(BAD_INPUT_CASES) == len(ids), "duplicate case ids"


# --------------------------------------------------------------------------- backends

@pytest.mark.parametrize("op", OPS)
def test_unknown_backend_argument(op, no_backend_runs):
    with pytest.raises(ValueError, match=r"backend must be one of .*'reference'.*got 'nope'"):
        call(op, make_args(op), backend="nope")


@pytest.mark.parametrize("op", OPS)
def test_backend_argument_not_a_string(op, no_backend_runs):
    with pytest.raises(TypeError, match=r"backend must be a str.*got int"):
        call(op, make_args(op), backend=3)


def test_unknown_backend_in_use_backend(no_backend_runs):
    with pytest.raises(ValueError, match=r"use_backend\(name\) must be one of .*got 'nope'"):
        with wmkernels.use_backend("nope"):
            pass


@pytest.mark.parametrize("op", OPS)
def test_unknown_backend_in_environment(op, monkeypatch, no_backend_runs):
    monkeypatch.setenv(ENV_VAR, "nope")
    with pytest.raises(ValueError, match=rf"environment variable {ENV_VAR} must be one of .*got 'nope'"):
        call(op, make_args(op), backend=None)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("how", ["argument", "use_backend", "environment"])
def test_triton_backend_on_cpu_tensors_without_interpreter_is_unavailable(op, how, monkeypatch, no_backend_runs):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    args = make_args(op)
    if how == "argument":
        run = lambda: call(op, args, backend="triton")  # noqa: E731
    elif how == "use_backend":
        def run():
            with wmkernels.use_backend("triton"):
                return call(op, args, backend=None)
    else:
        monkeypatch.setenv(ENV_VAR, "triton")
        run = lambda: call(op, args, backend=None)  # noqa: E731
    with pytest.raises(BackendUnavailableError) as info:
        run()
    message = str(info.value)
    assert "'triton'" in message and "cannot run" in message, message
    # the reason: Triton missing or broken, or CPU tensors without the interpreter
    assert any(why in message for why in ("not installed", "does not load", "only under TRITON_INTERPRET=1")), message


@pytest.mark.parametrize("op", OPS)
def test_triton_backend_float64_is_unavailable(op, no_backend_runs):
    """Under TRITON_INTERPRET=1 (conftest) triton is 'available' on CPU, but runs no float64."""
    with pytest.raises(BackendUnavailableError, match=r"backend 'triton' cannot run this call: \S"):
        call(op, make_args(op, dtype=F64), backend="triton")


@pytest.mark.parametrize("op", OPS)
def test_cpu_backend_on_meta_tensors_is_unavailable(op, no_backend_runs):
    args = make_args(op)
    for key, t in list(tensor_items(args)):
        put(args, key, t.to("meta"))
    with pytest.raises(BackendUnavailableError, match=r"backend 'cpu' cannot run this call: \S"):
        call(op, args, backend="cpu")


def test_backend_unavailable_error_is_a_runtime_error():
    assert issubclass(wmkernels.BackendUnavailableError, RuntimeError)
    assert wmkernels.BackendUnavailableError is BackendUnavailableError


def test_backend_argument_beats_context_and_environment(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "aten")  # aten has no wm_read
    args = make_args("wm_read")
    with wmkernels.use_backend("aten"):
        r, attn = call("wm_read", args, backend="reference")
    assert r.shape == (B, D) and attn.shape == (B, S)


# --------------------------------------------------------------------------- valid odd inputs

BACKEND_CHOICES = ["auto", "reference"]


def _with_grad(args):
    for _, t in float_items(args):
        t.requires_grad_(True)
    return args


def _forward_backward(op, args, backend, seed_grads=None):
    """Outputs, the random output grads used, and the grads of every float input (None -> zeros)."""
    outputs = flat(call(op, args, backend=backend))
    grads = seed_grads or [torch.randn_like(o) for o in outputs]
    inputs = [t for _, t in float_items(args)]
    found = torch.autograd.grad(outputs, inputs, grads, allow_unused=True)
    found = [torch.zeros_like(t) if g is None else g for g, t in zip(found, inputs)]
    return [o.detach() for o in outputs], grads, found


@pytest.mark.parametrize("backend", BACKEND_CHOICES)
@pytest.mark.parametrize("extras", ["plain", "with-lengths-or-mask"])
@pytest.mark.parametrize("op", OPS)
def test_empty_batch(op, extras, backend):
    args = _with_grad(make_args(op, B=0))
    if extras != "plain":
        if op in SEQUENCE_OPS:
            args["lengths"] = torch.zeros(0, dtype=torch.int64)
        elif op == "wm_read":
            args["mask"] = torch.zeros(0, S, dtype=torch.bool)
    outputs, _, grads = _forward_backward(op, args, backend)
    assert [tuple(o.shape) for o in outputs] == expected_shapes(op, B=0)
    for (key, t), g in zip(float_items(args), grads):
        assert g.shape == t.shape, f"grad of {key}: {tuple(g.shape)} != {tuple(t.shape)}"


@pytest.mark.parametrize("backend", BACKEND_CHOICES)
@pytest.mark.parametrize("batch", [B, 0], ids=lambda b: f"B={b}")
@pytest.mark.parametrize("lengths", ["none", "zeros"])
@pytest.mark.parametrize("op", SEQUENCE_OPS)
def test_zero_steps_returns_initial_state(op, lengths, batch, backend):
    args = _with_grad(make_args(op, T=0, B=batch))
    if lengths == "zeros":
        args["lengths"] = torch.zeros(batch, dtype=torch.int64)
    initial = [args["h0"], args["c0"]] + ([args["M0"]] if is_wm_lstm(op) else [])
    outputs, seeds, grads = _forward_backward(op, args, backend)
    y, state_n = outputs[0], outputs[1:]
    assert tuple(y.shape) == expected_shapes(op, T=0, B=batch)[0]
    assert len(state_n) == len(initial)
    for out, init in zip(state_n, initial):
        assert out.shape == init.shape and out.dtype == init.dtype
        assert torch.equal(out, init.detach())
        if init.numel():
            assert out.data_ptr() != init.data_ptr(), "an output shares memory with an input"
    # backward: the state's gradient passes through unchanged, the rest is zero
    by_key = dict(zip([k for k, _ in float_items(args)], grads))
    for key, seed in zip(("h0", "c0", "M0"), seeds[1:]):
        torch.testing.assert_close(by_key[key], seed, rtol=0, atol=0)
    for key, g in by_key.items():
        if key not in ("h0", "c0", "M0"):
            assert not g.any(), f"grad of {key} is not zero with T = 0"


def _noncontiguous(t, kind):
    """A non-contiguous tensor with ``t``'s shape (for "expanded": rows repeated)."""
    if kind == "transposed" and t.dim() >= 2:
        return t.transpose(0, 1).contiguous().transpose(0, 1)
    if kind == "expanded":
        return t[:1].expand(t.shape)
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    wide[..., ::2] = t
    return wide[..., ::2]


@pytest.mark.parametrize("backend", BACKEND_CHOICES)
@pytest.mark.parametrize("kind", ["transposed", "strided", "expanded"])
@pytest.mark.parametrize("op", OPS)
def test_noncontiguous_inputs_match_contiguous(op, kind, backend):
    args = make_args(op, dtype=F64)
    if op in SEQUENCE_OPS:
        args["lengths"] = torch.tensor([T, 1, 0])
    if op == "wm_read":
        args["mask"] = torch.rand(B, S) < 0.7
        args["scale"] = 0.3
    strange = {k: v for k, v in args.items()}
    if is_wm_lstm(op):
        strange["params"] = dict(args["params"])
    for key, t in list(tensor_items(args)):
        nc = _noncontiguous(t.detach(), kind)
        assert not nc.is_contiguous(), f"{key} {tuple(nc.shape)} stayed contiguous"
        put(strange, key, nc)
        put(args, key, nc.clone(memory_format=torch.contiguous_format))
    _with_grad(args)
    _with_grad(strange)
    out_c, seeds, grads_c = _forward_backward(op, args, backend)
    out_nc, _, grads_nc = _forward_backward(op, strange, backend, seed_grads=seeds)
    for a, b in zip(out_nc, out_c):
        torch.testing.assert_close(a, b)
    for (key, _), a, b in zip(float_items(args), grads_nc, grads_c):
        torch.testing.assert_close(a, b, msg=lambda m, key=key: f"grad of {key}: {m}")


@pytest.mark.parametrize("backend", BACKEND_CHOICES)
@pytest.mark.parametrize("op", OPS)
def test_inputs_are_never_modified(op, backend):
    args = make_args(op)
    if op in SEQUENCE_OPS:
        args["lengths"] = torch.tensor([T, 1, 0])
    if op == "wm_read":
        args["mask"] = torch.rand(B, S) < 0.7
    _with_grad(args)
    before = {k: (t.detach().clone(), t._version) for k, t in tensor_items(args)}
    _forward_backward(op, args, backend)
    for key, t in tensor_items(args):
        copy, version = before[key]
        assert torch.equal(t.detach(), copy), f"{op} modified its input {key}"
        assert t._version == version, f"{op} wrote into its input {key} (version counter moved)"


@pytest.mark.parametrize("backend", BACKEND_CHOICES)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8], ids=str)
@pytest.mark.parametrize("op", SEQUENCE_OPS)
def test_lengths_of_other_integer_dtypes_accepted(op, dtype, backend):
    args = make_args(op)
    args["lengths"] = torch.tensor([T, 1, 0], dtype=dtype)
    got = flat(call(op, args, backend=backend))
    args["lengths"] = torch.tensor([T, 1, 0], dtype=torch.int64)
    want = flat(call(op, args, backend=backend))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
@pytest.mark.parametrize("where", ["lengths-on-cuda", "lengths-on-cpu"])
@pytest.mark.parametrize("op", SEQUENCE_OPS)
def test_lengths_on_another_device_accepted(op, where):
    args = make_args(op)
    lengths = torch.tensor([T, 1, 0])
    want = [o.cpu() for o in flat(call(op, dict(args, lengths=lengths), backend="reference"))]
    if where == "lengths-on-cuda":
        args["lengths"] = lengths.cuda()
    else:  # the tensors on the GPU, lengths on the CPU
        for key, t in list(tensor_items(args)):
            put(args, key, t.cuda())
        args["lengths"] = lengths
    got = [o.cpu() for o in flat(call(op, args, backend="auto"))]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKEND_CHOICES)
def test_fifo_ignores_gated_params(backend):
    args = make_args("wm_lstm_fifo")
    want = flat(call("wm_lstm_fifo", args, backend=backend))
    args["params"].update(w_e="not a tensor", b_e=torch.zeros(1, dtype=torch.int64))
    got = flat(call("wm_lstm_fifo", args, backend=backend))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKEND_CHOICES)
def test_lstm_sequence_without_biases(backend):
    args = make_args("lstm_sequence")
    args["b_ih"] = args["b_hh"] = None
    outputs = flat(call("lstm_sequence", args, backend=backend))
    assert [tuple(o.shape) for o in outputs] == expected_shapes("lstm_sequence")


def test_the_contract_names_every_size_that_must_be_positive():
    """Every size ops.py rejects at 0 (check.at_least_one) is listed under the
    contract's "Bad input" (H = 0 was rejected without the contract saying so)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    labels = set(re.findall(r'at_least_one\(op, [^,]+, \w+, "(\w+)"', (root / "wmkernels" / "ops.py").read_text()))
    assert labels >= {"H", "S", "D"}, labels
    bad_input = re.split(r"^## (?:\d+\. )?Bad input", (root / "docs" / "contract.md").read_text(), maxsplit=1,
                         flags=re.M)[1]
    for label in labels - {"4H"}:
        assert f"`{label} ≥ 1`" in bad_input, label
    assert "`4H`" in bad_input

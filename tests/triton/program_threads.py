"""Triton's interpreter with every program of a grid in its own thread.

Triton 3.6's interpreter runs a grid's programs one after another, so a
kernel whose programs wait for each other (the grid barrier of the
persistent schedule, ``wmkernels/triton/sync.py``) cannot run there. Its only
per-program state is the builder's grid index; ``concurrent_programs()``
makes that index thread-local and runs each program in its own thread:

- ``seed=None`` (free threads): the programs run at once, interleaved by
  Python's thread switches; atomics hold one lock, so they stay atomic.
- ``seed=<int>`` (seeded scheduler): one program runs at a time; before
  every load, store and atomic a ``random.Random(seed)`` picks which program
  goes next, so the interleaving that broke a kernel replays from its seed.

Either way a launch completes or fails fast. A program that performed
``patience`` memory operations since any program last wrote memory (a store,
or an atomic that changed a value) is *idle*; when every unfinished program
is idle, or ``timeout`` seconds pass, the launch raises ``Deadlock`` naming
the programs that wait, and stops them. An exception in one program stops
the others and is raised as is.

The execution is sequentially consistent: fences and cache modifiers are not
modelled (the ahead-of-time compile checks them, ``wmkernels/tools/aot.py``).
"""
from __future__ import annotations

import contextlib
import ctypes
import inspect
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import triton
from triton.runtime import interpreter

Index = Tuple[int, int, int]

if not triton.__version__.startswith("3.6."):
    raise ImportError(f"program_threads patches Triton 3.6's interpreter; found triton {triton.__version__}")


# A free program whose last _POLLS memory operations were atomics that changed
# nothing (it spins at a barrier) sleeps _POLL_SLEEP seconds before the next,
# so the programs it waits for get the interpreter (one Python thread at a time).
_POLLS = 2
_POLL_SLEEP = 2e-4


class Deadlock(RuntimeError):
    """Every unfinished program of a launch waits (or the launch ran past its timeout)."""


class _Stop(BaseException):
    """Ends a program's thread once the launch has failed (a BaseException, so
    the interpreter's ``except Exception`` around device functions lets it through)."""


@dataclass
class Record:
    """What ran inside ``concurrent_programs()``: one (kernel name, grid) per
    launch, and the memory operations, atomics and program switches of all."""

    launches: List[Tuple[str, Index]] = field(default_factory=list)
    memory_ops: int = 0
    atomics: int = 0
    switches: int = 0


class _Program:
    def __init__(self, index: Index):
        self.index = index
        self.thread: Optional[threading.Thread] = None
        self.seen_writes = 0  # the launch's write count at this program's last memory operation
        self.idle = 0  # memory operations since it last saw a write
        self.polls = 0  # (free threads) atomics in a row that wrote nothing
        self.turn = None  # (seeded) the condition it waits on for its turn


class _Grid:
    """One launch: its programs, the watch for progress, and (seeded) whose turn it is."""

    def __init__(self, name: str, grid: Index, seed: Optional[int], patience: int, timeout: float, record: Record):
        self.name, self.grid, self.seed, self.patience, self.timeout = name, grid, seed, patience, timeout
        self.record = record
        self.lock = threading.Lock()
        self.programs = [_Program((x, y, z)) for x in range(grid[0]) for y in range(grid[1]) for z in range(grid[2])]
        self.live: List[_Program] = list(self.programs)
        self.writes = 0
        self.failure: Optional[BaseException] = None
        self.rng = random.Random(seed)
        self.current: Optional[_Program] = None
        for program in self.programs:
            program.turn = threading.Condition(self.lock)

    # ------------------------------------------------------------ called in the programs' threads
    def memory_op(self, program: _Program, atomic: bool) -> None:
        """Before a load, store or atomic of ``program``: check progress, and
        (seeded) hand the turn to the next program the seed picks."""
        with self.lock:
            self._raise_if_failed()
            self.record.memory_ops += 1
            self.record.atomics += atomic
            if program.seen_writes != self.writes:
                program.seen_writes, program.idle = self.writes, 0
            else:
                program.idle += 1
            if all(p.idle >= self.patience for p in self.live):
                self._fail(Deadlock(self._waiting(f"no memory write in the last {self.patience} memory "
                                                  "operations of each")))
                self._raise_if_failed()
            if self.seed is not None:
                self._pass_turn()
                self._wait_turn(program)
                return
        program.polls = program.polls + 1 if atomic else 0
        if program.polls > _POLLS:  # free threads: it spins, so let the others run
            time.sleep(_POLL_SLEEP)

    def wrote(self, program: _Program) -> None:
        """After ``program`` changed memory."""
        with self.lock:
            self.writes += 1
            program.seen_writes, program.idle, program.polls = self.writes, 0, 0

    def _run(self, program: _Program, fn, args: dict) -> None:
        _local.program, _local.grid = program, self
        try:
            if self.seed is not None:
                with self.lock:
                    self._wait_turn(program)
            fn(**args)
        except _Stop:
            pass
        except BaseException as error:  # noqa: B036 - handed to the launching thread
            with self.lock:
                self._fail(error)
        finally:
            _local.program = _local.grid = None
            with self.lock:
                self.live.remove(program)
                if self.seed is not None and self.current is program and self.live:
                    self._pass_turn()

    # ------------------------------------------------------------ with self.lock held
    def _pass_turn(self) -> None:
        chosen = self.rng.choice(self.live)
        self.record.switches += chosen is not self.current
        self.current = chosen
        chosen.turn.notify()

    def _wait_turn(self, program: _Program) -> None:
        while self.current is not program:
            self._raise_if_failed()
            program.turn.wait()
        self._raise_if_failed()

    def _fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
        for program in self.live:
            program.turn.notify()

    def _raise_if_failed(self) -> None:
        if self.failure is not None:
            raise _Stop()

    def _waiting(self, why: str) -> str:
        waiting = ", ".join(str(p.index) for p in self.live)
        done = len(self.programs) - len(self.live)
        how = "free threads" if self.seed is None else f"scheduler seed {self.seed}"
        return (f"{self.name}[grid {self.grid}] ({how}): programs {waiting} wait ({why}); "
                f"{done} of {len(self.programs)} programs finished")

    # ------------------------------------------------------------ called in the launching thread
    def run(self, fn, args: dict) -> None:
        for program in self.programs:
            program.thread = threading.Thread(target=self._run, args=(program, fn, args), daemon=True,
                                              name=f"{self.name}{program.index}")
        if self.seed is not None:
            with self.lock:
                self.current = self.rng.choice(self.live)
        for program in self.programs:
            program.thread.start()
        deadline = time.monotonic() + self.timeout
        for program in self.programs:
            program.thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [p for p in self.programs if p.thread.is_alive()]
        if stuck:
            with self.lock:
                self._fail(Deadlock(self._waiting(f"still running after {self.timeout} s")))
            for program in stuck:  # a loop without memory operations never looks at the failure
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(program.thread.ident),
                                                           ctypes.py_object(_Stop))
            for program in stuck:
                program.thread.join()
        if self.failure is not None:
            raise self.failure


_local = threading.local()


class _ThreadedBuilder(interpreter.InterpreterBuilder):
    """The interpreter's builder with the grid index per thread and every
    memory operation reported to the launch the thread's program belongs to.
    Masked loads and stores are where every load and store ends up."""

    @property
    def grid_idx(self):
        program = getattr(_local, "program", None)
        return None if program is None else program.index

    @grid_idx.setter
    def grid_idx(self, value):
        raise RuntimeError("inside concurrent_programs() the grid index is each program thread's own")

    def create_masked_load(self, ptrs, mask, other, cache_modifier, eviction_policy, is_volatile):
        _grid().memory_op(_local.program, atomic=False)
        return super().create_masked_load(ptrs, mask, other, cache_modifier, eviction_policy, is_volatile)

    def create_masked_store(self, ptrs, value, mask, cache_modifier, eviction_policy):
        grid = _grid()
        grid.memory_op(_local.program, atomic=False)
        result = super().create_masked_store(ptrs, value, mask, cache_modifier, eviction_policy)
        if np.any(mask.data):
            grid.wrote(_local.program)
        return result

    def create_atomic_rmw(self, rmwOp, ptr, val, mask, sem, scope):
        grid = _grid()
        grid.memory_op(_local.program, atomic=True)
        with _ATOMIC:
            old = super().create_atomic_rmw(rmwOp, ptr, val, mask, sem, scope)
        if _changed(rmwOp, old.data, val.data, mask.data):
            grid.wrote(_local.program)
        return old

    def create_atomic_cas(self, ptr, cmp, val, sem, scope):
        grid = _grid()
        grid.memory_op(_local.program, atomic=True)
        with _ATOMIC:
            old = super().create_atomic_cas(ptr, cmp, val, sem, scope)
        if np.any((old.data == cmp.data) & (cmp.data != val.data)):
            grid.wrote(_local.program)
        return old


_ATOMIC = threading.Lock()
_OP = interpreter._ir.ATOMIC_OP


def _changed(op, old: np.ndarray, val: np.ndarray, mask: np.ndarray) -> bool:
    """Whether an atomic read-modify-write that returned ``old`` changed memory."""
    old, val = np.broadcast_to(old, mask.shape), np.broadcast_to(val, mask.shape)
    if op in (_OP.ADD, _OP.FADD, _OP.OR, _OP.XOR):
        same = val == 0 if op != _OP.OR else (old | val) == old
    elif op in (_OP.MAX, _OP.UMAX):
        same = old >= val
    elif op in (_OP.MIN, _OP.UMIN):
        same = old <= val
    elif op == _OP.AND:
        same = (old & val) == old
    else:  # XCHG
        same = old == val
    return bool(np.any(mask & ~same))


def _grid() -> _Grid:
    grid = getattr(_local, "grid", None)
    if grid is None:
        raise RuntimeError("a memory operation outside a program thread inside concurrent_programs()")
    return grid


def _threaded_call(settings: Dict, record: Record):
    """A replacement for ``GridExecutor.__call__`` (triton/runtime/interpreter.py):
    the same argument handling around a thread per program instead of a loop."""

    def call(self, *args_dev, **kwargs):
        names = inspect.getfullargspec(self.fn).args
        kwargs = {k: v for k, v in kwargs.items() if k in names}
        args_hst, kwargs_hst = self._init_args_hst(args_dev, kwargs)
        for hook in self.pre_run_hooks:
            hook(*args_hst, **kwargs_hst)
        patch_scope = interpreter._patch_lang(self.fn)
        try:
            args = inspect.getcallargs(self.fn, *args_hst, **kwargs_hst)
            args = {k: v if k in self.constexprs else interpreter._implicit_cvt(v) for k, v in args.items()}
            grid = self.grid(args) if callable(self.grid) else self.grid
            grid = tuple(grid) + (1,) * (3 - len(grid))
            interpreter.interpreter_builder.set_grid_dim(*grid)
            record.launches.append((self.fn.__name__, grid))
            _Grid(self.fn.__name__, grid, record=record, **settings).run(self.fn, args)
        finally:
            patch_scope.restore()
        self._restore_args_dev(args_dev, args_hst, kwargs, kwargs_hst)

    return call


_PREPARE = threading.Lock()


def _device_call(self, *args, **kwargs):
    """``InterpretedFunction.__call__`` (a @triton.jit function called from a
    kernel) with its preparation under a lock: the first call rewrites the
    function, adding names to its module's globals, which another program's
    thread may be iterating in ``_patch_lang`` at that moment."""
    with _PREPARE:
        interpreter._patch_lang(self.fn)
        fn = self.rewrite()
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        raise interpreter.InterpreterError(repr(e)) from e


@contextlib.contextmanager
def concurrent_programs(seed: Optional[int] = None, patience: int = 2000, timeout: float = 120.0,
                        switch_interval: float = 1e-4) -> Iterator[Record]:
    """Run every interpreted launch inside the block with a thread per program
    (free threads, or the seeded scheduler when ``seed`` is given); yields the
    ``Record`` of what ran. ``switch_interval`` (seconds) is Python's thread
    switch interval meanwhile: short, so free threads interleave finely."""
    builder = interpreter.interpreter_builder
    if type(builder) is not interpreter.InterpreterBuilder:
        raise RuntimeError("concurrent_programs() does not nest")
    record = Record()
    executor_call, device_call = interpreter.GridExecutor.__call__, interpreter.InterpretedFunction.__call__
    interval = sys.getswitchinterval()
    interpreter.GridExecutor.__call__ = _threaded_call(dict(seed=seed, patience=patience, timeout=timeout), record)
    interpreter.InterpretedFunction.__call__ = _device_call
    builder.__class__ = _ThreadedBuilder
    sys.setswitchinterval(switch_interval)
    try:
        yield record
    finally:
        sys.setswitchinterval(interval)
        builder.__class__ = interpreter.InterpreterBuilder
        interpreter.GridExecutor.__call__, interpreter.InterpretedFunction.__call__ = executor_call, device_call

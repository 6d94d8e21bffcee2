"""Every Triton kernel variant the ops launch on CUDA compiles for sm_80 and
sm_90, within shared memory and its spill budget, with tensor cores in the
16-bit matrix kernels (``python -m wmkernels.tools.aot``, run without a GPU).

The check runs in a subprocess: the kernels must be compiled objects, and this
test process has TRITON_INTERPRET=1 set (conftest). The table of every variant
is printed into the test log. One test per architecture, so pytest-xdist runs
them side by side. ``WMKERNELS_SKIP_AOT=1`` skips them where the kernels are
compiled for real anyway (the GPU protocol, whose time is short).
"""
import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("triton")
pytestmark = pytest.mark.skipif(os.environ.get("WMKERNELS_SKIP_AOT") == "1",
                                reason="WMKERNELS_SKIP_AOT=1 (the GPU protocol compiles the kernels for real)")

MODULES = ("wmkernels.lstm.lstm_cell_triton", "wmkernels.memory.memory_ops_triton",
           "wmkernels.lstm.lstm_sequence_triton", "wmkernels.wm_lstm.wm_lstm_sequence_triton",
           "wmkernels.tools.probes")


def launched_kernels():
    """Every @triton.jit kernel of the package that a host function launches."""
    from wmkernels.tools import aot

    names = set()
    for module in MODULES:
        source = inspect.getsource(importlib.import_module(module))
        for line in source.splitlines():
            if line.startswith("def _") and "_kernel(" in line:
                names.add(f"{aot.KERNEL_OP[module.rsplit('.', 1)[-1]]}.{line[4:line.index('(')]}")
    return names


# w_hh resident in both lstm_sequence kernels on both archs; the WM split forward's w_hh and w_rh on an
# H100 (an A100's shared memory cannot hold them at H = 768)
RESIDENT = {("lstm_sequence._forward_kernel", 80), ("lstm_sequence._backward_kernel", 90),
            ("wm_lstm_split._forward_kernel", 90), ("wm_lstm_split._backward_kernel", 80)}


def compile_jobs() -> int:
    """Compile processes for one arch's check: the cores shared among the pytest-xdist workers
    (the two archs' checks run side by side on two workers)."""
    return max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def run_in_own_group(command, env, timeout):
    """Run ``command`` in a process group of its own; on a timeout the whole group
    is killed (the check's compile processes too: none is left running) and
    TimeoutExpired raised."""
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def test_a_timed_out_check_leaves_no_process_behind(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; "
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
              f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(120)")
    with pytest.raises(subprocess.TimeoutExpired):
        run_in_own_group([sys.executable, "-c", script], dict(os.environ), timeout=4)  # the child starts in < 1 s
    child = int(pid_file.read_text())
    for _ in range(50):  # the kill is asynchronous; a killed child is reaped by init
        try:
            os.kill(child, 0)
            if open(f"/proc/{child}/stat").read().split()[2] == "Z":
                break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the timed-out check's child process is still running")


@pytest.mark.slow(minutes=15)  # conftest starts the slow tests first, longest first
@pytest.mark.parametrize("arch", [80, 90])
def test_every_launched_variant_compiles(arch, tmp_path, capsys):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "aot.json"
    result = run_in_own_group([sys.executable, "-m", "wmkernels.tools.aot", "--arch", str(arch),
                               "--jobs", str(compile_jobs()), "--json", str(out)], env=env, timeout=1800)
    with capsys.disabled():
        print("\n" + result.stdout[-200000:] + result.stderr[-5000:])
    reports = json.loads(out.read_text()) if out.exists() else []
    assert result.returncode == 0, "failing variants:\n" + "\n".join(
        line for line in result.stdout.splitlines() if "FAIL" in line)
    assert {r["arch"] for r in reports} == {arch}
    assert {r["dtype"] for r in reports} == {"float32", "float16", "bfloat16"}
    compiled = {r["kernel"] for r in reports}
    assert launched_kernels() <= compiled, launched_kernels() - compiled
    persistent = [r for r in reports if "GRID_SYNC=True" in r["constexprs"]]
    assert {r["kernel"] for r in persistent} == {"lstm_sequence._forward_kernel", "lstm_sequence._backward_kernel",
                                                 "wm_lstm_split._forward_kernel", "wm_lstm_split._backward_kernel"}
    assert all(r["grid_sync"] for r in persistent)
    resident = {(r["kernel"], r["arch"]) for r in persistent if "BLOCK_H=0" not in r["constexprs"]}
    assert {(kernel, a) for kernel, a in RESIDENT if a == arch} <= resident
    # the recurrent kernels always read lengths (row_lengths; T for every row when none are given): the
    # captured calls with and without them launch one compiled variant, so none is compiled twice for them
    assert not any("HAS_LENGTHS" in r["constexprs"] for r in reports)


def test_aot_refuses_to_run_interpreted():
    result = subprocess.run([sys.executable, "-m", "wmkernels.tools.aot"], capture_output=True, text=True,
                            env=dict(os.environ, TRITON_INTERPRET="1"), timeout=300)
    assert result.returncode == 2 and "TRITON_INTERPRET" in result.stderr


def test_judging_a_report():
    from wmkernels.tools import aot

    variant = aot.Variant("wm_lstm_sequence._forward_kernel", "m", "f", "float16", "case", {}, {}, {}, {})
    report = aot.Report(variant.kernel, 90, "float16", "case", "", registers=255, spill_stores=8,
                        spill_loads=8, shared=300000, tensor_cores=False)
    problems = aot.judge(report, variant)
    assert any("shared memory" in p for p in problems)
    assert any("spills 8 B" in p for p in problems)
    assert any("tensor-core" in p for p in problems)
    unordered = aot.Report(variant.kernel, 90, "float16", "case", "", registers=100, spill_stores=0, spill_loads=0,
                           shared=1024, tensor_cores=True, grid_sync=False)
    assert any("grid barrier" in p for p in aot.judge(unordered, variant))
    wide = aot.Variant(variant.kernel, "m", "f", "float16", "case", {}, {}, {}, {"num_warps": 16})
    assert any("255 registers x 512 threads" in p for p in aot.judge(report, wide))  # > 65536
    assert not any("registers" in p for p in aot.judge(unordered, wide))  # 100 x 512 fits
    fine = aot.Report(variant.kernel, 80, "float32", "case", "", registers=100, spill_stores=0,
                      spill_loads=0, shared=1024, tensor_cores=False)
    assert aot.judge(fine, aot.Variant(variant.kernel, "m", "f", "float32", "c", {}, {}, {}, {})) == []


def test_capture_skips_the_host_products_also_inside_the_triton_ops():
    """While recording no kernel runs, so the host's matrix products are never
    read: the capture returns them uninitialised (NaN here, poisoned) instead of
    computing them (float16 ones take tens of seconds on a CPU)."""
    import torch

    from wmkernels import testing
    from wmkernels.tools import aot

    @torch.library.custom_op("wmkernels_triton::aot_test_product", mutates_args=())
    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b).clone()

    a, b = torch.ones(3, 4), torch.ones(4, 5)
    with testing.poisoned_outputs(), aot._ProductsSkipped():
        direct = torch.addmm(torch.zeros(5), a, b)
        inside = torch.ops.wmkernels_triton.aot_test_product(a, b)
    assert direct.shape == inside.shape == (3, 5)
    assert direct.isnan().all() and inside.isnan().all()
    assert (product(a, b) == 4).all()  # outside the capture the op computes


def test_registers_and_spills_come_from_tritons_own_ptxas_run():
    """The cubin stage keeps ``ptxas -v``'s log in the kernel's metadata, so
    ptxas runs once per variant (and not at all on a cache hit)."""
    from triton import knobs

    from wmkernels.tools import aot

    log = "ptxas info    : Used 96 registers, used 1 barriers, 8 bytes spill stores, 4 bytes spill loads"

    def make_cubin(src, metadata):
        if knobs.nvidia.dump_ptxas_log:  # as Triton's make_cubin: prints the log, else deletes it
            print(log)
        return b"cubin"

    stages, metadata = {"cubin": make_cubin}, {}
    aot._keep_ptxas_log(None, stages, None, None, 90)
    assert stages["cubin"]("ptx", metadata) == b"cubin"
    assert aot._ptxas_resources(metadata["ptxas_log"]) == (96, 8, 4)
    assert not knobs.nvidia.dump_ptxas_log


def test_compiling_pauses_the_garbage_collector_and_collects_at_intervals(monkeypatch):
    """compile_all runs each variant with the cyclic collector off, collects every
    COLLECT_EVERY variants, and leaves the collector as it found it."""
    import gc

    from wmkernels.tools import aot

    seen, collections = [], []
    monkeypatch.setattr(aot, "compile_variant", lambda variant, arch: seen.append(gc.isenabled()) or variant)
    monkeypatch.setattr(aot.gc, "collect", lambda: collections.append(len(seen)))
    monkeypatch.setattr(aot, "_compiled_here", 0)
    assert gc.isenabled()
    assert aot.compile_all(list(range(40)), [80, 90]) == list(range(40)) * 2
    assert seen == [False] * 80 and gc.isenabled()
    assert collections == [aot.COLLECT_EVERY - 1, 2 * aot.COLLECT_EVERY - 1]

"""The plain CMake project builds: C++ unit tests pass under ctest, and every
csrc/cuda/*.cu compiles for sm_80 and sm_90 with the machine's nvcc (no GPU
needed). The nvcc test skips where nvcc is missing, unless
WMKERNELS_REQUIRE_NVCC=1 (CI), where it fails instead.
"""
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))

pytestmark = [
    pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ninja") is None,
                       reason="cmake and ninja are needed to build the CMake project"),
    pytest.mark.slow(minutes=2),  # started early (conftest)
]


def _run(cmd, cwd=None, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
        f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def cmake_build():
    """Configure and build the project once; returns the build dir. It lives in
    the test cache (conftest), under a lock: the other pytest-xdist worker waits
    for it and reuses it, as does the next run (ninja rebuilds what changed)."""
    from conftest import TEST_CACHE

    key = hashlib.sha256(f"{ROOT}\0{sys.executable}".encode()).hexdigest()[:12]
    build = TEST_CACHE / f"cmake-build-{key}"
    build.mkdir(parents=True, exist_ok=True)
    with open(build.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _run(["cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja",
              "-DCMAKE_BUILD_TYPE=Release", f"-DPYTHON_EXECUTABLE={sys.executable}"])
        _run(["cmake", "--build", str(build), "-j2"])
    return build


def test_cmake_build_and_ctest(cmake_build):
    assert (cmake_build / "wmkernels_cpp_tests").exists()
    _run(["ctest", "--test-dir", str(cmake_build), "--output-on-failure"])


def test_cuda_kernels_compiled(request):
    if shutil.which("nvcc") is None:
        if os.environ.get("WMKERNELS_REQUIRE_NVCC") == "1":
            pytest.fail("WMKERNELS_REQUIRE_NVCC=1 but nvcc is not on PATH")
        pytest.skip("nvcc not on PATH: the CUDA compile check needs the CUDA toolkit")
    assert CUDA_SOURCES, "no csrc/cuda/*.cu found"
    cmake_build = request.getfixturevalue("cmake_build")
    objects = {p.name for p in cmake_build.rglob("wmkernels_cuda_kernels.dir/**/*.o")}
    missing = [s.name for s in CUDA_SOURCES if f"{s.name}.o" not in objects]
    assert not missing, f"CUDA sources not compiled: {missing} (objects: {sorted(objects)})"
    # Each .cu was compiled for both architectures.
    commands = json.loads((cmake_build / "compile_commands.json").read_text())
    for src in CUDA_SOURCES:
        cmds = [c["command"] for c in commands if Path(c["file"]).resolve() == src.resolve()]
        assert cmds, f"no compile command for {src.name}"
        assert "sm_80" in cmds[0] and "sm_90" in cmds[0], cmds[0]

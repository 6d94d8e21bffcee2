"""The plain CMake project builds and its C++ unit tests pass under ctest."""
import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ninja") is None,
                       reason="cmake and ninja are needed to build the CMake project"),
    pytest.mark.slow(minutes=1),  # started early (conftest)
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
    """Configure and build the project; returns the build dir. It lives in the
    test cache (tests/conftest.py), under a lock: a concurrent session waits for
    it and reuses it, as does the next run (ninja rebuilds what changed)."""
    from tests.conftest import TEST_CACHE

    key = hashlib.sha256(f"{ROOT}\0{sys.executable}".encode()).hexdigest()[:12]
    build = TEST_CACHE / f"cmake-build-{key}"
    build.mkdir(parents=True, exist_ok=True)
    with open(build.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Unoptimised, assertions on (no NDEBUG), and a unity build (each target's sources compiled as
        # one file, so torch's headers are parsed once per target, not once per source): the same
        # sources at -O3, file by file, are the extension every other test runs (setup.py). 36 CPU-s
        # instead of 114 file by file at -O0 (154 at -O2; 2-core EPYC), a test started with the slow
        # ones of a cold run.
        _run(["cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Debug",
              "-DCMAKE_CXX_FLAGS_DEBUG=-O0", "-DCMAKE_UNITY_BUILD=ON", f"-DPYTHON_EXECUTABLE={sys.executable}"])
        _run(["cmake", "--build", str(build), "-j2"])
    return build


def test_cmake_build_and_ctest(cmake_build):
    assert (cmake_build / "wmkernels_cpp_tests").exists()
    _run(["ctest", "--test-dir", str(cmake_build), "--output-on-failure"])


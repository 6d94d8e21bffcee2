"""Builds the C++ extension wmkernels._C (CPU kernels, ops registered as
torch.ops.wmkernels.*) with torch's cpp_extension and ninja.

    pip install --no-build-isolation -e .

Project metadata lives in pyproject.toml. CUDA kernels are built by CMake
(CMakeLists.txt) as a compile check for now; the CUDA extension comes with
the cuda backend, as it needs a CUDA build of torch.
"""
import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


sources = ["csrc/bindings.cpp", "csrc/python_module.cpp"] + _rel("csrc/cpu/*.cpp")

ext_modules = [
    CppExtension(
        name="wmkernels._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": ["-O3"]},
    )
]

setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)

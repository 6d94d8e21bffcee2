"""Builds the C++ extension wmkernels._C (CPU kernels, ops registered as
torch.ops.wmkernels.*) with torch's cpp_extension and ninja.

    pip install --no-build-isolation -e .

Project metadata lives in pyproject.toml. The package's GPU kernels are its
Triton kernels (compiled at run time); there is no CUDA C++ extension.

The vectorized kernels (csrc/cpu/isa/*.cpp) are compiled once per instruction
set, as ATen does: at the default x86-64 level, and on x86-64 also with AVX2
and with AVX-512 flags; csrc/cpu/lstm_rows.cpp picks a copy at run time from
what the CPU supports (see ISA_BUILDS and csrc/cpu/lstm_rows.h). The bfloat16
kernels (csrc/cpu/bf16/*.cpp) are compiled once, with AVX-512 and avx512_bf16.
"""
import concurrent.futures
import glob
import os
import platform

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# name -> (CPU_CAPABILITY: the namespace of the copy, ATen's vector code it
# uses, compiler flags, sources); the flags are ATen's for the same capability
# (cmake/Codegen.cmake of PyTorch). Default first: its objects come first in
# the link, so any inline function the copies share keeps its
# default-instruction-set body. avx512_bf16 is a namespace of its own (ATen's
# AVX-512 vectors in it), so no bf16 instruction reaches the AVX-512 copy.
ISA_BUILDS = {"default": ("DEFAULT", "DEFAULT", [], "csrc/cpu/isa/*.cpp")}
if X86_64:
    AVX512_FLAGS = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"]
    ISA_BUILDS["avx2"] = ("AVX2", "AVX2", ["-mavx2", "-mfma", "-mbmi", "-mbmi2", "-mf16c"],
                          "csrc/cpu/isa/*.cpp")
    ISA_BUILDS["avx512"] = ("AVX512", "AVX512", AVX512_FLAGS, "csrc/cpu/isa/*.cpp")
    ISA_BUILDS["avx512_bf16"] = ("AVX512_BF16", "AVX512", AVX512_FLAGS + ["-mavx512bf16"],
                                 "csrc/cpu/bf16/*.cpp")


def _rel(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


class BuildWithIsaCopies(BuildExtension):
    """BuildExtension that also compiles the sources of each entry of
    ISA_BUILDS with its flags (each into its own folder, by its own ninja) and
    links those objects in. The copies compile side by side with each other
    and with the extension's own sources (each a few files: one after the
    other they left cores idle: a 2-core build took 80 s, now 67); the link waits for
    all of them."""

    def build_extension(self, ext):
        with concurrent.futures.ThreadPoolExecutor(len(ISA_BUILDS)) as pool:
            copies = [pool.submit(
                self.compiler.compile,
                _rel(pattern),
                output_dir=os.path.join(self.build_temp, "isa", name),
                macros=[("CPU_CAPABILITY", capability), (f"CPU_CAPABILITY_{vec}", None)],
                include_dirs=ext.include_dirs,
                extra_postargs={"cxx": list(ext.extra_compile_args["cxx"]) + flags
                                + ["-Wno-unknown-pragmas"]},  # ATen vec headers' #pragma unroll
                depends=ext.depends) for name, (capability, vec, flags, pattern) in ISA_BUILDS.items()]
            link = self.compiler.link_shared_object

            def link_with_copies(objects, *args, **kwargs):
                return link(list(objects) + [o for copy in copies for o in copy.result()], *args, **kwargs)

            self.compiler.link_shared_object = link_with_copies
            try:
                super().build_extension(ext)
            finally:
                self.compiler.link_shared_object = link


# OpenMP as torch's own CPU build uses it (its ATen parallel backend): the
# persistent team (csrc/cpu/team.cpp) and every at::parallel_for of csrc/ run
# on torch's OpenMP threads. Without the flag at::parallel_for runs serially.
# The extension links libgomp.so.1, which resolves to the copy torch loaded.
OPENMP = ["-fopenmp"] if platform.system() == "Linux" else []

sources = ["csrc/schema.cpp", "csrc/python_module.cpp"] + _rel("csrc/cpu/*.cpp")

ext_modules = [
    CppExtension(
        name="wmkernels._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc")],
        define_macros=[(f"WMK_HAVE_{isa.upper()}", None) for isa in ISA_BUILDS if isa != "default"],
        # -g0: without the debug information Python's own flags ask for (-g), a 2-core build takes 47 s
        # instead of 67 (0.7 of the compiler's CPU time)
        extra_compile_args={"cxx": ["-O3", "-g0"] + OPENMP},
        extra_link_args=OPENMP,
        depends=_rel("csrc/include/wmkernels/*.h") + _rel("csrc/cpu/*.h"),
    )
]

setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildWithIsaCopies.with_options(use_ninja=True)},
)

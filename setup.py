"""Build cyburn's Cython extensions.

The kernels (pyx/kernels.pxi) are compiled once per x86-64 instruction-set level into
cyburn._kernels_baseline, _kernels_avx2 and _kernels_avx512; cyburn picks one at import.
Other architectures get a single cyburn._kernels_default. OpenMP is used when the compiler
has it (CYBURN_NO_OPENMP=1 builds serial kernels). No fast-math flags: they would switch the
whole process to flush-to-zero; the few flags below only drop errno and FP-trap bookkeeping.
"""
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
PYX = HERE / "pyx"
GENERATED = HERE / "build" / "cyburn_pyx"     # one stub .pyx per level, outside the sources

COMMON_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd",
                "-DCYBURN_OPENMP_SIMD", "-DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION"]
# The instruction sets of each level, spelled out (rather than -march=x86-64-v3/-v4, which
# older compilers lack) and exactly those cyburn._runtime checks before loading a level.
AVX2 = ["-msse4.2", "-mpopcnt", "-mavx", "-mavx2", "-mfma", "-mbmi", "-mbmi2"]
AVX512 = AVX2 + ["-mavx512f", "-mavx512bw", "-mavx512cd", "-mavx512dq", "-mavx512vl"]
if platform.machine().lower() in ("x86_64", "amd64"):
    LEVEL_FLAGS = {
        "baseline": ["-march=x86-64", "-mtune=generic"],
        "avx2": ["-march=x86-64", "-mtune=generic"] + AVX2,
        "avx512": ["-march=x86-64", "-mtune=generic", "-mprefer-vector-width=512"] + AVX512,
    }
else:
    LEVEL_FLAGS = {"default": []}


def kernel_extension(level, flags):
    stub = GENERATED / f"_kernels_{level}.pyx"
    text = 'include "kernels.pxi"\n'
    if not stub.exists() or stub.read_text() != text:
        stub.write_text(text)
    return Extension(f"cyburn._kernels_{level}", [str(stub.relative_to(HERE))],
                     include_dirs=[str(PYX), np.get_include()], libraries=["m"],
                     extra_compile_args=COMMON_FLAGS + flags)


class BuildExt(build_ext):
    """Adds -fopenmp to every extension when the compiler supports it."""

    serial = os.environ.get("CYBURN_NO_OPENMP") == "1"

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        openmp = not self.serial and self._compiler_has_openmp()
        if openmp:
            for ext in self.extensions:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
        # Objects left by a build with the other OpenMP setting must not be reused.
        stamp = Path(self.build_temp) / "cyburn-openmp"
        if not stamp.exists() or stamp.read_text() != str(openmp):
            self.force = True
        super().build_extensions()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(str(openmp))

    def _compiler_has_openmp(self):
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "has_openmp.c"
            source.write_text("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
            try:
                objects = self.compiler.compile([str(source)], output_dir=tmp, extra_postargs=["-fopenmp"])
                self.compiler.link_executable(objects, "has_openmp", output_dir=tmp,
                                              extra_postargs=["-fopenmp"])
            except Exception:
                print("cyburn: the compiler has no OpenMP; building serial kernels")
                return False
        return True


GENERATED.mkdir(parents=True, exist_ok=True)
extensions = [kernel_extension(level, flags) for level, flags in LEVEL_FLAGS.items()]
extensions.append(Extension("cyburn._runtime", ["pyx/_runtime.pyx"],
                            extra_compile_args=["-O2"]))

setup(
    ext_modules=cythonize(
        extensions,
        include_path=[str(PYX)],
        build_dir="build/cython",
        compiler_directives={
            "language_level": 3, "boundscheck": False, "wraparound": False,
            "initializedcheck": False, "cdivision": True, "nonecheck": False,
            "embedsignature": True,
        },
    ),
    cmdclass={"build_ext": BuildExt},
)

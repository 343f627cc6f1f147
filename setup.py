"""Build cyburn's Cython extensions.

The kernels (pyx/kernels.pxi) are compiled once per x86-64 instruction-set level into
cyburn._kernels_baseline, _kernels_avx2 and _kernels_avx512; cyburn picks one at import.
Other architectures get a single cyburn._kernels_default. OpenMP is used when the compiler
has it (CYBURN_NO_OPENMP=1 builds serial kernels), through a private copy of the compiler's
libgomp on Linux (see BuildExt.private_openmp_runtime). No fast-math flags: they would switch
the whole process to flush-to-zero; the few flags below only drop errno and FP-trap
bookkeeping.
"""
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
PYX = HERE / "pyx"
GENERATED = HERE / "build" / "cyburn_pyx"     # one stub .pyx per level, outside the sources
PRIVATE_OPENMP = "libgomp-cyburn.so.1"        # the SONAME of cyburn's own copy of libgomp

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
    """Adds OpenMP to every extension when the compiler supports it."""

    serial = os.environ.get("CYBURN_NO_OPENMP") == "1"

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        openmp = not self.serial and self._compiler_has_openmp()
        private = self.private_openmp_runtime() if openmp else None
        if private is None:                     # no stale copy may be taken for cyburn's
            for stale in (Path(self.build_lib) / "cyburn" / PRIVATE_OPENMP,
                          Path(self.get_finalized_command("build_py").get_package_dir("cyburn"))
                          / PRIVATE_OPENMP):
                stale.unlink(missing_ok=True)
        if openmp:
            for ext in self.extensions:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args += ([str(private), "-Wl,-rpath,$ORIGIN"] if private
                                        else ["-fopenmp"])
        # Objects left by a build with other OpenMP settings must not be reused.
        stamp = Path(self.build_temp) / "cyburn-openmp"
        setting = f"{openmp} {private is not None}"
        if not stamp.exists() or stamp.read_text() != setting:
            self.force = True
        super().build_extensions()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(setting)

    def private_openmp_runtime(self):
        """cyburn's own copy of the compiler's libgomp, beside the extensions, renamed
        (SONAME libgomp-cyburn.so.1) so that no other library in the process shares it: how
        its idle threads wait is then cyburn's to choose (cyburn/_openmp.py), as in the
        repaired wheel. None where it cannot be made (not Linux, no libgomp, no patchelf,
        or CYBURN_SHARED_OPENMP=1): the extensions then link the compiler's runtime."""
        if sys.platform != "linux" or os.environ.get("CYBURN_SHARED_OPENMP") == "1":
            return None
        patchelf = shutil.which("patchelf")
        try:
            found = subprocess.run([self.compiler.compiler_so[0], "-print-file-name=libgomp.so.1"],
                                   capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            found = ""
        if not patchelf or not os.path.isabs(found) or not os.path.exists(found):
            print("cyburn: no patchelf or no libgomp; linking the compiler's shared OpenMP runtime")
            return None
        target = Path(self.build_lib) / "cyburn" / PRIVATE_OPENMP
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found, target)
        subprocess.run([patchelf, "--set-soname", PRIVATE_OPENMP, str(target)], check=True)
        return target

    def copy_extensions_to_source(self):
        """build_ext --inplace: the private runtime goes beside the extensions too."""
        super().copy_extensions_to_source()
        built = Path(self.build_lib) / "cyburn" / PRIVATE_OPENMP
        if built.exists():
            package = self.get_finalized_command("build_py").get_package_dir("cyburn")
            shutil.copyfile(built, Path(package) / PRIVATE_OPENMP)

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

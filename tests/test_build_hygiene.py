"""Build hygiene: the kernels name libm among their dependencies, and pyproject.toml is read
without deprecation warnings (the SPDX license string)."""
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import cyburn

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("readelf") is None,
                    reason="needs Linux and readelf")
def test_kernel_extensions_link_libm():
    """The kernels call exp, log, tanh... from libm: it is a NEEDED entry of each extension,
    not something the interpreter happens to have loaded."""
    extensions = sorted(Path(cyburn.__file__).parent.glob("_kernels_*.so"))
    assert extensions, "no compiled kernels next to cyburn/__init__.py"
    for path in extensions:
        dynamic = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True,
                                 check=True).stdout
        needed = [line.split("[")[-1].rstrip("]") for line in dynamic.splitlines()
                  if "(NEEDED)" in line]
        assert any(name.startswith("libm.so") for name in needed), (path.name, needed)


def test_pyproject_license_is_spdx_and_reads_without_deprecation_warnings():
    setuptools = pytest.importorskip("setuptools")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution
    tomllib = pytest.importorskip("tomllib")      # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["project"]["license"] == "MIT"
    assert "setuptools>=77" in config["build-system"]["requires"]
    if tuple(int(p) for p in setuptools.__version__.split(".")[:2]) < (77, 0):
        pytest.skip("setuptools older than 77 does not know the SPDX license form")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_configuration(Distribution(), ROOT / "pyproject.toml")

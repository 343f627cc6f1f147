"""The package builds without OpenMP (serial kernels) and says so."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_serial_build_without_openmp(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("pyx", "src"):
        shutil.copytree(ROOT / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c"))
    env = dict(os.environ, CYBURN_NO_OPENMP="1")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path / "wheel"), str(source)], env=env, check=True,
                   capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("cyburn-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "installed")
    probe = ("import numpy as np, cyburn as cb\n"
             "cb.show_config()\n"
             "x = np.random.default_rng(0).standard_normal((300, 1000))\n"
             "assert np.allclose(cb.softmax(x, axis=0), cb.reference.softmax(x, axis=0))\n"
             "cb.set_num_threads(3)\n"
             "print('after set_num_threads(3):', cb.get_num_threads())\n")
    # a serial build runs every kernel on one thread, whatever OMP_NUM_THREADS says
    child_env = dict(os.environ, PYTHONPATH=str(tmp_path / "installed"), OMP_NUM_THREADS="4")
    result = subprocess.run([sys.executable, "-c", probe], env=child_env, cwd=tmp_path,
                            capture_output=True, text=True, check=True)
    assert "openmp:          none (serial build" in result.stdout, result.stdout
    assert "threads:         1 (serial build)" in result.stdout, result.stdout
    assert "wait policy:     none (serial build)" in result.stdout, result.stdout
    assert "after set_num_threads(3): 1" in result.stdout, result.stdout

"""The package as a user installs it: a wheel and an sdist from ``python -m build``, the wheel
installed into a fresh virtual environment, and the installed ``widealign`` command run from it.

Nothing is downloaded: the build runs without isolation (setuptools and build come with the dev
extra), and the fresh environment reaches the dependencies (torch, scikit-learn, ...) through a
``.pth`` file naming this environment's site-packages, so torch is not installed again. widealign
itself must come from the wheel: the test checks where it is imported from, and runs from a folder
outside the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = sorted(p.name for p in (ROOT / "src/widealign/sweeps/families").glob("*.toml"))


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    pytest.importorskip("build", reason="python -m build needs the dev extra")
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    return out


def test_build_makes_a_wheel_and_an_sdist_with_the_package_data_and_the_licence(dist):
    (wheel,) = dist.glob("widealign-*-py3-none-any.whl")
    (sdist,) = dist.glob("widealign-*.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(Path(n).name for n in names if "/sweeps/families/" in n) == CATALOGUE
    assert "widealign/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: MIT" in zipfile.ZipFile(wheel).read(metadata).decode()
    members = {Path(m).relative_to(Path(m).parts[0]).as_posix() for m in tarfile.open(sdist).getnames()[1:]}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "examples/pytorch_loop.py"} <= members
    assert {f"src/widealign/sweeps/families/{name}" for name in CATALOGUE} <= members


def test_the_wheel_installed_in_a_fresh_environment_lists_rules_and_trains(dist, tmp_path):
    (wheel,) = dist.glob("*.whl")
    env = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", env)
    bindir = env / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "dependencies-from-the-dev-environment.pth").write_text("\n".join(sorted(here)) + "\n")
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        wheel,
    )

    work = tmp_path / "work"  # not the source tree: nothing can be imported from src/
    work.mkdir()
    where = run(python, "-c", "import widealign; print(widealign.__file__, widealign.__version__)", cwd=work)
    assert where.startswith(site) and where.split()[1] == "0.1.0"
    widealign = bindir / "widealign"
    assert run(widealign, "rules", cwd=work).split()[0] == "bp"
    families = run(widealign, "run", "--list", cwd=work)
    rows = families.splitlines()[1:-1]  # a header line and a closing note around one row per family
    assert [line.split()[0] for line in rows] == [n.removesuffix(".toml") for n in CATALOGUE]
    out = run(
        widealign, "train", "--rule", "align-ada", "--width", "4", "--epochs", "1", "--train-size", "100",
        "--no-progress", "--out", "run", cwd=work,
    )  # fmt: skip
    assert "epoch   1/1" in out and (work / "run" / "result.json").exists()
    assert (work / "run" / "metrics.csv").read_text().startswith("epoch,train_loss")

"""The package as a user installs it: a wheel and an sdist from ``python -m build`` (the wheel built
from the sdist, as ``build`` does by default), their metadata checked by ``twine check``, the wheel
installed into a fresh virtual environment, and a smoke test of the installed ``widealign`` command
(list rules and families, train one epoch on digits, report, plot) run from it.

Nothing is downloaded: the build runs without isolation (setuptools and build come with the dev
extra), and the fresh environment reaches the dependencies (torch, scikit-learn, ...) through a
``.pth`` file naming this environment's site-packages, so torch is not installed again. widealign
itself must come from the wheel: the test checks where it is imported from, and runs from a folder
outside the source tree.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = sorted(p.name for p in (ROOT / "src/widealign/sweeps/families").glob("*.toml"))
#: The one place the version is written.
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


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
    assert "widealign/py.typed" in names and "widealign/cli/names.json" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: MIT" in zipfile.ZipFile(wheel).read(metadata).decode()
    members = {Path(m).relative_to(Path(m).parts[0]).as_posix() for m in tarfile.open(sdist).getnames()[1:]}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "examples/pytorch_loop.py"} <= members
    assert {f"src/widealign/sweeps/families/{name}" for name in CATALOGUE} <= members
    assert {
        f"examples/{p.name}" for p in (ROOT / "examples").iterdir() if p.suffix in (".py", ".ipynb")
    } <= members
    assert (
        wheel.name == f"widealign-{VERSION}-py3-none-any.whl" and sdist.name == f"widealign-{VERSION}.tar.gz"
    )


def test_twine_check_passes_on_the_wheel_and_the_sdist(dist):
    pytest.importorskip("twine", reason="twine comes with the dev extra")
    out = run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    assert out.count("PASSED") == 2, out


def test_the_version_is_written_once_in_pyproject():
    import widealign

    assert widealign.__version__ == VERSION  # read from the installed metadata, not a copy
    copies = [
        p
        for p in (ROOT / "src").rglob("*.py")
        if re.search(rf"['\"]{re.escape(VERSION)}['\"]", p.read_text())
    ]
    assert copies == []


def test_the_wheel_installed_in_a_fresh_environment_trains_reports_and_plots(dist, tmp_path):
    (wheel,) = dist.glob("*.whl")
    env = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", env)
    bindir = env / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    # this environment's site-packages, and any it reaches through a .pth of its own (.pth files are
    # not followed from a directory a .pth names)
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    here |= {p for p in sys.path if Path(p).name == "site-packages"}
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
    assert where.startswith(site) and where.split()[1] == VERSION
    widealign = bindir / "widealign"
    assert run(widealign, "--version", cwd=work).split()[-1] == VERSION
    assert run(widealign, "rules", cwd=work).split()[0] == "bp"
    families = run(widealign, "run", "--list", cwd=work)
    rows = families.splitlines()[1:-1]  # a header line and a closing note around one row per family
    assert [line.split()[0] for line in rows] == [n.removesuffix(".toml") for n in CATALOGUE]

    # the smoke test: train one epoch on digits (a packaged family), report it and plot it
    run(
        widealign, "run", "width", "--smoke", "--epochs", "1", "--widths", "4", "8", "--rules", "bp",
        "--no-progress", "--out", "width", cwd=work,
    )  # fmt: skip
    results = sorted((work / "width").glob("*/result.json"))
    assert len(results) == 2 and all(
        (r.parent / "metrics.csv").read_text().startswith("epoch,") for r in results
    )
    report = run(widealign, "report", "width", cwd=work)
    assert "2 runs (2 finished)" in report
    assert (work / "width" / "results.csv").read_text().count("\n") == 3  # a header and two runs
    assert (work / "width" / "accuracy_vs_width.png").read_bytes().startswith(b"\x89PNG")

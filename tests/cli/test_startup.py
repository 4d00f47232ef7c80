"""The commands that only list or describe start without torch (or numpy, or matplotlib).

Each command runs in a fresh interpreter, which reports afterwards which heavy modules it
imported; no time is measured (``python scripts/bench_startup.py`` does that, as a benchmark).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "matplotlib", "torchvision", "sklearn", "tqdm")
SCRIPT = f"""
import sys
from widealign.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
sys.stdout.flush()
print("status", code, "heavy", *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)
"""


def heavy_imports(*argv: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *argv], capture_output=True, text=True, timeout=120)
    words = proc.stderr.strip().splitlines()[-1].split()
    assert words[:2] == ["status", "0"], proc.stderr
    return words[3:]


LISTING = [["--version"], ["--help"], ["rules"], ["run", "--list"], ["train", "--help"]]


@pytest.mark.parametrize("argv", LISTING)
def test_listing_commands_import_no_heavy_module(argv):
    assert heavy_imports(*argv) == []


def test_the_check_sees_torch_where_a_command_needs_it():
    """The check can fail: a command that builds a configuration does import torch."""
    assert "torch" in heavy_imports("run", "width", "--smoke", "--dry-run")


def test_importing_widealign_does_not_import_torch_until_a_model_or_rule_is_used():
    code = (
        "import sys, widealign; a = 'torch' in sys.modules; widealign.MLP; "
        "print(a, 'torch' in sys.modules, widealign.RULES is __import__('widealign.rules').rules.RULES)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"]

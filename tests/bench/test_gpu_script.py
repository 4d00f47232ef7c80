"""scripts/gpu-check.sh: its steps run end to end on the meta device (--dry-run) into one JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash")
def test_gpu_check_dry_run_writes_one_json_with_every_step(tmp_path):
    env = {**os.environ, "WIDEALIGN_PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["device"] == "meta"
    assert set(report["steps"]) == {"device-tests", "bench", "memory"}
    assert report["ok"], {k: v["last_lines"] for k, v in report["steps"].items()}
    bench = report["steps"]["bench"]["figures"]
    assert {r["rule"] for r in bench["steps"]} == {"bp", "align-zero", "align-ada", "bare"}
    assert {r["width"] for r in bench["batched"]} == {4, 8}
    assert report["steps"]["memory"]["figures"]["memory"][0]["estimated"] > 0

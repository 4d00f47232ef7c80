#!/usr/bin/env bash
# The GPU check: on a machine with CUDA, run the test suite's device tests and `widealign bench`
# (bp and the Align rules at widths 64-1024, batched runs, bf16 autocast, peak memory) and write
# every figure into one JSON, OUT/gpu-check.json. Run it from the repository root:
#
#     scripts/gpu-check.sh [OUT]          # OUT defaults to $OUT, else ./gpu-check
#     scripts/gpu-check.sh --dry-run OUT  # the same steps on the meta device, tiny sizes (no GPU)
#
# It uses $WIDEALIGN_PYTHON, else .venv/bin/python, else makes .venv with `make setup`. Each step
# has its own time limit, so that the whole check ends within about 8 minutes on a GPU; a step
# that fails or times out is recorded in the JSON (its exit status and last lines) and the check
# goes on.
set -uo pipefail

DEVICE=cuda
if [[ "${1:-}" == "--dry-run" ]]; then
    DEVICE=meta
    shift
fi
OUT_DIR="${1:-${OUT:-gpu-check}}"
mkdir -p "$OUT_DIR/steps"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"

if [[ -n "${WIDEALIGN_PYTHON:-}" ]]; then
    PY="$WIDEALIGN_PYTHON"
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    make setup || { echo "gpu-check: make setup failed" >&2; exit 1; }
    PY=.venv/bin/python
fi

if [[ "$DEVICE" == cuda ]]; then
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu-check: torch sees no CUDA device (use --dry-run to check the steps without one)" >&2
        exit 1
    }
    WIDTHS=(64 256 1024); MEMORY_WIDTHS=(256 1024 4096); REPEATS=5; MEASURE=60; MEMORY_DEVICE=cuda
    SHAPE=(1 28 28); BATCH=100
else
    WIDTHS=(4 8); MEMORY_WIDTHS=(4); REPEATS=1; MEASURE=0; MEMORY_DEVICE=cpu  # estimates only
    SHAPE=(1 8 8); BATCH=8
fi
RULES=(bp align-zero align-ada)

# step NAME LIMIT_SECONDS COMMAND...: run COMMAND with a time limit, keep its status and output.
step() {
    local name="$1" limit="$2"
    shift 2
    echo "== $name (at most ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT_DIR/steps/$name.log" 2>&1
    local rc=$?
    echo "$rc $((SECONDS - start))" >"$OUT_DIR/steps/$name.rc"
    tail -n 30 "$OUT_DIR/steps/$name.log"
}

if [[ "$DEVICE" == cuda ]]; then
    step nvidia-smi 30 nvidia-smi
    step device-tests 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests
else
    step device-tests 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/rules/test_devices.py
fi
BENCH=("$PY" -m widealign bench --input-shape "${SHAPE[@]}" --batch-size "$BATCH" --repeats "$REPEATS"
       --rules "${RULES[@]}")
step bench 180 "${BENCH[@]}" --device "$DEVICE" --widths "${WIDTHS[@]}" --sections steps batched --members 5 \
    --json "$OUT_DIR/steps/bench.json"
if [[ "$DEVICE" == cuda ]]; then
    step bench-bf16 60 "${BENCH[@]}" --device "$DEVICE" --widths "${WIDTHS[@]:1}" --sections steps --autocast bf16 \
        --json "$OUT_DIR/steps/bench-bf16.json"
fi
step memory 90 "${BENCH[@]}" --device "$MEMORY_DEVICE" --widths "${WIDTHS[0]}" --sections memory \
    --memory-widths "${MEMORY_WIDTHS[@]}" --measure-up-to "$MEASURE" --json "$OUT_DIR/steps/memory.json"

"$PY" - "$OUT_DIR" "$DEVICE" <<'PYTHON'
"""Gather every step's JSON, exit status, time and last lines into one file."""
import json, pathlib, sys

out, device = pathlib.Path(sys.argv[1]), sys.argv[2]
report = {"device": device, "steps": {}}
for rc_file in sorted((out / "steps").glob("*.rc")):
    name = rc_file.stem
    rc, seconds = map(int, rc_file.read_text().split())
    log = (out / "steps" / f"{name}.log").read_text(errors="replace").splitlines()
    entry = {"exit_status": rc, "seconds": seconds, "timed_out": rc == 124, "last_lines": log[-15:]}
    figures = out / "steps" / f"{name}.json"
    if figures.exists():
        entry["figures"] = json.loads(figures.read_text())
    report["steps"][name] = entry
report["ok"] = all(e["exit_status"] == 0 for e in report["steps"].values())
(out / "gpu-check.json").write_text(json.dumps(report, indent=2))
print(f"gpu-check: wrote {out / 'gpu-check.json'} ({'all steps passed' if report['ok'] else 'some steps failed'})")
PYTHON

"""Peak memory of a training step per rule, against bp: measured where it fits, estimated beyond.

:func:`measured_peak` trains two steps of a run in a fresh Python process on random data of the
data set's shape and reports how far the process's peak resident memory (``VmHWM``, or the peak
CUDA allocation on a GPU) rose above what it held before the data and the model were made: torch's
own libraries are not counted, the data, model, rule state and the step's tensors are.
:func:`~widealign.runs.memory.estimate_memory` counts the same on the meta device, for any width.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from widealign.runs.config import RunConfig
from widealign.runs.memory import estimate_memory, size_text

#: Measure (rather than only estimate) runs whose estimated peak is at most this many bytes.
MEASURE_UP_TO = 2e9


def measured_peak(cfg: RunConfig, steps: int = 2, timeout: float = 600.0) -> int:
    """Bytes a run of ``cfg`` adds to a fresh process's peak memory over ``steps`` training steps."""
    code = (
        "import sys, json; from widealign.bench.memory import _child; "
        "_child(json.loads(sys.argv[1]), int(sys.argv[2]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cfg.as_dict()), str(steps)],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"measuring {cfg.rule} at width {cfg.width} failed: {out.stderr.strip()[-300:]}")
    return int(out.stdout.strip().splitlines()[-1])


def _child(config: dict[str, Any], steps: int) -> None:
    """In the measuring process: build, step, print the bytes added to the peak."""
    import torch

    from widealign.data import Dataset
    from widealign.data.shapes import DATA_SHAPES
    from widealign.rules import make_rule
    from widealign.runs.config import build_model, build_optimizer, resolve_device, rule_arguments
    from widealign.runs.memory import process_rss
    from widealign.train.timing import train_step

    cfg = RunConfig(**config).resolved()
    device = resolve_device(cfg.device)
    shape = DATA_SHAPES[cfg.dataset]
    n_train, n_test = shape.sizes(cfg.train_size, cfg.official_test, cfg.holdout)
    torch.empty(1, device=device)  # load the device's libraries before the baseline
    baseline = process_rss()[0]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(n, *shape.input_shape, generator=g) for n in (n_train, n_test)]
    if shape.task == "classification":
        ys = [
            torch.eye(shape.num_outputs)[torch.randint(shape.num_outputs, (n,), generator=g)]
            for n in (n_train, n_test)
        ]
    else:
        ys = [torch.rand(n, *shape.target_shape, generator=g) for n in (n_train, n_test)]
    data = Dataset(cfg.dataset, xs[0], ys[0], xs[1], ys[1], shape.task, shape.num_outputs, shape.default_loss)
    data = data.to(device, cfg.torch_dtype)
    del xs, ys
    model = build_model(cfg, data).to(device, cfg.torch_dtype)
    rule = make_rule(cfg.rule, model, cfg.loss_name(data), seed=cfg.seed, **rule_arguments(cfg))
    optimizer = build_optimizer(cfg, [*model.parameters(), *rule.feedback_parameters()])
    x, y = data.x_train[: cfg.batch_size], data.y_train[: cfg.batch_size]
    for _ in range(steps):
        train_step(rule, optimizer, x, y)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        print(torch.cuda.max_memory_allocated(device))
    else:
        print(process_rss()[1] - baseline)


def memory_table(
    widths: Sequence[int],
    rules: Sequence[str],
    dataset: str = "kmnist",
    device: str = "cpu",
    measure_up_to: float = MEASURE_UP_TO,
    **config: Any,
) -> list[dict[str, Any]]:
    """Per width and rule: the estimated peak (and its parts), the measured peak where the estimate
    is at most ``measure_up_to`` bytes, and both as ratios to bp's at that width."""
    rows = []
    for width in widths:
        base: dict[str, float] = {}
        for rule in ["bp", *[r for r in rules if r != "bp"]]:
            cfg = RunConfig(rule=rule, dataset=dataset, width=width, device=device, **config)
            estimate = estimate_memory(cfg)
            row: dict[str, Any] = {"width": width, "rule": rule, "estimated": estimate.total,
                                   "parts": estimate.as_dict()}  # fmt: skip
            if estimate.total <= measure_up_to:
                row["measured"] = measured_peak(cfg)
            if rule == "bp":
                base = {k: row[k] for k in ("estimated", "measured") if k in row}
            for key, value in base.items():
                if key in row:
                    row[f"{key}_to_bp"] = row[key] / value
            rows.append(row)
    return rows


def format_memory_table(rows: list[dict[str, Any]]) -> str:
    """One line per (width, rule): estimated and measured peak memory, and their ratios to bp."""
    lines = ["peak memory of a training step (estimated on the meta device; measured in a fresh process)"]
    lines.append(f"{'width':>6} {'rule':<22} {'estimated':>10} {'x bp':>6} {'measured':>10} {'x bp':>6}")
    for r in rows:
        measured = f"{size_text(r['measured']):>10} {r['measured_to_bp']:>6.2f}" if "measured" in r else ""
        lines.append(
            f"{r['width']:>6} {r['rule']:<22} {size_text(r['estimated']):>10} "
            f"{r['estimated_to_bp']:>6.2f} {measured}"
        )
    return "\n".join(lines)

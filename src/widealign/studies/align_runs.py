"""The input-weight alignment score (docs/method.md#alignment-score) of saved runs.

Either one ``alignment`` run in score mode, whose checkpoint holds the bp network, the theory
network and their initial network, or two ordinary runs (``widealign train --out``, a sweep's run
folders) trained from the same initialisation: the same architecture, data set and seed, whose
initial network is rebuilt from that seed (initialisation depends on the seed alone).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from widealign.diagnostics import LayerAlignment, alignment_scores
from widealign.runs.config import RunConfig, build_model
from widealign.runs.run import CHECKPOINT_FILE, load_data, read_checkpoint, read_result, resume
from widealign.seeding import generator
from widealign.studies.alignment import alignment_config

#: Configuration fields that must agree for two runs to share their initial network.
SAME_INIT = (
    "dataset",
    "model",
    "width",
    "preset",
    "strides",
    "depth",
    "kernel_size",
    "parameterization",
    "norm",
    "seed",
)


def _load(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's record and its checkpoint, checked to be made with the record's configuration."""
    record = read_result(folder)
    checkpoint = folder / CHECKPOINT_FILE
    state = None if record is None else read_checkpoint(checkpoint, record["config"])
    if record is None or state is None:
        raise ValueError(f"{folder} is not a run folder with result.json and {CHECKPOINT_FILE}")
    state["path"] = str(checkpoint)
    return record, state


def _config(record: dict[str, Any]) -> RunConfig:
    if record.get("kind") == "alignment":
        return alignment_config(record["config"])
    return RunConfig(**record["config"]).resolved()


def _model(cfg: RunConfig, data: Any, state: dict[str, Any] | None, path: str = "") -> nn.Module:
    model = build_model(cfg, data).to(dtype=cfg.torch_dtype)
    if state is not None:
        resume(model.load_state_dict, state, Path(path))
    return model


def align_runs(
    run_a: str | os.PathLike,
    run_b: str | os.PathLike | None = None,
    draws: int = 100,
    noise_batch: int = 100,
    seed: int = 0,
) -> list[LayerAlignment]:
    """Per-layer score and shuffled control of one score-mode alignment run, or of two runs."""
    record_a, state_a = _load(Path(run_a))
    cfg_a = _config(record_a)
    data = load_data(cfg_a)
    x = data.x_train[:2].to(cfg_a.torch_dtype)
    noise = generator(seed, "align-cli")
    if run_b is None:
        if record_a.get("kind") != "alignment" or "theory" not in state_a:
            raise ValueError(f"{run_a} is not an alignment score run; give two run folders to compare")
        networks = [_model(cfg_a, data, state_a[k], state_a["path"]) for k in ("bp", "theory", "initial")]
        return alignment_scores(*networks, x, noise, draws, noise_batch)
    record_b, state_b = _load(Path(run_b))
    cfg_b = _config(record_b)
    differ = [k for k in SAME_INIT if getattr(cfg_a, k) != getattr(cfg_b, k)]
    if differ:
        raise ValueError(f"the runs do not share an initialisation: they differ in {', '.join(differ)}")
    trained_a = _model(cfg_a, data, state_a["model"], state_a["path"])
    trained_b = _model(cfg_b, data, state_b["model"], state_b["path"])
    return alignment_scores(trained_a, trained_b, _model(cfg_a, data, None), x, noise, draws, noise_batch)

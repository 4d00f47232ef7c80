"""How much memory a training run needs at its peak, counted without running it.

A run's peak is estimated as the sum of

* ``data``: the data set held in memory (training and held-out inputs and targets, in the run's
  dtype; ImageNet streams batches and counts one batch);
* ``weights``: the model's parameters and buffers;
* ``rule_state``: the rule's own tensors (``theta_0`` of align-zero and align-ada, feedback
  matrices of fa, dfa and the learned-feedback rules);
* ``step``: the most bytes of tensors alive at once during two training steps (the rule's
  backward and the optimiser's step): the activations kept for the backward pass, the gradients,
  the optimiser's state (Adam's moments), and every temporary while it is alive.

Everything is counted on the meta device: the model is built there and two steps of the rule run
there, so nothing is allocated and no arithmetic is done, and a width-4096 network is counted in
a second (the relaxation rules run two iterations: their loops keep no graph, so a step's memory
does not grow with the iterations). A ``TorchDispatchMode`` adds the bytes of every new tensor an
op returns (not views, not in-place results) and subtracts them when the tensor is freed.
Memory that kernels allocate inside themselves (convolution workspaces), allocator overhead, the
interpreter and torch's libraries are not counted: a CPU process's measured peak exceeds the
estimate (``tests/runs/test_memory.py`` checks the two against each other at small widths, and
docs/performance.md#memory gives the measured ratio).
"""

from __future__ import annotations

import inspect
import math
import os
import weakref
from dataclasses import asdict, dataclass, replace
from types import SimpleNamespace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from widealign.data.shapes import DATA_SHAPES
from widealign.rules import RULES, make_rule
from widealign.runs.config import RunConfig, build_model, build_optimizer, device_memory, rule_arguments


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each part of a run's peak memory (see the module docstring)."""

    data: int
    weights: int
    rule_state: int
    step: int

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of the tensors that ops create and that are still alive, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {id(a) for a in args if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and id(t) not in inputs and not t._is_view():
                n = t.numel() * t.element_size()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, n)
        return out


def _nbytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def estimate_memory(cfg: RunConfig, members: int = 1) -> MemoryEstimate:
    """The peak memory of one training run of ``cfg`` (``members`` runs batched together: every
    part but the data K times), counted on the meta device."""
    cfg = cfg.resolved()
    shape = DATA_SHAPES.get(cfg.dataset)
    if shape is None:
        raise ValueError(f"the shape of data set {cfg.dataset!r} is not known without loading it")
    item = cfg.torch_dtype.itemsize
    n_train, n_test = shape.sizes(cfg.train_size, cfg.official_test, cfg.holdout)
    if cfg.dataset.startswith("imagenet"):
        n_train, n_test = cfg.batch_size, 0
    per_example = math.prod(shape.input_shape) + math.prod(shape.target_shape)
    data = (n_train + n_test) * per_example * item
    info = SimpleNamespace(name=cfg.dataset, input_shape=shape.input_shape, num_outputs=shape.num_outputs)
    batch = min(cfg.batch_size, n_train)
    with torch.device("meta"):
        model = build_model(replace(cfg, seed=None), info).to(dtype=cfg.torch_dtype)
        x = torch.empty(batch, *shape.input_shape, dtype=cfg.torch_dtype)
        y = torch.empty(batch, *shape.target_shape, dtype=cfg.torch_dtype)
        loss = "sequence-mse" if len(shape.target_shape) > 1 else (cfg.loss or shape.default_loss)
        if loss == "ce":
            y = torch.zeros(batch, dtype=torch.long)
        options = dict(cfg.rule_options)
        if "iterations" in inspect.signature(RULES[cfg.rule].__init__).parameters:
            options["iterations"] = 2  # the relaxation loops keep no graph: memory is per iteration
        rule = make_rule(cfg.rule, model, loss, seed=0, **{**rule_arguments(cfg), **options})
        optimizer = build_optimizer(cfg, [*model.parameters(), *rule.feedback_parameters()])
        live = _LiveBytes()
        with live:
            for _ in range(2):
                optimizer.zero_grad(set_to_none=True)
                rule.backward(x, y)
                optimizer.step()
    own = {id(t) for t in [*model.parameters(), *model.buffers()]}
    rule_tensors = {id(t): t for t in [*rule.buffers(), *rule.parameters()] if id(t) not in own}
    parts = {
        "weights": _nbytes(model.parameters()) + _nbytes(model.buffers()),
        "rule_state": _nbytes(rule_tensors.values()),
        "step": live.peak,
    }
    return MemoryEstimate(data=data, **{k: v * members for k, v in parts.items()})


def available_memory(device: torch.device) -> int | None:
    """Bytes a new run can use on ``device``: free CUDA memory, or the CPU's ``MemAvailable``
    (``/proc/meminfo``, else physical memory); None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return device_memory(device)


def size_text(n: float) -> str:
    """Bytes as a short decimal size (``1.5 GB``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def process_rss() -> tuple[int, int]:
    """(current, peak) resident memory of this process in bytes, from ``/proc/self/status``."""
    values = {}
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, amount, _ = line.split()
                values[key] = int(amount) * 1024
    return values["VmRSS:"], values["VmHWM:"]

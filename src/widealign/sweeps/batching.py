"""Whether runs train faster batched: the automatic batching policy, measured on this machine.

On the CPU, a batched run (:mod:`widealign.train.batched`) removes per-operation overhead but makes
every tensor K times larger. Where a step is overhead-bound (the Add-task RNN, small images) it is
several times faster; where it is bound by memory bandwidth or by the convolutions (the KMNIST conv
net at batch 100) it can be slower than the K runs one after another
(docs/performance.md#batched-runs). So batching is never assumed to pay: for each group of runs
that could batch, :func:`batching_pays` times a few interleaved steps of K separate runs against
the same K runs batched, on random data of the data set's shape, and batches only where the
batched step is at least :data:`MIN_SPEEDUP` times faster.

Two bounds from the measured table spare the measurement where its answer is known: runs whose
synaptic layers output more than :data:`NEVER_ABOVE` elements per call on average
(:func:`~widealign.runs.config.outputs_per_call`) train separately (no batched run that large was
faster on this CPU), and everything else is measured once per batch key.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from widealign.bench.batched import time_members
from widealign.data import DATA_SHAPES, Dataset
from widealign.rules import make_rule
from widealign.runs.config import (
    RunConfig,
    build_model,
    build_optimizer,
    outputs_per_call,
    resolve_device,
)
from widealign.runs.run import rule_arguments
from widealign.train import Trainer

#: Batch only where one batched step is at least this many times faster than the separate steps
#: (ours: a margin over the timing noise of a few interleaved rounds).
MIN_SPEEDUP = 1.1
#: Above this many output elements per synaptic-layer call, runs train separately without being
#: measured. Measured on a 2-core CPU, 5 members, bp (docs/performance.md#batched-runs): every
#: configuration above 400,000 (the KMNIST conv net from width 16) was slower batched.
NEVER_ABOVE = 400_000
#: Members and interleaved rounds (after one warm-up round) of a measurement.
MEMBERS, ROUNDS = 4, 3


def _members(cfg: RunConfig, members: int, device: torch.device) -> tuple[list[Trainer], list, list]:
    """``members`` trainers of ``cfg`` with seeds 0..members-1 on random data of the data set's
    shape, and one batch of inputs and targets for each."""
    shape = DATA_SHAPES[cfg.dataset]
    batch = min(cfg.batch_size, shape.n_train)
    g = torch.Generator().manual_seed(0)
    dtype = cfg.torch_dtype

    def inputs() -> torch.Tensor:
        return torch.rand(batch, *shape.input_shape, generator=g).to(device, dtype)

    def targets() -> torch.Tensor:
        if shape.task == "classification":
            return torch.randint(shape.num_outputs, (batch,), generator=g).to(device)
        return torch.randn(batch, *shape.target_shape, generator=g).to(device, dtype)

    xs, ys = [inputs() for _ in range(members)], [targets() for _ in range(members)]
    data = Dataset(cfg.dataset, xs[0], ys[0], xs[0][:0], ys[0][:0], shape.task, shape.num_outputs,
                   shape.default_loss)  # fmt: skip
    trainers = []
    for seed in range(members):
        member = replace(cfg, seed=seed)
        model = build_model(member, data).to(device, dtype)
        rule = make_rule(member.rule, model, member.loss_name(data), seed=seed, **rule_arguments(member))
        optimizer = build_optimizer(member, [*model.parameters(), *rule.feedback_parameters()])
        trainers.append(Trainer(model, rule, optimizer, data, batch, seed=seed, progress=False))
    return trainers, xs, ys


def measure_batching(cfg: RunConfig, members: int = MEMBERS, rounds: int = ROUNDS) -> dict[str, float]:
    """Median seconds of ``members`` separate steps of ``cfg`` and of one batched step of them, and
    the speed-up separate / batched, measured here in interleaved rounds."""
    cfg = cfg.resolved()
    if cfg.dataset not in DATA_SHAPES:
        raise ValueError(f"the shape of data set {cfg.dataset!r} is not known without loading it")
    device = resolve_device(cfg.device)
    trainers, xs, ys = _members(cfg, members, device)
    times = time_members(trainers, xs, ys, rule_arguments(cfg), device, 1, rounds)
    return {**times, "speedup": times["separate"] / times["batched"], "members": members}


def batching_pays(cfg: RunConfig, measure: bool = True) -> bool:
    """Whether runs of ``cfg`` (differing in seed or learning rate) should train batched.

    False where the runs are too large for batching to pay (more than :data:`NEVER_ABOVE` outputs
    per call) or their data's shape is unknown; otherwise measured by :func:`measure_batching`
    (``measure=False``, for dry runs, answers True without measuring).
    """
    size = outputs_per_call(cfg)
    if size is None or size > NEVER_ABOVE:
        return False
    if not measure:
        return True
    return measure_batching(cfg)["speedup"] >= MIN_SPEEDUP


def auto_batch_key(cfg: RunConfig, key: str, cache: dict[str, Any], measure: bool = True) -> str | None:
    """``key`` where runs of ``cfg`` batch automatically (:func:`batching_pays`), else None; the
    answer is cached by key, so a family of hundreds of runs measures once per group."""
    if key not in cache:
        cache[key] = batching_pays(cfg, measure)
    return key if cache[key] else None

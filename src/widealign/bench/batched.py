"""Time K runs trained one after another against the same K runs trained as one batched model.

The K members differ in seed (model, feedback and data), as a seeds family's runs do. One
*separate* round is one training step of each member in turn; one *batched* round is one step of
the stacked model (:class:`widealign.train.batched.BatchedTrainer`) on the members' K batches.
Rounds alternate (separate, batched, separate, ...) so that drift in the machine's speed affects
both alike; medians are reported, with the speed-up separate / batched measured in this process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from widealign.bench.steps import _check_bench, _interleaved, bench_model
from widealign.data.base import Dataset
from widealign.models.stacked import member_axis, stack_inputs
from widealign.rules import RULES, make_rule
from widealign.runs.config import resolve_device
from widealign.train.batched import BatchedTrainer
from widealign.train.loop import Trainer
from widealign.train.timing import train_step


def bench_batched(
    size: int,
    model: str = "convnet",
    widths: Sequence[int] = (8, 16, 32, 64, 128, 256),
    rules: Sequence[str] = ("bp",),
    preset: str = "kmnist",
    input_shape: Sequence[int] = (1, 28, 28),
    outputs: int = 10,
    batch_size: int = 100,
    repeats: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> list[dict[str, Any]]:
    """Median seconds of K separate steps and of one batched step, per rule and width.

    ``model`` is ``convnet`` (``input_shape`` C H W), ``mlp`` or ``rnn`` (``input_shape`` T F, one
    output per step, as the Add task's).
    """
    if model not in ("convnet", "mlp", "rnn"):
        raise ValueError(f"bench supports the convnet, the mlp and the rnn, not {model!r}")
    if model == "rnn" and len(input_shape) != 2:
        raise ValueError(f"--input-shape for the rnn is T F (2 numbers), got {list(input_shape)}")
    _check_bench(widths, input_shape, batch_size, repeats, "mlp" if model == "rnn" else model)
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"a batched run needs at least 2 members, got {size!r}")
    for name in rules:
        if name not in RULES:
            raise ValueError(f"unknown rule {name!r}")
        if not RULES[name].batchable:
            raise ValueError(f"{name} cannot train in a batched run")
    dev = resolve_device(device)
    g = torch.Generator().manual_seed(0)
    out_shape = (input_shape[0], outputs) if model == "rnn" else (outputs,)
    xs = [torch.rand(batch_size, *input_shape, generator=g).to(dev, dtype) for _ in range(size)]
    ys = [torch.randn(batch_size, *out_shape, generator=g).to(dev, dtype) for _ in range(size)]
    data = Dataset("bench", xs[0], ys[0], xs[0][:0], ys[0][:0], "regression", outputs)
    rows = []
    for width in widths:
        for name in rules:
            trainers = []
            for seed in range(size):
                net = bench_model(model, width, preset, input_shape, outputs, seed)
                net = net.to(dev, dtype)
                rule = make_rule(name, net, "sequence-mse" if model == "rnn" else "mse", seed=seed)
                opt = torch.optim.SGD([*net.parameters(), *rule.feedback_parameters()], lr=1e-3 * (1 + seed))
                trainers.append(Trainer(net, rule, opt, data, batch_size, seed=seed, progress=False))
            times = time_members(trainers, xs, ys, {}, dev, warmup, repeats)
            rows.append(
                {"model": model, "width": width, "rule": name, "members": size,
                 "separate_seconds": times["separate"], "batched_seconds": times["batched"],
                 "speedup": times["separate"] / times["batched"]}
            )  # fmt: skip
    return rows


def time_members(
    trainers: Sequence[Trainer],
    xs: Sequence[Tensor],
    ys: Sequence[Tensor],
    rule_options: dict[str, Any],
    device: torch.device,
    warmup: int = 1,
    repeats: int = 3,
) -> dict[str, float]:
    """Median seconds of one step of each of ``trainers`` in turn (``separate``) and of one step of
    them as one :class:`BatchedTrainer` (``batched``), on the members' batches ``xs``, ``ys``, in
    interleaved rounds. The trainers' own models are stepped by the separate rounds only."""
    batched = BatchedTrainer(trainers, rule_options=rule_options, progress=False)
    x = stack_inputs(xs, member_axis(trainers[0].model))
    y = torch.stack(list(ys))

    def separate() -> None:
        for t, xb, yb in zip(trainers, xs, ys):
            train_step(t.rule, t.optimizer, xb, yb)

    def together() -> None:
        batched.optimizer.zero_grad(set_to_none=True)
        batched.rule.backward(x, y)
        batched.scale_updates()
        batched.optimizer.step()

    return _interleaved({"separate": separate, "batched": together}, device, warmup, repeats)


def format_bench_batched(rows: list[dict[str, Any]]) -> str:
    """One line per (width, rule): K separate steps, one batched step, and the speed-up."""
    k = rows[0]["members"]
    lines = [f"{k} runs one after another against {k} runs as one batched model (ms per step of all {k})"]
    lines.append(f"{'width':>6} {'rule':<14} {'separate':>10} {'batched':>10} {'speed-up':>9}")
    for r in rows:
        lines.append(
            f"{r['width']:>6} {r['rule']:<14} {1000 * r['separate_seconds']:>10.2f} "
            f"{1000 * r['batched_seconds']:>10.2f} {r['speedup']:>9.2f}"
        )
    return "\n".join(lines)

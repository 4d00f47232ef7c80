"""Expected run time of an experiment family on this machine, from a few timed steps.

A run's time is ``epochs x (steps x seconds per step + held-out batches x seconds per held-out
batch + per-epoch diagnostics)``, where ``steps = ceil(training examples / batch size)`` and the
held-out batches likewise (plus ``steps`` more evaluated batches when the run re-evaluates its
training set, ``eval_train``). The cost of a step does not depend on the learning rate, the seed,
the number of epochs or of examples, so runs that differ only in those share one measurement.

Each distinct run shape is timed through the code that trains it (``Trainer.train_epoch`` and
``evaluate`` for ``train`` runs; ``TheoryPair`` and its alignment score, or the trainer plus
``update_alignment``, for ``alignment`` runs; ``run_song2021`` for ``song2021`` runs) on random
inputs of the data set's shape (:data:`widealign.data.shapes.DATA_SHAPES`): the data files are not
needed, so the time of a CIFAR-10 or ImageNet sweep on a GPU can be measured before downloading
anything. One warm-up step precedes the timed ones; the learning rate is lowered while timing so
that random data cannot make a step diverge (it does not change a step's cost).

:func:`family_time_classes` gives, without timing anything, a coarse class of a family's time on
the CPU and on a GPU from counted multiply-adds and nominal throughputs (``widealign run --list``).

Not counted: loading and decoding data (nothing for the in-memory sets; ImageNet streams JPEGs
from disk, which on a GPU may well dominate), building the model, and writing checkpoints.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import torch
from tqdm.auto import tqdm

from widealign.data import Dataset, shifted_one_hot
from widealign.data.shapes import DATA_SHAPES, DataShape
from widealign.diagnostics import TheoryPair, update_alignment, weight_snapshot
from widealign.models import CONV_PRESETS
from widealign.models.vision import is_torchvision_name
from widealign.rules import make_rule
from widealign.runs.config import RunConfig, build_model, build_optimizer, resolve_device, rule_arguments
from widealign.runs.memory import available_memory, estimate_memory, size_text
from widealign.seeding import generator
from widealign.studies.alignment import alignment_config
from widealign.studies.song2021 import Song2021Config, run_song2021
from widealign.sweeps.catalogue import Family, Task
from widealign.sweeps.runners import validate
from widealign.train import Trainer, evaluate
from widealign.train.timing import timed, train_step

#: Learning rate used while timing (a step's cost does not depend on it).
TIMING_LR = 1e-6
#: Config keys that change how many steps a run takes, or their numbers, but not a step's cost.
NOT_COST = {
    "train": ("lr", "seed", "epochs", "train_size", "official_test", "holdout"),
    "alignment": ("lr", "seed", "epochs", "train_size", "official_test", "holdout"),
    "song2021": ("lam", "seed", "eta", "steps", "data_seed", "target"),
}


@dataclass(frozen=True)
class Cost:
    """Measured seconds of one run shape: per training step, per held-out batch, per epoch extra."""

    step: float
    eval_batch: float = 0.0
    per_epoch: float = 0.0


@dataclass(frozen=True)
class RunEstimate:
    """One run's expected time: its counts (from its config) times its shape's measured cost."""

    run_id: str
    shape: dict[str, Any]
    epochs: int
    steps_per_epoch: int
    eval_batches: int
    cost: Cost
    #: Estimated peak memory in bytes (:func:`~widealign.runs.memory.estimate_memory`), None where
    #: it cannot be counted (song2021 runs, data of unknown shape).
    memory: int | None = None

    @property
    def seconds_per_epoch(self) -> float:
        c = self.cost
        return self.steps_per_epoch * c.step + self.eval_batches * c.eval_batch + c.per_epoch

    @property
    def seconds(self) -> float:
        return self.epochs * self.seconds_per_epoch


def _resolved(task: Task) -> RunConfig:
    return alignment_config(task.config) if task.kind == "alignment" else RunConfig(**task.config).resolved()


def cost_key(task: Task) -> str:
    """What decides a run's cost per step: its kind and config without the keys of :data:`NOT_COST`,
    with its resolved batch size (which may follow ``train_size``)."""
    ignored = NOT_COST.get(task.kind, ())
    shape = {k: v for k, v in task.config.items() if k not in ignored}
    if task.kind in ("train", "alignment"):
        shape["batch_size"] = _resolved(task).batch_size
    return json.dumps({"kind": task.kind, **shape}, sort_keys=True)


def random_data(shape: DataShape, name: str, batch_size: int, batches: int) -> Dataset:
    """``batches`` training batches and one held-out batch of uniform inputs and valid targets."""
    g = torch.Generator().manual_seed(0)

    def examples(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(n, *shape.input_shape, generator=g)
        if shape.task == "classification":
            y = shifted_one_hot(torch.randint(shape.num_outputs, (n,), generator=g), shape.num_outputs)
        else:
            y = torch.rand(n, *shape.target_shape, generator=g)
        return x, y

    (x, y), (xt, yt) = examples(batch_size * batches), examples(batch_size)
    return Dataset(name, x, y, xt, yt, shape.task, shape.num_outputs, shape.default_loss)


def _setup(cfg: RunConfig, steps: int) -> tuple[torch.device, Dataset, torch.nn.Module]:
    device = resolve_device(cfg.device)
    data = random_data(DATA_SHAPES[cfg.dataset], cfg.dataset, cfg.batch_size, steps)
    data = data.to(device, cfg.torch_dtype)
    return device, data, build_model(cfg, data).to(device, cfg.torch_dtype)


def _trainer_cost(cfg: RunConfig, steps: int, update_metric: bool = False) -> Cost:
    """A ``Trainer`` epoch of ``steps`` batches, one held-out batch, and ``update_alignment``."""
    device, data, model = _setup(cfg, steps)
    initial = weight_snapshot(model) if update_metric else None
    rule = make_rule(cfg.rule, model, cfg.loss_name(data), seed=cfg.seed, **rule_arguments(cfg))
    optimizer = build_optimizer(
        replace(cfg, lr=TIMING_LR), [*model.parameters(), *rule.feedback_parameters()]
    )
    trainer = Trainer(
        model, rule, optimizer, data, cfg.batch_size, seed=cfg.seed, progress=False, autocast=cfg.autocast
    )
    held_out = functools.partial(evaluate, model, rule.loss_fn, classification=trainer.classification)
    x, y = data.x_train[: cfg.batch_size], data.y_train[: cfg.batch_size]
    timed(device, functools.partial(train_step, rule, optimizer, x, y))
    step = timed(device, trainer.train_epoch) / steps
    timed(device, lambda: held_out(data.test_batches(cfg.batch_size)))
    eval_batch = timed(device, lambda: held_out(data.test_batches(cfg.batch_size)))
    per_epoch = 0.0
    if update_metric:
        n = cfg.extra["probe_size"]
        metric = functools.partial(update_alignment, rule, data.x_train[:n], data.y_train[:n], initial)
        timed(device, metric)
        per_epoch = timed(device, metric)
    return Cost(step, eval_batch, per_epoch)


def _score_cost(cfg: RunConfig, steps: int) -> Cost:
    """A ``TheoryPair`` epoch (both networks), both held-out evaluations, and the alignment score."""
    device, data, model = _setup(cfg, steps)
    pair = TheoryPair(
        model, cfg.loss_name(data), optimizer=functools.partial(build_optimizer, replace(cfg, lr=TIMING_LR))
    )
    x, y = data.x_train[: cfg.batch_size], data.y_train[: cfg.batch_size]
    classification = data.task == "classification"

    def held_out() -> None:
        for net in (pair.bp, pair.theory):
            evaluate(net, pair.bp_rule.loss_fn, data.test_batches(cfg.batch_size), classification)

    def score() -> None:
        probe, draws, batch = x[: cfg.extra["probe_size"]], cfg.extra["draws"], cfg.extra["noise_batch"]
        pair.alignment(probe, generator(cfg.seed, "estimate-noise"), draws, batch)

    timed(device, lambda: pair.step(x, y))
    step = timed(device, lambda: pair.train_epoch(data, cfg.batch_size)) / steps
    timed(device, held_out)
    eval_batch = timed(device, held_out)
    return Cost(step, eval_batch, timed(device, score))


def _song_cost(config: Song2021Config, steps: int) -> Cost:
    """Seconds per full-batch step of ``run_song2021`` and its fixed cost (making the data, ...).

    Its steps take about a millisecond, so the step cost is the difference between runs of ``k``
    and ``2k`` steps (``k = 20 x steps``), and the rest of the shorter run is the fixed cost.
    """
    device, k = torch.device("cpu"), 20 * steps
    short = replace(config, steps=k, lam=0.0)
    timed(device, lambda: run_song2021(replace(short, steps=1)))
    t_short = timed(device, lambda: run_song2021(short))
    t_long = timed(device, lambda: run_song2021(replace(short, steps=2 * k)))
    step = max(t_long - t_short, 0.0) / k
    return Cost(step, per_epoch=max(t_short - (k + 1) * step, 0.0))


def _counts(task: Task) -> tuple[int, int, int]:
    """(epochs, training steps per epoch, held-out batches per epoch) of a task."""
    if task.kind == "song2021":
        return 1, Song2021Config(**task.config).steps + 1, 0
    cfg = _resolved(task)
    n_train, n_test = DATA_SHAPES[cfg.dataset].sizes(cfg.train_size, cfg.official_test, cfg.holdout)
    steps, eval_batches = math.ceil(n_train / cfg.batch_size), math.ceil(n_test / cfg.batch_size)
    return cfg.epochs, steps, eval_batches + (steps if cfg.eval_train else 0)


def measure_cost(task: Task, steps: int = 3) -> Cost:
    """Time ``steps`` training steps (after one warm-up) of the run ``task`` describes."""
    if steps <= 0:
        raise ValueError(f"timed steps must be a positive integer, got {steps}")
    if task.kind == "song2021":
        return _song_cost(Song2021Config(**task.config), steps)
    if task.kind == "alignment":
        cfg = alignment_config(task.config)
        if cfg.extra["mode"] == "score":
            return _score_cost(cfg, steps)
        return _trainer_cost(cfg, steps, update_metric=True)
    if task.kind == "train":
        return _trainer_cost(RunConfig(**task.config).resolved(), steps)
    raise ValueError(f"cannot estimate runs of kind {task.kind!r}")


def estimate_family(family: Family, steps: int = 3, progress: bool = True) -> list[RunEstimate]:
    """Every run of ``family`` with its expected time; each distinct run shape is timed once."""
    tasks = family.tasks()
    for task in tasks:
        validate(task)
    costs: dict[str, Cost] = {}
    memory: dict[str, int | None] = {}
    estimates = []
    for task in tqdm(tasks, desc=f"estimate {family.name}", unit="run", disable=not progress):
        key = cost_key(task)
        if key not in costs:
            costs[key] = measure_cost(task, steps)
        shape = {k: v for k, v in json.loads(key).items() if k != "kind"}
        estimates.append(
            RunEstimate(task.run_id, shape, *_counts(task), costs[key], peak_memory(task, memory))
        )
    return estimates


def peak_memory(task: Task, cache: dict[str, int | None] | None = None) -> int | None:
    """A run's estimated peak memory in bytes (:func:`~widealign.runs.memory.estimate_memory`;
    the data set counted in full), cached by :func:`cost_key` plus the data-size settings; None for
    runs it cannot count (song2021, data of unknown shape)."""
    if task.kind not in ("train", "alignment"):
        return None
    cache = {} if cache is None else cache
    cfg = _resolved(task)
    key = cost_key(task) + json.dumps([cfg.train_size, cfg.holdout, cfg.official_test])
    if key not in cache:
        try:
            cache[key] = estimate_memory(cfg).total
        except (ValueError, NotImplementedError, RuntimeError):
            cache[key] = None
    return cache[key]


def check_sweep_memory(tasks: list[Task], at_once: int = 1) -> None:
    """Refuse, with one line, a sweep whose ``at_once`` largest runs together would not fit in the
    memory available to their device here (:func:`peak_memory`)."""
    cache: dict[str, int | None] = {}
    peaks = sorted(
        ((m, t) for t in tasks if (m := peak_memory(t, cache)) is not None), key=lambda p: p[0], reverse=True
    )
    if not peaks:
        return
    device = resolve_device(str(peaks[0][1].config.get("device", "cpu")))
    available = available_memory(device)
    need = sum(m for m, _ in peaks[: max(at_once, 1)])
    if available is not None and need > available:
        raise ValueError(
            f"this sweep needs about {size_text(need)} of memory at its peak ({min(at_once, len(peaks))} "
            f"run(s) at once; the largest, {peaks[0][1].run_id}, {size_text(peaks[0][0])}) but {device} "
            f"has {size_text(available)} available; use smaller widths or fewer workers"
        )


def format_estimate(estimates: list[RunEstimate]) -> str:
    """One line per run shape (labelled by the settings that vary between shapes), then the total.

    ``s/epoch`` is a range where the shape's runs train on different numbers of examples.
    """
    groups: dict[str, list[RunEstimate]] = {}
    for e in estimates:
        groups.setdefault(json.dumps(e.shape, sort_keys=True), []).append(e)
    shapes = [group[0].shape for group in groups.values()]
    keys = dict.fromkeys(k for s in shapes for k in s)
    varying = [k for k in keys if len({repr(s.get(k)) for s in shapes}) > 1]
    labels = [" ".join(f"{k}={s[k]}" for k in varying if k in s) or "every run" for s in shapes]
    width = max(len("run shape"), *(len(label) for label in labels))
    head = (
        f"{'run shape':<{width}} {'runs':>5} {'ms/step':>9} {'s/epoch':>13} {'hours':>8} {'peak memory':>12}"
    )
    lines = [head]
    for label, group in zip(labels, groups.values()):
        low, high = min(e.seconds_per_epoch for e in group), max(e.seconds_per_epoch for e in group)
        per_epoch = f"{low:.2f}" if high - low < 0.005 else f"{low:.2f}-{high:.2f}"
        hours = sum(e.seconds for e in group) / 3600
        step_ms = 1000 * group[0].cost.step
        peaks = [e.memory for e in group if e.memory is not None]
        memory = size_text(max(peaks)) if peaks else "-"
        lines.append(
            f"{label:<{width}} {len(group):>5} {step_ms:>9.2f} {per_epoch:>13} {hours:>8.3f} {memory:>12}"
        )
    total = sum(e.seconds for e in estimates)
    lines.append(f"total: {len(estimates)} runs, {total:.0f} s = {total / 3600:.2f} h, one run after another")
    peaks = [e.memory for e in estimates if e.memory is not None]
    if peaks:
        lines.append(
            f"peak memory: {size_text(max(peaks))} (the largest run; runs in parallel add theirs; "
            "kernel workspaces and torch itself not counted)"
        )
    return "\n".join(lines)


#: Sustained multiply-adds per second assumed by :func:`time_class`. CPU: this project's 2-core
#: machine, from the measured step of the width-512 KMNIST conv net (batch 100: 8.9 s for about
#: 1.7e11 multiply-adds, forward and backward). GPU: a nominal 1e13 (10 TMAC/s, single precision);
#: an assumption, not a measurement (``--estimate --device cuda`` measures).
NOMINAL_MACS_PER_SECOND = {"cpu": 2e10, "gpu": 1e13}
#: Time classes by upper bound in seconds.
TIME_CLASSES = (
    (3600.0, "< 1 hour"), (86400.0, "hours"), (7 * 86400.0, "days"), (60 * 86400.0, "weeks"),
    (365 * 86400.0, "months"),
)  # fmt: skip


def macs_per_example(cfg: RunConfig) -> int:
    """Multiply-adds of one forward pass of ``cfg``'s network on one example (weights only).

    Conv net: per layer, output positions (SAME padding: ``ceil(size / stride)``) x output channels
    x kernel area x input channels, plus the readout; MLP: the weight matrices' sizes; RNN: every
    time step's input, recurrent and readout products.
    """
    shape = DATA_SHAPES[cfg.dataset]
    if is_torchvision_name(cfg.model):
        return _counted_macs(cfg, shape)
    if cfg.model == "convnet":
        channels, side, _ = shape.input_shape
        strides = cfg.strides if cfg.strides is not None else CONV_PRESETS[cfg.preset]
        widths = cfg.width if isinstance(cfg.width, list) else [cfg.width] * len(strides)
        total = 0
        for stride, width in zip(strides, widths):
            side = math.ceil(side / stride)
            total += side * side * width * cfg.kernel_size**2 * channels
            channels = width
        return total + channels * shape.num_outputs
    if cfg.model == "mlp":
        sizes = [math.prod(shape.input_shape)]
        sizes += cfg.width if isinstance(cfg.width, list) else [cfg.width] * cfg.depth
        sizes.append(shape.num_outputs)
        return sum(a * b for a, b in zip(sizes, sizes[1:]))
    steps, features = shape.input_shape
    return steps * cfg.width * (features + cfg.width + shape.num_outputs)


def _counted_macs(cfg: RunConfig, shape: DataShape) -> int:
    """A torchvision model's multiply-adds per example, counted by ``torch.utils.flop_counter`` on
    the meta device (nothing is allocated or computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    data = SimpleNamespace(name=cfg.dataset, input_shape=shape.input_shape, num_outputs=shape.num_outputs)
    with torch.device("meta"):
        model = build_model(replace(cfg, seed=None), data)
        x = torch.empty((1, *shape.input_shape))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)  # eval: BatchNorm accepts a batch of one
    return counter.get_total_flops() // 2


def nominal_macs(task: Task) -> float:
    """Multiply-adds of a whole run, counted roughly: each training example costs three forward
    passes (forward and backward), each evaluated example one; an alignment score run trains two
    networks. Learning rules are not told apart (their costs differ by less than 1.5x)."""
    if task.kind == "song2021":
        c = Song2021Config(**task.config)
        return 3.0 * c.steps * c.n * c.width * (c.d + 1)
    cfg = _resolved(task)
    epochs, steps, eval_batches = _counts(task)
    per_epoch = 3 * steps * cfg.batch_size + eval_batches * cfg.batch_size
    networks = 2 if task.kind == "alignment" and cfg.extra["mode"] == "score" else 1
    return float(networks * epochs * per_epoch * macs_per_example(cfg))


def time_class(seconds: float) -> str:
    """A coarse class for a duration: ``< 1 hour``, ``hours``, ``days``, ``weeks``, ``months``, ``years``."""
    for bound, name in TIME_CLASSES:
        if seconds < bound:
            return name
    return "years"


def family_time_classes(family: Family) -> dict[str, str]:
    """The family's expected time class, run after run, on the CPU and on a GPU, from
    :func:`nominal_macs` and :data:`NOMINAL_MACS_PER_SECOND` (nothing is run or timed)."""
    macs = sum(nominal_macs(task) for task in family.tasks())
    return {device: time_class(macs / rate) for device, rate in NOMINAL_MACS_PER_SECOND.items()}

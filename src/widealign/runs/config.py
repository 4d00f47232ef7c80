"""The configuration of one training run, and how it becomes a model, a rule and an optimiser.

Fields left as None take the data set's defaults (:data:`DATASET_DEFAULTS`), so ``RunConfig(rule=
"align-ada")`` is a complete run on digits. :meth:`RunConfig.resolved` fills them in; the resolved
configuration is what results files record.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from widealign.data import DATASETS, HOLDOUT_SETS, Dataset
from widealign.data.shapes import DATA_SHAPES
from widealign.losses import LOSSES
from widealign.models import CONV_PRESETS, MLP, NORMS, RNN, ConvNet
from widealign.models.layers import PARAMETERIZATIONS, synaptic_layers
from widealign.models.vision import is_torchvision_name, torchvision_model, torchvision_names
from widealign.rules import RULES, VARIANTS, check_rule_options, get_rule
from widealign.suggest import did_you_mean, suggestion
from widealign.train.loop import check_autocast

#: The library's own families; any torchvision classification model name (resnet18, vgg11, ...)
#: is accepted too and converted (:func:`widealign.models.vision.torchvision_model`).
MODELS = ("convnet", "mlp", "rnn")
OPTIMIZERS = ("sgd", "adam")
#: Learning-rate schedules, stepped once per epoch (:func:`build_scheduler`).
SCHEDULES = ("none", "step", "cosine")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Device names a run accepts; anything else (mps, meta, xla, ...) is refused before any work.
DEVICE_PATTERN = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")
#: Losses that need a classification task (labels); the others fit any data.
CLASSIFICATION_LOSSES = ("ce",)

#: Per-data-set defaults: the paper's settings where it has them (Add task: docs/method.md), and
#: for digits the KMNIST conv net with the paper's largest learning rate, 5, which learns fastest.
#: ``eval_train``: re-evaluate the whole training set after every epoch (the Add task's train loss
#: is reported that way in the paper).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(model="convnet", preset="kmnist", width=64, lr=5.0, batch_size=100, epochs=10),
    "add": dict(model="rnn", preset=None, width=64, lr=1e-3, batch_size=50, epochs=200, eval_train=True),
    "mnist": dict(model="convnet", preset="kmnist", width=64, lr=5.0, batch_size=100, epochs=100),
    "kmnist": dict(model="convnet", preset="kmnist", width=64, lr=5.0, batch_size=100, epochs=100),
    "cifar10": dict(model="convnet", preset="cifar10", width=64, lr=5.0, batch_size=100, epochs=150),
    "imagenet": dict(model="convnet", preset="imagenet", width=512, lr=5.0, batch_size=100, epochs=300),
    "imagenet-smoke": dict(model="convnet", preset="imagenet", width=8, lr=5.0, batch_size=20, epochs=1),
}


def low_data_batch_size(batch_size: int, train_size: int) -> int:
    """The authors' batch size for a run on the first ``train_size`` examples.

    ``train_size`` itself when it is smaller than ``batch_size``, ``gcd(batch_size, train_size)``
    when ``batch_size`` does not divide it, else ``batch_size``: every batch then has the same
    size (N = 45 trains one batch of 45, N = 150 three batches of 50).
    """
    if train_size < batch_size:
        return train_size
    return math.gcd(batch_size, train_size)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run's numbers (plus where it runs).

    ``variant="reference"`` trains align-ada, align-zero and readout as the authors' code does
    (``docs/method.md#variants``); the other rules have one version, which both values select. A
    rule's own variant names (weight-mirror's ``"akrout"`` and ``"kunin"``) select that variant of
    that rule and are an error for any other rule.
    ``rule_options`` are the rule's own settings (``widealign.rules.rule_options``), e.g.
    ``{"iterations": 50}`` for activation-relaxation.

    ``train_size`` keeps the first N training examples (the paper's low-data experiments). When
    ``batch_size`` is left to the data set's default, it becomes the authors' batch size for that
    N (:func:`low_data_batch_size`: N below 100, gcd(100, N) otherwise); a batch size given
    explicitly is used as given, the last batch then possibly smaller. ``holdout`` is the number of
    training images held out for evaluation (MNIST, KMNIST, CIFAR-10; default the paper's 5,000,
    the first ones of the files); ``official_test`` evaluates on the official test set instead.
    ``eval_train`` re-evaluates the whole training set after every epoch (default: on for the Add
    task). ``momentum`` (SGD only) and ``weight_decay`` (L2, added to every update as
    ``weight_decay * theta``) go to the optimiser (:func:`build_optimizer`), whichever the rule;
    ``schedule`` changes the learning rate once per epoch (:func:`build_scheduler`): ``"step"``
    multiplies it by ``gamma`` every ``step_size`` epochs, ``"cosine"`` anneals it to 0 over the
    run's epochs. The defaults (0, 0, ``"none"``) are the paper's plain SGD.
    ``autocast="bf16"`` trains and evaluates under bfloat16 autocast
    (:func:`widealign.train.loop.autocast_region`; a no-op for ``dtype="float64"``). ``compile``
    compiles the model's forward pass (:func:`widealign.train.loop.compile_model`); like
    ``device`` it says how the run executes, not which run it is (not part of its identity). Where the data
    files live is not part of the configuration: see :func:`widealign.runs.run.load_data`.
    """

    rule: str = "bp"
    variant: str = "default"
    dataset: str = "digits"
    model: str | None = None
    width: int | list[int] | None = None
    preset: str | None = None
    strides: list[int] | None = None
    depth: int = 2
    kernel_size: int = 3
    parameterization: str = "ntk"
    norm: str = "batch-axis"
    eps: float = 1e-6
    loss: str | None = None
    optimizer: str = "sgd"
    lr: float | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "none"
    step_size: int | None = None
    gamma: float = 0.1
    epochs: int | None = None
    batch_size: int | None = None
    train_size: int | None = None
    holdout: int | None = None
    official_test: bool = False
    eval_train: bool | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    autocast: str | None = None
    compile: bool = False
    rule_options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> RunConfig:
        """This configuration with the data set's defaults filled in, after checking every field."""
        self._check_types()
        if self.dataset not in DATASETS:
            raise ValueError(did_you_mean("dataset", self.dataset, DATASETS))
        defaults = DATASET_DEFAULTS.get(self.dataset, {})
        if self.width not in (None, defaults.get("width")) and is_torchvision_name(self.model):
            # The data set's default width is what every run records, so a resolved run resolves again.
            raise ValueError(width_does_not_apply(self.model, self.width))
        filled = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        if self.eval_train is None:
            filled["eval_train"] = defaults.get("eval_train", False)
        if self.strides is not None and self.preset is None:
            filled["preset"] = None
        cfg = replace(self, **filled)
        cfg._check()
        if self.batch_size is None and cfg.train_size is not None:
            cfg = replace(cfg, batch_size=low_data_batch_size(cfg.batch_size, cfg.train_size))
        return replace(cfg, rule_options=check_rule_options(cfg.rule, cfg.rule_options))

    def _check_types(self) -> None:
        """Names are strings and options tables (a list or a number there is a one-line error)."""
        for name in (
            "rule",
            "variant",
            "dataset",
            "parameterization",
            "norm",
            "optimizer",
            "schedule",
            "dtype",
            "device",
        ):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a name (a string), got {getattr(self, name)!r}")
        for name in ("model", "loss", "preset", "autocast"):
            if not isinstance(getattr(self, name), (str, type(None))):
                raise ValueError(f"{name} must be a name (a string) or left out, got {getattr(self, name)!r}")
        for name in ("rule_options", "extra"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a table of name = value, got {getattr(self, name)!r}")
        if self.strides is not None and (
            not isinstance(self.strides, list)
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in self.strides)
        ):
            raise ValueError(f"strides must be a list of positive integers, got {self.strides!r}")

    def _check(self) -> None:
        get_rule(self.rule)  # a one-line error for an unknown name or an import path that fails
        offered = RULES[self.rule].variants
        if self.variant not in VARIANTS and self.variant not in offered:
            known = list(dict.fromkeys([*VARIANTS, *offered]))
            hint = suggestion(self.variant, known) or f"choose one of {', '.join(known)}"
            raise ValueError(f"unknown variant {self.variant!r} for {self.rule}; {hint}")
        if self.model not in MODELS:
            if not is_torchvision_name(self.model):
                hint = suggestion(self.model, [*MODELS, *torchvision_names()])
                hint = f" ({hint})" if hint else ""
                raise ValueError(
                    f"unknown model {self.model!r}{hint}; choose one of {', '.join(MODELS)} or a torchvision "
                    "classification model (resnet18, vgg11, alexnet, ...)"
                )
        self._check_data_fit()
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        self._check_recipe()
        _choice("dtype", self.dtype, DTYPES)
        check_autocast(self.autocast)
        _choice("parameterization", self.parameterization, PARAMETERIZATIONS)
        _choice("norm", self.norm, NORMS)
        if self.loss is not None:
            _choice("loss", self.loss, LOSSES)
        if self.preset is not None:
            _choice("preset", self.preset, CONV_PRESETS)
        widths = self.width if isinstance(self.width, list) else [self.width]
        for w in widths:
            if not isinstance(w, int) or w <= 0:
                raise ValueError(f"width must be a positive integer, got {w!r}")
        for name in ("epochs", "batch_size", "depth", "kernel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}")
        if (
            isinstance(self.eps, bool)
            or not isinstance(self.eps, (int, float))
            or not (math.isfinite(self.eps) and self.eps > 0)
        ):
            raise ValueError(f"eps (the normalisation epsilon) must be a positive number, got {self.eps!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"learning rate must be a positive number, got {self.lr!r}")
        if self.train_size is not None and (not isinstance(self.train_size, int) or self.train_size <= 0):
            raise ValueError(f"train size must be a positive integer, got {self.train_size!r}")
        if self.holdout is not None:
            if isinstance(self.holdout, bool) or not isinstance(self.holdout, int) or self.holdout < 0:
                raise ValueError(f"holdout must be a non-negative integer, got {self.holdout!r}")
            if self.dataset not in HOLDOUT_SETS:
                raise ValueError(f"holdout applies to {', '.join(HOLDOUT_SETS)}, not {self.dataset}")
        if not isinstance(self.eval_train, bool):
            raise ValueError(f"eval_train must be true or false, got {self.eval_train!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true or false, got {self.compile!r}")
        if self.strides is not None and any(s <= 0 for s in self.strides):
            raise ValueError(f"strides must be positive, got {self.strides}")
        if self.model == "convnet" and self.preset is None and self.strides is None:
            raise ValueError("a convnet needs a preset or strides")
        if self.model == "convnet" and isinstance(self.width, list):
            layers = len(self.strides if self.strides is not None else CONV_PRESETS[self.preset])
            if len(self.width) != layers:
                raise ValueError(
                    f"{len(self.width)} widths given but the convnet has {layers} layers (strides)"
                )
        if self.model == "rnn" and not RULES[self.rule].supports_recurrent:
            raise ValueError(f"{self.rule} supports feed-forward models only, not the rnn")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer (0, 1, 2, ...), got {self.seed!r}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            raise ValueError(f"unknown device {self.device!r} (use cpu, cuda, cuda:N or auto)")

    def _check_recipe(self) -> None:
        """Momentum, weight decay and the schedule: numbers in range, each with what it goes with."""
        _choice("schedule", self.schedule, SCHEDULES)
        for name, low, high in (("momentum", 0.0, 1.0), ("weight_decay", 0.0, math.inf)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < high:
                bound = "in [0, 1)" if high == 1.0 else "a non-negative number"
                raise ValueError(f"{name.replace('_', ' ')} must be {bound}, got {value!r}")
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(f"momentum goes with optimizer sgd ({self.optimizer} keeps its own moments)")
        if self.schedule == "step":
            if isinstance(self.step_size, bool) or not isinstance(self.step_size, int) or self.step_size <= 0:
                raise ValueError(
                    f"schedule step needs step_size, the epochs between decays (a positive integer), "
                    f"got {self.step_size!r}"
                )
            gamma = self.gamma
            if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
                raise ValueError(f"gamma (the step schedule's factor) must be in (0, 1], got {self.gamma!r}")
        elif self.step_size is not None or self.gamma != 0.1:
            raise ValueError(f"step_size and gamma go with schedule step, not {self.schedule}")

    def _check_data_fit(self) -> None:
        """The model and the loss fit the data set (known from its shape, without loading it)."""
        shape = DATA_SHAPES.get(self.dataset)
        if shape is None:
            return
        sequences = len(shape.input_shape) == 2
        if is_torchvision_name(self.model) and sequences:
            raise ValueError(
                f"{self.model} needs image data (N, C, H, W), not the sequences of {self.dataset!r}; "
                "use --model rnn"
            )
        fitting = ("rnn",) if sequences else ("convnet", "mlp")
        if self.model not in fitting and not is_torchvision_name(self.model):
            if sequences:
                need = f"is a sequence task (inputs of shape {shape.input_shape}) that needs the rnn model"
            else:
                need = f"holds images {shape.input_shape}, which need the convnet or the mlp"
            raise ValueError(
                f"data set {self.dataset!r} {need}, not {self.model!r}; use --model {' or '.join(fitting)}"
            )
        if self.loss in CLASSIFICATION_LOSSES and shape.task != "classification":
            others = ", ".join(name for name in LOSSES if name not in CLASSIFICATION_LOSSES)
            raise ValueError(
                f"loss {self.loss!r} needs class labels but {self.dataset!r} is a {shape.task} task; "
                f"use one of {others}"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def rule_variant(self) -> str:
        """The variant to build the rule with: ``variant`` where the rule offers it, else the default."""
        return self.variant if self.variant in RULES[self.rule].variants else "default"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def loss_name(self, data: Dataset) -> str:
        """The configured loss, or the data set's default (the paper's)."""
        return self.loss or data.default_loss


def width_does_not_apply(model: str, width: Any) -> str:
    """The error for a width given to a torchvision model, which the width cannot change."""
    return (
        f"width {width} does not apply to {model}: a torchvision model keeps its own layer widths "
        "(leave the width out, or use model convnet or mlp to vary it)"
    )


def _choice(name: str, value: Any, options: Any) -> None:
    if value not in options:
        raise ValueError(did_you_mean(name, value, [str(o) for o in options]))


def build_model(cfg: RunConfig, data: Dataset) -> nn.Module:
    """The network ``cfg`` describes, sized for ``data``, initialised from ``cfg.seed``."""
    common = dict(parameterization=cfg.parameterization, seed=cfg.seed)
    if cfg.model not in MODELS:
        return torchvision_model(cfg.model, data.input_shape, data.num_outputs, **common)
    if cfg.model == "convnet":
        if len(data.input_shape) != 3:
            raise ValueError(
                f"the convnet needs image data (N, C, H, W); {data.name} has shape {data.input_shape}"
            )
        strides = cfg.strides if cfg.strides is not None else CONV_PRESETS[cfg.preset]
        return ConvNet(
            data.input_shape[0], data.num_outputs, cfg.width, strides, cfg.kernel_size,
            norm=cfg.norm, eps=cfg.eps, **common,
        )  # fmt: skip
    if cfg.model == "mlp":
        widths = cfg.width if isinstance(cfg.width, list) else [cfg.width] * cfg.depth
        return MLP(math.prod(data.input_shape), data.num_outputs, widths, **common)
    if len(data.input_shape) != 2:
        raise ValueError(
            f"the rnn needs sequence data (N, T, features); {data.name} has shape {data.input_shape}"
        )
    if isinstance(cfg.width, list):
        raise ValueError("the rnn takes one width (its hidden size)")
    return RNN(data.input_shape[-1], cfg.width, data.num_outputs, **common)


def parameter_count(cfg: RunConfig) -> int | None:
    """Parameters of the network ``cfg`` describes, counted on the meta device (nothing allocated).

    None when the data set's shape is not known without loading it.
    """
    shape = DATA_SHAPES.get(cfg.dataset)
    if shape is None:
        return None
    data = SimpleNamespace(name=cfg.dataset, input_shape=shape.input_shape, num_outputs=shape.num_outputs)
    with torch.device("meta"):
        model = build_model(replace(cfg, seed=None), data)  # no seed: no draws on the CPU
    return sum(p.numel() for p in model.parameters())


def outputs_per_call(cfg: RunConfig) -> float | None:
    """The mean number of output elements of one synaptic-layer call on one training batch.

    Measured on the meta device (nothing allocated, nothing computed). It tells whether a run's
    steps are dominated by per-operation overhead (small values: the RNN's time steps, small
    images or batches), which is what batched runs remove. None when the data set's shape is not
    known without loading it.
    """
    cfg = cfg.resolved()
    shape = DATA_SHAPES.get(cfg.dataset)
    if shape is None or cfg.model not in MODELS:
        return None
    data = SimpleNamespace(name=cfg.dataset, input_shape=shape.input_shape, num_outputs=shape.num_outputs)
    sizes: list[int] = []
    with torch.device("meta"), torch.no_grad():
        model = build_model(replace(cfg, seed=None), data)
        hooks = [
            m.register_forward_hook(lambda m, i, o: sizes.append(o.numel())) for m in synaptic_layers(model)
        ]
        model(torch.empty(min(cfg.batch_size, shape.n_train), *shape.input_shape))
    for hook in hooks:
        hook.remove()
    return sum(sizes) / len(sizes)


def device_memory(device: torch.device) -> int | None:
    """Total memory of ``device`` in bytes (physical memory for the CPU), None where unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def check_fits(cfg: RunConfig, device: torch.device) -> None:
    """Refuse a network whose parameters and their gradients alone exceed ``device``'s memory.

    A lower bound on what training needs (data, activations and rule state come on top), so a
    run that could fit is never refused; one that cannot fails here, before anything is loaded.
    """
    count, memory = parameter_count(cfg), device_memory(device)
    if count is None or memory is None:
        return
    need = 2 * count * cfg.torch_dtype.itemsize
    if need > memory:
        raise ValueError(
            f"width {cfg.width} does not fit in memory: its {count:,} parameters and their gradients "
            f"need {_size(need)} ({cfg.dtype}) but {device} has {_size(memory)}; choose a smaller width"
        )


def rule_arguments(cfg: RunConfig) -> dict[str, Any]:
    """The keyword arguments :func:`~widealign.rules.make_rule` gets besides model, loss and seed
    (``lr`` only for a rule that takes one; learned feedback takes the optimiser's instead)."""
    takes_lr = "lr" in inspect.signature(RULES[cfg.rule].__init__).parameters
    return {"variant": cfg.rule_variant, **({"lr": cfg.lr} if takes_lr else {}), **cfg.rule_options}


def build_optimizer(cfg: RunConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD or Adam at ``cfg.lr`` over ``params``, with ``cfg.momentum`` (SGD) and ``cfg.weight_decay``.

    Whatever the rule, the optimiser steps the ``.grad`` it leaves, so momentum and weight decay
    apply to every rule alike; at the defaults this is the paper's plain SGD. ``params`` are the
    model's parameters and the rule's ``rule.feedback_parameters()`` (the feedback matrices that
    kolen-pollack, weight-mirror and information- and symmetric-alignment learn, which this
    optimiser must step: :mod:`widealign.rules.learned`), so the recipe applies to them too.
    """
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(
    cfg: RunConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule ``cfg.schedule`` over ``optimizer``, stepped once per epoch by the
    trainer; None for ``"none"``. ``"step"``: the rate times ``cfg.gamma`` every ``cfg.step_size``
    epochs (``torch.optim.lr_scheduler.StepLR``); ``"cosine"``: from ``cfg.lr`` to 0 over
    ``cfg.epochs`` epochs (``CosineAnnealingLR``, half a cosine period)."""
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return None


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present; an unavailable device is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here (use --device cpu)")
    return dev

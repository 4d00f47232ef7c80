"""Song, Xu & Lafferty (NeurIPS 2021): feedback alignment in a two-layer network.

See docs/method.md#song-xu-and-lafferty.

The network is the library's :class:`~widealign.models.TwoLayer`,

    f(x) = (1/sqrt(p)) sum_r beta_r psi(w_r . x),      psi in {identity, relu, tanh},

trained full-batch on the loss ``L = (1/2) sum_i (f(x_i) - y_i)^2`` (``half-sse``, error
``e_i = f(x_i) - y_i``) by the library's rules ``make_rule("fa" | "bp", model, loss="half-sse")``,
and plain ``torch.optim.SGD`` with ``lr = eta`` whose param groups put weight decay ``lambda`` on
``beta`` (``readout.weight``) only. One step is then exactly

    beta_r <- beta_r - (eta/sqrt(p)) sum_i e_i psi(w_r . x_i) - eta * lambda * beta_r,
    w_r    <- w_r    - (eta/sqrt(p)) sum_i e_i b_r psi'(w_r . x_i) x_i,

where ``b = rule.feedback[1]`` (a fixed N(0, I_p) draw) for fa and ``b = beta`` for bp.

Measured per step: the training loss and ``cos(beta, b) = <beta, b> / (|beta| |b|)``. For bp runs
``b`` is the vector an fa run with the same seed would use (drawn the same way, independent of the
bp dynamics), so a bp cosine is a control that should stay near its initial value (about 0).

Paper claims checked here: for p >> n the fa training loss falls to zero exponentially fast, i.e.
``log L(t)`` is eventually linear in ``t`` with negative slope (:func:`decay_rate`); and ``beta``
aligns with ``b`` only when ``lambda > 0``: weight decay removes the initial ``beta(0)``,
which is independent of ``b``, while the part of ``beta`` built by learning points along ``b``.
(With a constant lambda > 0 the loss measured here still falls, but like a power of t.)

Default step sizes (:data:`DEFAULT_ETA`). The paper used eta = 1e-4 (identity), 1e-3 (relu) and
1e-2 (tanh) on MNIST over many iterations. Here inputs have unit norm and n ~ 100, so one step
moves the errors by about eta times the n x n kernel ``(1/p) sum_r psi(w_r . x_i) psi(w_r . x_j)``
(plus fa's first-layer term), whose largest eigenvalue is O(n) times its mean off-diagonal entry.
On Gaussian inputs (nearly orthogonal) eta = 0.05 was stable in every run made (each psi with
lambda <= 0.1, relu with lambda = 1) and shows both effects within 2,000 steps; eta = 0.1
diverged at lambda = 1 (relu, p = 1000, d = 100). Digits are non-negative and strongly
correlated, so that eigenvalue is several times larger: there eta = 0.05 with lambda = 0.1 made
the loss grow for one of two seeds, and the default is 0.02. Measured numbers are in docs/song2021.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from itertools import product
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from widealign.data import load_digits
from widealign.models import TwoLayer
from widealign.rules import make_rule
from widealign.rules.fa import FeedbackAlignment
from widealign.runs.run import (
    check_writable,
    new_record,
    previous_result,
    write_result,
)
from widealign.seeding import generator
from widealign.storage import run_lock

ACTIVATIONS = ("identity", "relu", "tanh")
RULES = ("fa", "bp")
DATA = ("gaussian", "digits")

#: Default step size per data set, for every activation (unit-norm inputs, n ~ 100, half-sse).
DEFAULT_ETA: dict[str, float] = {"gaussian": 0.05, "digits": 0.02}

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class Song2021Config:
    """One training run: network, rule, optimiser, data and what to record.

    Attributes:
        activation: psi, one of ``identity``, ``relu``, ``tanh``.
        width: p, the number of hidden units.
        lam: lambda, weight decay on beta only.
        rule: ``fa`` (feedback alignment) or ``bp`` (backprop).
        eta: SGD step size; None takes :data:`DEFAULT_ETA` for the data set.
        steps: full-batch SGD steps.
        seed: seeds the network's initialisation and fa's feedback vector b.
        data: ``gaussian`` or ``digits`` (see :func:`make_data`).
        n: number of training examples.
        d: input dimension of the Gaussian data (digits have d = 64).
        target: Gaussian: ``teacher`` (default) or ``labels``; digits: ``parity`` (default) or a
            class ``"0"``..``"9"`` (one vs rest).
        data_seed: seeds the Gaussian data (fixed across ``seed`` so seeds vary only the network).
        record_every: record loss and cosine every this many steps (the last step always).
        dtype: ``float64`` or ``float32``.
    """

    activation: str = "relu"
    width: int = 1000
    lam: float = 0.0
    rule: str = "fa"
    eta: float | None = None
    steps: int = 2000
    seed: int = 0
    data: str = "gaussian"
    n: int = 100
    d: int = 200
    target: str | None = None
    data_seed: int = 0
    record_every: int = 10
    dtype: str = "float64"

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("activation", self.activation, ACTIVATIONS),
            ("rule", self.rule, RULES),
            ("data", self.data, DATA),
            ("dtype", self.dtype, tuple(_DTYPES)),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {field} {value!r}; choose one of {', '.join(allowed)}")
        if self.lam < 0:
            raise ValueError(f"lam must be non-negative, got {self.lam}")
        for name in ("seed", "data_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"{name.replace('_', ' ')} must be a non-negative integer (0, 1, 2, ...), got {value!r}"
                )
        if min(self.width, self.steps, self.n, self.d, self.record_every) <= 0:
            raise ValueError("width, steps, n, d and record_every must be positive")

    @property
    def target_kind(self) -> str:
        """``target``, or the data set's default (``teacher`` for Gaussian, ``parity`` for digits)."""
        if self.target is not None:
            return self.target
        return "parity" if self.data == "digits" else "teacher"

    @property
    def step_size(self) -> float:
        """eta, or the data set's default when ``eta`` is None."""
        return DEFAULT_ETA[self.data] if self.eta is None else self.eta


def _unit_rows(x: Tensor) -> Tensor:
    return x / x.norm(dim=1, keepdim=True)


def digits_data(n: int, target: str = "parity", dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The first ``n`` training digits, flattened to unit norm, with a +-1 regression target.

    ``target="parity"`` gives +1 for even digits and -1 for odd ones; ``target="k"`` (a digit)
    gives +1 for class k and -1 otherwise. Returns ``x`` (n x 64) and ``y`` (n x 1).
    """
    ds = load_digits()
    if not 0 < n <= len(ds.x_train):
        raise ValueError(f"n must be in 1..{len(ds.x_train)}, got {n}")
    x = _unit_rows(ds.x_train[:n].flatten(1).to(dtype))
    labels = ds.y_train[:n].argmax(1)
    if target == "parity":
        positive = labels % 2 == 0
    elif target.isdigit() and int(target) < 10:
        positive = labels == int(target)
    else:
        raise ValueError(f"digits target must be 'parity' or a class 0..9, got {target!r}")
    y = torch.where(positive, 1.0, -1.0).to(dtype)[:, None]
    return x, y


def gaussian_data(
    n: int, d: int, target: str = "teacher", seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[Tensor, Tensor]:
    """``x_i ~ N(0, I_d)/sqrt(d)`` normalised to unit norm, with a teacher or random +-1 target.

    ``target="teacher"``: ``y_i = sign(v . x_i)`` for a random unit vector v (a learnable rule);
    ``target="labels"``: independent random +-1 labels (pure memorisation). Returns (n x d, n x 1).
    """
    g = generator(seed, "song2021-data")
    x = _unit_rows(torch.randn(n, d, generator=g, dtype=torch.float64) / math.sqrt(d))
    if target == "teacher":
        y = torch.sign(x @ torch.randn(d, generator=g, dtype=torch.float64))
    elif target == "labels":
        y = torch.randint(0, 2, (n,), generator=g).to(torch.float64) * 2 - 1
    else:
        raise ValueError(f"gaussian target must be 'teacher' or 'labels', got {target!r}")
    return x.to(dtype), y.to(dtype)[:, None]


def make_data(config: Song2021Config) -> tuple[Tensor, Tensor]:
    """The training set a config names (``d`` and ``data_seed`` matter only for Gaussian data)."""
    dtype = _DTYPES[config.dtype]
    if config.data == "digits":
        return digits_data(config.n, config.target_kind, dtype)
    return gaussian_data(config.n, config.d, config.target_kind, config.data_seed, dtype)


def make_optimizer(model: TwoLayer, eta: float, lam: float) -> torch.optim.SGD:
    """Plain SGD with step ``eta`` and weight decay ``lam`` on beta (``readout.weight``) only."""
    return torch.optim.SGD(
        [
            {"params": [model.hidden.weight], "weight_decay": 0.0},
            {"params": [model.readout.weight], "weight_decay": lam},
        ],
        lr=eta,
    )


def reference_vector(model: TwoLayer, seed: int) -> Tensor:
    """The fixed feedback vector b (length p) that ``make_rule("fa", model, seed=seed)`` uses."""
    return FeedbackAlignment(model, "half-sse", seed=seed).feedback[1].flatten()


def cosine(u: Tensor, v: Tensor) -> float:
    """``<u, v> / (|u| |v|)`` of two flattened tensors."""
    u, v = u.flatten(), v.flatten()
    return float(u @ v / (u.norm() * v.norm()))


def fit_log_loss_slope(steps: Sequence[float], losses: Sequence[float]) -> float:
    """Least-squares slope of ``log(loss)`` against ``step``: ``-rate`` of ``L ~ C exp(-rate t)``.

    Fit it over a window where the decay is exponential (e.g. the second half of training).
    """
    t = torch.as_tensor(steps, dtype=torch.float64)
    z = torch.as_tensor(losses, dtype=torch.float64).log()
    if len(t) < 2:
        raise ValueError("need at least two points to fit a slope")
    tc = t - t.mean()
    return float((tc * (z - z.mean())).sum() / tc.square().sum())


def decay_rate(record: dict[str, Any], start: float = 0.5) -> float:
    """Fitted exponential rate of a record's loss: ``-slope`` of ``log L`` over a late window.

    The window is the last ``1 - start`` fraction of the part of the curve above the rounding
    floor (``1e4 * eps^2`` times the initial loss, eps of the record's dtype): once the errors
    reach machine precision the loss stops falling, and that plateau says nothing about the rate.
    """
    eps = torch.finfo(_DTYPES[record["config"]["dtype"]]).eps
    floor = 1e4 * eps**2 * record["loss"][0]
    kept = next((i for i, v in enumerate(record["loss"]) if v < floor), len(record["loss"]))
    first = min(int(start * kept), kept - 2)
    return -fit_log_loss_slope(record["steps"][first:kept], record["loss"][first:kept])


def window_slopes(record: dict[str, Any], start: float = 0.5, windows: int = 4) -> list[float]:
    """Log-loss slopes over ``windows`` equal consecutive windows from fraction ``start`` to the end."""
    steps, losses = record["steps"], record["loss"]
    first = int(round(start * (len(steps) - 1)))
    edges = [first + round(k * (len(steps) - 1 - first) / windows) for k in range(windows + 1)]
    return [fit_log_loss_slope(steps[a : b + 1], losses[a : b + 1]) for a, b in zip(edges[:-1], edges[1:])]


def run_song2021(config: Song2021Config) -> dict[str, Any]:
    """Train one configuration full-batch and return a JSON-friendly record.

    The record holds ``config`` (with the eta and target used), ``steps``, ``loss`` (half-sse of the current
    network at each recorded step, step 0 included) and ``cosine`` (cos(beta, b), see the module
    docstring; ``cosine_reference`` says which b), plus summaries: ``initial_loss``,
    ``final_loss``, ``loss_ratio``, ``final_cosine`` and ``rate`` (:func:`decay_rate`: minus the
    log-loss slope over the second half of training, before any machine-precision plateau).
    """
    torch_dtype = _DTYPES[config.dtype]
    x, y = make_data(config)
    model = TwoLayer(x.shape[1], config.width, config.activation, seed=config.seed).to(torch_dtype)
    rule = make_rule(config.rule, model, loss="half-sse", seed=config.seed)
    b = rule.feedback[1].flatten() if config.rule == "fa" else reference_vector(model, config.seed)
    optimizer = make_optimizer(model, config.step_size, config.lam)
    steps, losses, cosines = [], [], []
    for t in range(config.steps + 1):
        optimizer.zero_grad(set_to_none=True)
        loss, _ = rule.backward(x, y)
        if t % config.record_every == 0 or t == config.steps:
            steps.append(t)
            losses.append(float(loss))
            cosines.append(cosine(model.readout.weight.detach(), b))
        if not math.isfinite(float(loss)):
            raise FloatingPointError(f"training diverged at step {t} (loss {float(loss)}); lower eta")
        if t < config.steps:
            optimizer.step()
    record: dict[str, Any] = {
        "config": asdict(config) | {"eta": config.step_size, "target": config.target_kind},
        "cosine_reference": "feedback" if config.rule == "fa" else "fa-feedback-of-same-seed",
        "steps": steps,
        "loss": losses,
        "cosine": cosines,
        "initial_loss": losses[0],
        "final_loss": losses[-1],
        "loss_ratio": losses[-1] / losses[0],
        "final_cosine": cosines[-1],
    }
    record["rate"] = decay_rate(record)
    return record


def sweep_song2021(
    base: Song2021Config = Song2021Config(),
    widths: Iterable[int] = (1000,),
    lams: Iterable[float] = (0.0,),
    activations: Iterable[str] = ("relu",),
    seeds: Iterable[int] = (0,),
    rules: Iterable[str] = ("fa",),
) -> list[dict[str, Any]]:
    """Run ``base`` over the product of widths, lambdas, activations, seeds and rules.

    ``eta`` is the data set's default unless ``base.eta`` is set.
    """
    return [
        run_song2021(replace(base, width=p, lam=lam, activation=act, seed=s, rule=r))
        for p, lam, act, s, r in product(widths, lams, activations, seeds, rules)
    ]


def resolved_config(config: Song2021Config) -> dict[str, Any]:
    """The configuration as recorded: the step size and target actually used filled in."""
    return asdict(config) | {"eta": config.step_size, "target": config.target_kind}


def run_song2021_task(config: dict[str, Any], out: Path | None, progress: bool = False) -> dict[str, Any]:
    """The ``song2021`` run kind: one :func:`run_song2021` as a result record (see ``runners``).

    The per-step curves are the record's ``epochs`` (one entry per recorded step, with ``step``,
    ``train_loss`` and ``cosine``); the full :func:`run_song2021` record is kept under ``song``. Runs
    take seconds, so there is no checkpoint: an interrupted run is redone, a finished one returned.
    """
    cfg = Song2021Config(**config)
    recorded = resolved_config(cfg)
    if out is None:
        return _song2021_record(cfg, recorded)
    out = check_writable(out)
    with run_lock(out):
        previous = previous_result(out, recorded)
        if previous is not None:
            return previous
        result = _song2021_record(cfg, recorded)
        write_result(result, out)
        return result


def _song2021_record(cfg: Song2021Config, recorded: dict[str, Any]) -> dict[str, Any]:
    result = new_record("song2021", recorded, cfg.seed, torch.device("cpu"))
    start = time.perf_counter()
    try:
        song = run_song2021(cfg)
        result["status"], result["song"] = "finished", song
        result["epochs"] = [
            {"step": s, "train_loss": loss, "cosine": c}
            for s, loss, c in zip(song["steps"], song["loss"], song["cosine"])
        ]
    except FloatingPointError as err:
        result["status"], result["error"] = "diverged", str(err)
    result["wall_seconds"] = time.perf_counter() - start
    return result

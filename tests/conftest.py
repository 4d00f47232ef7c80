"""Small float64 models and batches shared by the tests (every family of docs/method.md#models)."""

from __future__ import annotations

import pathlib
import shutil

import pytest
import torch

from widealign.data import add_targets
from widealign.models import MLP, RNN, ConvNet

FAMILIES = ("mlp", "conv", "rnn")


def make_model(family: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A small float64 network of ``family``; the same seed gives the same weights."""
    if family == "mlp":
        model = MLP(5, 3, [7, 6], seed=seed, **kwargs)
    elif family == "conv":
        model = ConvNet(2, 3, [4, 5, 3], strides=[1, 2, 2], seed=seed, **kwargs)
    elif family == "rnn":
        model = RNN(1, 6, 1, seed=seed, **kwargs)
    else:
        raise ValueError(family)
    return model.double()


def make_batch(family: str, n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A float64 batch matching :func:`make_model` (conv: 6x6 images, so SAME pads asymmetrically)."""
    g = torch.Generator().manual_seed(seed)
    if family == "mlp":
        return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randn(
            n, 3, generator=g, dtype=torch.float64
        )
    if family == "conv":
        x = torch.rand(n, 2, 6, 6, generator=g, dtype=torch.float64)
        return x, torch.randn(n, 3, generator=g, dtype=torch.float64)
    x = torch.bernoulli(torch.full((n, 7, 1), 0.5, dtype=torch.float64), generator=g)
    return x, add_targets(x)


#: Few iterations for the iterative rules in the tests that run every rule (their own tests use more).
FAST_OPTIONS = {
    "activation-relaxation": {"iterations": 5},
    "predictive-coding": {"iterations": 5},
    "dynamic-inversion": {"iterations": 5},
}


def fast(name: str) -> dict:
    """Options that keep ``name`` cheap in the generic tests (none for one-step rules)."""
    return FAST_OPTIONS.get(name, {})


def loss_for(family: str) -> str:
    return "sequence-mse" if family == "rnn" else "mse"


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    """The model's current .grad by parameter name (cloned)."""
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


def sgd_steps(model, rule, family: str, steps: int, lr: float = 0.5, seed: int = 10) -> None:
    """Train ``steps`` SGD steps on fresh batches so that theta moves away from theta_0.

    ``.grad`` is left empty, so that the next ``rule.backward`` leaves its update alone there."""
    opt = torch.optim.SGD([*model.parameters(), *rule.feedback_parameters()], lr=lr)
    for k in range(steps):
        x, y = make_batch(family, seed=seed + k)
        opt.zero_grad()
        rule.backward(x, y)
        opt.step()
    opt.zero_grad()  # .grad left empty, for the next update alone


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture
def rule_registry(monkeypatch):
    """The rule registry as it is, restored after the test (rules a test registers, and installed
    entry points it fakes, do not leak into other tests)."""
    from widealign.rules import registry

    monkeypatch.setattr(registry, "_registered", dict(registry._registered))
    monkeypatch.setattr(registry, "_entry_points_loaded", registry._entry_points_loaded)
    return registry


def one_line_error(capsys) -> str:
    """The single stderr line of a failed command, without its prefix (fails if there are more)."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("widealign: error: "), err
    return err.removeprefix("widealign: error: ").rstrip("\n")


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    """Every file of ``folder`` by name, as bytes (to check that nothing changed)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def copy_of(run: pathlib.Path, tmp_path: pathlib.Path, name: str = "run") -> pathlib.Path:
    """A copy of the run folder ``run`` under ``tmp_path``."""
    return pathlib.Path(shutil.copytree(run, tmp_path / name))

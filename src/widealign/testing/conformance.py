"""The checks every packaged rule passes, as public functions a user's rule can be run through.

Like torch.optim's per-optimiser tests or gym's environment checker: each ``check_*`` builds small
float64 models (:func:`small_model`), runs the rule and raises ``AssertionError`` naming what
failed. ``rule`` is a registered name, an import path ``"package.module:Class"`` or the class;
``options`` go to :func:`widealign.rules.make_rule` (``seed``, the rule's own settings).

* :func:`check_state_round_trip`: everything the rule's next update depends on is in its
  ``state_dict`` (a rule built with another seed and loaded continues bit for bit).
* :func:`check_accumulation`: ``rule.backward`` adds its update to ``.grad``, as
  ``loss.backward()`` does, and leaves the parameters it does not train as they were.
* :func:`check_half_batches`: two half-batches accumulated equal one batch (for rules whose update
  is a batch mean of per-example updates and whose state does not step inside ``backward``).
* :func:`check_batched`: where the rule declares ``batchable``, every member of a batched run
  equals its separate run.
* :func:`check_reads`: where the rule declares what it reads of the current forward weights
  (``Rule.reads``), :func:`~widealign.testing.forward_weight_reads` finds that in a step.

:func:`check_rule` runs the ones that apply and returns a line per check passed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from widealign.data.base import Dataset
from widealign.models import MLP, RNN, ConvNet
from widealign.rules import Rule, get_rule, make_rule, rule_options
from widealign.testing.transport import forward_weight_reads, read_kind
from widealign.train.batched import BatchedTrainer
from widealign.train.loop import Trainer

#: The small models the checks use, by kind; ``seed`` draws the initial weights.
KINDS: dict[str, Callable[[int], nn.Module]] = {
    "mlp": lambda seed: MLP(2 * 6 * 6, 3, [5, 4], seed=seed),
    "convnet": lambda seed: ConvNet(2, 3, [3, 4], [1, 2], seed=seed),
    "rnn": lambda seed: RNN(2, 5, 1, seed=seed),
}
_TOL = dict(rtol=1e-10, atol=1e-12)


def small_model(kind: str = "mlp", seed: int = 0) -> nn.Module:
    """A small float64 model of ``kind`` (mlp, convnet or rnn)."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    return KINDS[kind](seed).double()


def small_data(kind: str = "mlp", size: int = 30, seed: int = 7) -> Dataset:
    """A seeded in-memory data set for ``kind``: 3-class images (2 x 6 x 6; mse targets one-hot
    minus 0.1) for the mlp and convnet, running sums of 4-step sequences for the rnn; a third held out."""
    g = torch.Generator().manual_seed(seed)
    split = size * 2 // 3
    if kind == "rnn":
        x = torch.randn(size, 4, 2, generator=g, dtype=torch.float64)
        y = x.sum(-1, keepdim=True).cumsum(1) * 0.3
        return Dataset("seq", x[:split], y[:split], x[split:], y[split:], "regression", 1, "sequence-mse")
    x = torch.randn(size, 2, 6, 6, generator=g, dtype=torch.float64)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (size,), generator=g), 3).double() - 0.1
    return Dataset("img", x[:split], y[:split], x[split:], y[split:], "classification", 3)


def _loss(kind: str) -> str:
    return "sequence-mse" if kind == "rnn" else "mse"


def _batch(kind: str, size: int = 8, seed: int = 0) -> tuple[Tensor, Tensor]:
    data = small_data(kind, size=3 * size, seed=seed)
    return data.x_train[:size], data.y_train[:size]


def _grads(model: nn.Module) -> dict[str, Tensor | None]:
    return {n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()}


def _assert_same(got: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    assert got.keys() == expected.keys(), f"{what}: entries {sorted(got)} != {sorted(expected)}"
    for name, value in expected.items():
        if value is None or got[name] is None:
            assert value is None and got[name] is None, f"{what}: {name} is None on one side only"
        else:
            torch.testing.assert_close(got[name], value, **_TOL, msg=f"{what}: {name} differs")


def _step(rule: Rule, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    rule.backward(x, y)
    optimizer.step()


def check_state_round_trip(rule: str | type[Rule], kind: str = "mlp", steps: int = 2, **options: Any) -> None:
    """Train ``steps`` SGD steps, load model, rule and optimiser state into a twin built with another
    seed, and check that the next step's update, parameters and rule state are the same."""
    options = {"seed": 0, **options}
    model, twin_model = small_model(kind, seed=1), small_model(kind, seed=2)
    first = make_rule(rule, model, _loss(kind), **options)
    optimizer = torch.optim.SGD([*model.parameters(), *first.feedback_parameters()], lr=0.1)
    for k in range(steps):
        _step(first, optimizer, *_batch(kind, seed=10 + k))
    twin = make_rule(rule, twin_model, _loss(kind), **{**options, "seed": options["seed"] + 1})
    twin_optimizer = torch.optim.SGD([*twin_model.parameters(), *twin.feedback_parameters()], lr=0.1)
    twin_model.load_state_dict(model.state_dict())
    twin.load_state_dict(first.state_dict())
    twin_optimizer.load_state_dict(optimizer.state_dict())
    x, y = _batch(kind, seed=10 + steps)
    _step(first, optimizer, x, y)
    _step(twin, twin_optimizer, x, y)
    _assert_same(_grads(twin_model), _grads(model), "the update after loading the state")
    _assert_same(dict(twin_model.named_parameters()), dict(model.named_parameters()), "the parameters")
    _assert_same(twin.state_dict(), first.state_dict(), "the rule state after a step")


def check_accumulation(rule: str | type[Rule], kind: str = "mlp", **options: Any) -> None:
    """``rule.backward`` adds its update to a ``.grad`` that holds a gradient already (``G + update``,
    the update as a twin in the same state computes it from empty ``.grad``), like ``loss.backward()``."""
    model = small_model(kind, seed=1)
    twin_model = copy.deepcopy(model)
    first = make_rule(rule, model, _loss(kind), **options)
    twin = make_rule(rule, twin_model, _loss(kind), **options)
    x, y = _batch(kind)
    first.prepare(x)
    twin.prepare(x)
    twin.load_state_dict(first.state_dict())
    g = torch.Generator().manual_seed(3)
    held = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = held[n].clone()
    first.backward(x, y)
    twin.backward(x, y)
    update = _grads(twin_model)
    expected = {n: held[n] if update[n] is None else held[n] + update[n] for n in held}
    _assert_same(_grads(model), expected, "held gradient + the rule's update")


def check_half_batches(rule: str | type[Rule], kind: str = "mlp", **options: Any) -> None:
    """``backward`` on two halves of a batch, accumulated, equals twice its update on the whole batch
    (the loss is a batch mean). Holds for rules whose update is a batch mean of per-example updates
    and whose state does not step inside ``backward``; not with batch statistics (the convnet's
    normalisation), so the mlp is the default."""
    model = small_model(kind, seed=1)
    twin_model = copy.deepcopy(model)
    first = make_rule(rule, model, _loss(kind), **options)
    twin = make_rule(rule, twin_model, _loss(kind), **options)
    x, y = _batch(kind, size=8)
    first.prepare(x)
    twin.prepare(x)
    twin.load_state_dict(first.state_dict())
    first.backward(x[:4], y[:4])
    first.backward(x[4:], y[4:])
    twin.backward(x, y)
    whole = _grads(twin_model)
    _assert_same(_grads(model), {n: None if g is None else 2 * g for n, g in whole.items()}, "two halves")


def check_batched(rule: str | type[Rule], kind: str = "mlp", epochs: int = 2, **options: Any) -> None:
    """Three seeds trained as one batched run (:mod:`widealign.train.batched`) end where their
    separate runs end: histories, parameters and rule state. Only for ``batchable`` rules."""
    cls = get_rule(rule)
    if not cls.batchable:
        raise ValueError(f"{cls.name} does not declare batchable = True")
    data = small_data(kind)

    def trainers() -> list[Trainer]:
        out = []
        for seed in (0, 1, 2):
            model = small_model(kind, seed)
            r = make_rule(cls, model, _loss(kind), **{**options, "seed": seed})
            opt = torch.optim.SGD([*model.parameters(), *r.feedback_parameters()], lr=0.05)
            out.append(Trainer(model, r, opt, data, 8, seed=seed, progress=False))
        return out

    separate = trainers()
    for t in separate:
        t.fit(epochs)
    members = trainers()
    BatchedTrainer(members, rule_options=options, progress=False).fit(epochs)
    for k, (a, b) in enumerate(zip(separate, members)):
        ha = [(r.train_loss, r.test_loss) for r in a.history]
        hb = [(r.train_loss, r.test_loss) for r in b.history]
        torch.testing.assert_close(torch.tensor(hb), torch.tensor(ha), **_TOL, msg=f"member {k}: losses")
        _assert_same(dict(b.model.named_parameters()), dict(a.model.named_parameters()), f"member {k}")
        _assert_same(b.rule.state_dict(), a.rule.state_dict(), f"member {k}: rule state")


def check_reads(rule: str | type[Rule], kind: str = "mlp", variant: str = "default", **options: Any) -> str:
    """Check that one step of ``rule`` (after one SGD step away from theta_0) reads of the current
    forward weights what the rule declares (``Rule.reads_for``), as
    :func:`~widealign.testing.forward_weight_reads` finds it; returns a line saying what it reads.

    A rule that inherits its parent's declaration and reads more (fa's subclass that copies ``W``
    into its feedback) fails here."""
    cls = get_rule(rule)
    own = {k: v for k, v in options.items() if k in rule_options(cls)}
    declared = cls.reads_for(own, variant, recurrent=kind == "rnn")
    assert declared is not None, f"{cls.name} does not declare what it reads (set the class attribute reads)"
    model = small_model(kind, seed=1)
    instance = make_rule(cls, model, _loss(kind), variant=variant, **options)
    _step(instance, torch.optim.SGD(model.parameters(), lr=0.05), *_batch(kind, seed=10))
    found = forward_weight_reads(instance, *_batch(kind, seed=11))
    assert read_kind(found) == declared, (
        f"{cls.name} on the {kind} declares reads={declared!r}, but the check finds it reads "
        f"{', '.join(sorted(found)) or 'nothing'}"
    )
    return f"ok {cls.name} on the {kind}: reads {declared}"


def check_rule(rule: str | type[Rule], half_batches: bool = True, **options: Any) -> list[str]:
    """Run every check that applies to ``rule`` (the batched one where it is ``batchable``, the
    reads where it declares them, on the rnn too where it ``supports_recurrent``;
    ``half_batches=False`` skips that identity for rules it does not hold for); a line per check
    passed."""
    cls = get_rule(rule)
    kinds = ["mlp", "convnet"] + (["rnn"] if cls.supports_recurrent else [])
    passed = []
    for kind in kinds:
        check_state_round_trip(cls, kind, **options)
        check_accumulation(cls, kind, **options)
        passed += [
            f"ok {cls.name} on the {kind}: state round-trip",
            f"ok {cls.name} on the {kind}: accumulation",
        ]
        if cls.reads is not None:
            passed.append(check_reads(cls, kind, **options))
    if half_batches:
        check_half_batches(cls, **options)
        passed.append(f"ok {cls.name}: two half-batches equal one batch")
    if cls.batchable:
        check_batched(cls, **options)
        passed.append(f"ok {cls.name}: batched members equal their separate runs")
    return passed

"""Learned feedback is stepped by the user's optimiser: B.grad is the documented update, exactly.

kolen-pollack, weight-mirror (both variants), information-alignment and symmetric-alignment write
their B update into ``B.grad`` (``rule.feedback_parameters()``); the optimiser's step then moves B
as it moves W. Each rule's ``B.grad`` is recomputed here from its docstring's formula, by hand,
and SGD with momentum and weight decay is applied to it by hand.
"""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import make_batch, make_model
from widealign.models import synaptic_layers
from widealign.rules import make_rule
from widealign.runs.config import RunConfig

LEARNED = ["kolen-pollack", "weight-mirror", "information-alignment", "symmetric-alignment"]
#: Every variant and option whose B update has its own formula below.
CASES = [
    ("kolen-pollack", {"weight_decay": 0.03}),
    ("weight-mirror", {"mirror_rate": 0.2, "weight_decay": 0.5, "noise_std": 1.5}),
    ("weight-mirror", {"variant": "kunin", "alpha": 0.05, "beta": 0.3, "noise_std": 0.7}),
    ("information-alignment", {"alpha": 0.2, "beta": 0.1, "gamma": 0.05}),
    ("information-alignment", {"alpha": 0.2, "beta": 0.1, "gamma": 0.05, "bias": False}),
    ("symmetric-alignment", {"alpha": 0.1, "beta": 0.3}),
]


def layer_inputs(model, x) -> list[torch.Tensor]:
    """Each synaptic layer's input in a forward pass (the MLP calls each layer once)."""
    seen = []
    hooks = [
        layer.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
        for layer in synaptic_layers(model)
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def expected_feedback_grads(name: str, options: dict, rule, model, x, y) -> list[torch.Tensor]:
    """dR/dB (or Kolen-Pollack's G + lambda B) from the formulas in the rules' docstrings, written
    out for dense layers, before ``rule.backward(x, y)`` is called."""
    layers = synaptic_layers(model)
    bs = [b.detach().clone() for b in rule.feedback_parameters()]
    ws = [layer.weight.detach().clone() for layer in layers]
    out = []
    if name == "kolen-pollack":
        fa = make_rule("fa", copy.deepcopy(model))
        fa.set_feedback(bs)
        fa.backward(x, y)
        g = [layer.weight.grad for layer in synaptic_layers(fa.model)]
        return [gi + options["weight_decay"] * b for gi, b in zip(g, bs)]
    if name == "symmetric-alignment":
        return [
            layer.scale**2 * (2 * options["alpha"] * b - options["beta"] * w)
            for layer, b, w in zip(layers, bs, ws)
        ]
    inputs = layer_inputs(model, x)
    if name == "weight-mirror":  # the noise: the rule's stream for this step, one draw per layer in order
        g = rule.step_generator("mirror")
        noise = [options["noise_std"] * torch.randn(xi.shape, generator=g, dtype=xi.dtype) for xi in inputs]
        for layer, b, w, xi in zip(layers, bs, ws, noise):
            y = layer.scale * xi @ w.T
            corr = y.T @ xi / len(xi)  # mean_n y_n xi_n^T
            if options.get("variant") == "kunin":
                s = layer.scale
                out.append(2 * options["alpha"] * s**2 * b - options["beta"] * s * corr)
            else:
                out.append(options["mirror_rate"] * (options["weight_decay"] * b - corr / layer.scale))
        return out
    for layer, b, w, xin in zip(layers, bs, ws, inputs):  # information alignment
        s = layer.scale
        c = layer.bias.detach() if options.get("bias", True) else torch.zeros_like(layer.bias)
        z = s * xin @ w.T + c  # A_W x + b, one row per sample
        amp = -s * z.T @ xin / len(xin)
        null = 2 * s**2 * (z.T @ z / len(z)) @ b
        out.append(options["alpha"] * amp + options["beta"] * null + 2 * options["gamma"] * s**2 * b)
    return out


def model_with_biases():
    model = make_model("mlp")
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for layer in synaptic_layers(model):
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g, dtype=layer.bias.dtype))
    return model


@pytest.mark.parametrize(("name", "options"), CASES)
def test_the_feedback_step_is_the_optimiser_applied_to_the_documented_update(name, options):
    """SGD with momentum and weight decay over model and feedback: B after each step equals the
    same SGD written by hand on the formula's B.grad (float64, to rounding)."""
    model = model_with_biases()
    rule = make_rule(name, model, seed=3, **options)
    lr, momentum, decay = 0.1, 0.9, 1e-2
    opt = torch.optim.SGD(
        [*model.parameters(), *rule.feedback_parameters()], lr=lr, momentum=momentum, weight_decay=decay
    )
    buffers = None
    for step in range(3):
        x, y = make_batch("mlp", seed=40 + step)
        grads = expected_feedback_grads(name, options, rule, model, x, y)
        before = [b.detach().clone() for b in rule.feedback_parameters()]
        opt.zero_grad()
        rule.backward(x, y)
        for b, e in zip(rule.feedback_parameters(), grads):
            torch.testing.assert_close(b.grad, e, rtol=1e-12, atol=1e-14)
        opt.step()
        d = [g + decay * b for g, b in zip(grads, before)]
        buffers = d if buffers is None else [momentum * m + di for m, di in zip(buffers, d)]
        for b, b0, m in zip(rule.feedback_parameters(), before, buffers):
            torch.testing.assert_close(b.detach(), b0 - lr * m, rtol=1e-12, atol=1e-14)


def test_information_alignment_bias_enters_its_update():
    """With non-zero biases the default (Kunin et al.'s code) and ``bias=False`` differ."""
    x, y = make_batch("mlp")
    updates = []
    for bias in (True, False):
        rule = make_rule("information-alignment", model_with_biases(), seed=3, bias=bias)
        rule.backward(x, y)
        updates.append([b.grad for b in rule.feedback_parameters()])
    assert all(not torch.allclose(a, b) for a, b in zip(*updates))


def test_kolen_pollack_from_python_tracks_w_at_the_optimisers_rate():
    """The issue's repro: from Python, SGD at lr 0.05, 20 steps; B - W must not grow (it shrinks by
    exactly (1 - lr*lambda) per step). The old default stepped B at 1.0 whatever the optimiser."""
    model = make_model("conv")
    rule = make_rule("kolen-pollack", model, seed=1)
    opt = torch.optim.SGD([*model.parameters(), *rule.feedback_parameters()], lr=0.05)
    layers = synaptic_layers(model)

    def distance() -> float:
        return (
            sum(float((b - layer.weight).detach().square().sum()) for b, layer in zip(rule.feedback, layers))
            ** 0.5
        )

    start = distance()
    for step in range(20):
        opt.zero_grad()
        rule.backward(*make_batch("conv", seed=60 + step))
        opt.step()
    assert distance() == pytest.approx((1 - 0.05 * 1e-4) ** 20 * start, rel=1e-10)


@pytest.mark.parametrize("name", LEARNED)
def test_an_optimiser_without_the_feedback_trips_the_next_backward(name):
    model = make_model("mlp")
    rule = make_rule(name, model, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # the feedback forgotten
    opt.zero_grad()
    rule.backward(*make_batch("mlp"))
    opt.step()
    opt.zero_grad()
    with pytest.raises(RuntimeError, match=r"rule.feedback_parameters\(\) in your optimiser") as err:
        rule.backward(*make_batch("mlp", seed=2))
    assert "\n" not in str(err.value)


def test_accumulating_without_a_step_does_not_trip():
    model = make_model("mlp")
    rule = make_rule("kolen-pollack", model, seed=1)
    opt = torch.optim.SGD([*model.parameters(), *rule.feedback_parameters()], lr=0.1)
    for step in range(3):
        opt.zero_grad()
        rule.backward(*make_batch("mlp", seed=2 * step))
        rule.backward(*make_batch("mlp", seed=2 * step + 1))
        opt.step()


def test_frozen_feedback_stays_fixed_and_does_not_trip():
    model = make_model("mlp")
    rule = make_rule("weight-mirror", model, seed=1).freeze_feedback()
    start = [b.clone() for b in rule.feedback]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        opt.zero_grad()
        rule.backward(*make_batch("mlp", seed=step))
        opt.step()
    assert all(b.grad is None for b in rule.feedback_parameters())
    assert all(torch.equal(a, b) for a, b in zip(start, rule.feedback))


@pytest.mark.parametrize("name", LEARNED)
def test_lr_is_a_one_line_error_that_names_the_optimiser(name):
    from widealign.rules import get_rule

    for make in (
        lambda: make_rule(name, make_model("mlp"), lr=0.1),
        lambda: get_rule(name)(make_model("mlp"), lr=0.1),
    ):
        with pytest.raises(ValueError, match=r"takes no lr.*rule.feedback_parameters\(\)") as err:
            make()
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", LEARNED)
def test_state_round_trip_with_momentum(name):
    """Model, rule (B) and optimiser state (B's momentum) loaded into a twin with another seed:
    the next step is the same."""
    model, twin_model = make_model("mlp"), make_model("mlp", seed=5)
    rule, twin = make_rule(name, model, seed=1), make_rule(name, twin_model, seed=2)

    def sgd(m, r):
        return torch.optim.SGD([*m.parameters(), *r.feedback_parameters()], lr=0.1, momentum=0.9)

    opt, twin_opt = sgd(model, rule), sgd(twin_model, twin)
    for step in range(2):
        opt.zero_grad()
        rule.backward(*make_batch("mlp", seed=step))
        opt.step()
    twin_model.load_state_dict(model.state_dict())
    twin.load_state_dict(rule.state_dict())
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # as from a checkpoint: no shared buffers
    for r, o in ((rule, opt), (twin, twin_opt)):
        o.zero_grad()
        r.backward(*make_batch("mlp", seed=7))
        o.step()
    for a, b in zip(rule.feedback, twin.feedback):
        assert torch.equal(a, b)
    for a, b in zip(model.parameters(), twin_model.parameters()):
        assert torch.equal(a, b)


def test_weight_mirror_variants_and_a_rules_own_variant_names():
    model = make_model("mlp")
    assert make_rule("weight-mirror", model).variant == "akrout"
    assert make_rule("weight-mirror", model, variant="kunin").variant == "kunin"
    assert make_rule("fa", model).variant == "default"
    with pytest.raises(ValueError, match="fa has no 'kunin' variant"):
        make_rule("fa", model, variant="kunin")
    with pytest.raises(ValueError, match="weight-mirror has no 'reference' variant"):
        make_rule("weight-mirror", model, variant="reference")
    assert RunConfig(rule="weight-mirror", variant="kunin").resolved().rule_variant == "kunin"
    assert RunConfig(rule="fa", variant="reference").resolved().rule_variant == "default"
    with pytest.raises(ValueError, match="unknown variant 'kunin' for bp"):
        RunConfig(rule="bp", variant="kunin").resolved()


def test_the_trainer_puts_the_feedback_in_its_optimiser(tmp_path):
    """widealign's own runs step B with the run's optimiser: a digits run of kolen-pollack takes two
    steps an epoch (the trip-wire would stop the second) and its optimiser holds B."""
    from widealign.runs import train_run
    from widealign.runs.config import build_model
    from widealign.runs.run import load_data

    cfg = RunConfig(
        rule="kolen-pollack", dataset="digits", width=4, epochs=1, train_size=40, batch_size=20, lr=0.5
    )
    assert train_run(cfg, tmp_path / "run", progress=False)["status"] == "finished"
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    (group,) = state["optimizer"]["param_groups"]
    model = build_model(cfg.resolved(), load_data(cfg.resolved()))
    feedback = [k for k in state["rule"] if k.startswith("feedback_")]
    assert len(group["params"]) == len(list(model.parameters())) + len(feedback) > len(feedback) > 0


@pytest.mark.parametrize("variant", ["akrout", "kunin"])
def test_weight_mirror_on_a_convolution_is_its_formula(variant):
    """On a 3x3 stride-1 convolution (padding 1) ``mean_n y_n xi_n^T`` is the weight-gradient
    correlation of the noise and the layer's response, computed here with torch's conv2d_weight."""
    from widealign.models import Conv2d

    model = torch.nn.Sequential(Conv2d(2, 3, 3, generator=torch.Generator().manual_seed(1))).double()
    options = {"mirror_rate": 0.3, "weight_decay": 0.4, "alpha": 0.05, "beta": 0.2, "noise_std": 1.3}
    rule = make_rule("weight-mirror", model, seed=2, variant=variant, **options)
    layer, b = model[0], rule.feedback_0.detach().clone()
    w, s = layer.weight.detach(), layer.scale
    x = torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    xi = options["noise_std"] * torch.randn(x.shape, generator=rule.step_generator("mirror"), dtype=x.dtype)
    y = s * torch.nn.functional.conv2d(xi, w, padding=1)
    corr = torch.nn.grad.conv2d_weight(xi, w.shape, y, padding=1) / len(xi)  # mean_n y_n xi_n^T
    if variant == "akrout":
        expected = options["mirror_rate"] * (options["weight_decay"] * b - corr / s)
    else:
        expected = 2 * options["alpha"] * s**2 * b - options["beta"] * s * corr
    rule.backward(x, torch.zeros(5, 3, 6, 6, dtype=torch.float64))
    torch.testing.assert_close(rule.feedback_0.grad, expected, rtol=1e-12, atol=1e-14)

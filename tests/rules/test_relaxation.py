"""The relaxation rules (docs/relaxation.md): activation relaxation, predictive coding, PAL and
dynamic inversion, each against an independent reference (backprop, a pseudo-inverse, the forward
weights), plus their options and state."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from conftest import grads, make_batch, make_model
from widealign.models import Dense
from widealign.rules import make_rule, rule_options
from widealign.rules.layerwise import Chain
from widealign.seeding import generator

RELAXATION = ["activation-relaxation", "predictive-coding", "pal-simplified", "dynamic-inversion"]
FEED_FORWARD = ["mlp", "conv"]


def bp_grads(family: str) -> dict[str, torch.Tensor]:
    model = make_model(family)
    make_rule("bp", model).backward(*make_batch(family))
    return grads(model)


def rule_grads(family: str, name: str, **options) -> dict[str, torch.Tensor]:
    model = make_model(family)
    make_rule(name, model, **options).backward(*make_batch(family))
    return grads(model)


def relative_error(g: dict, ref: dict) -> float:
    num = sum(float((g[k] - ref[k]).square().sum()) for k in ref)
    return math.sqrt(num / sum(float(r.square().sum()) for r in ref.values()))


@pytest.mark.parametrize("family", FEED_FORWARD)
def test_chain_forward_is_the_models_forward(family):
    model = make_model(family)
    x, _ = make_batch(family)
    _, a = Chain(model, "test").forward(x)
    torch.testing.assert_close(a[-1], model(x), rtol=0, atol=0)


@pytest.mark.parametrize("family", FEED_FORWARD)
def test_activation_relaxation_converges_to_backprop_at_the_rate_one_minus_step(family):
    """Measured (float64; MLP / conv net): relative error 0.10 / 0.39 after 50 iterations, 8.5e-4 /
    4.2e-3 after 100, 4.2e-8 / 2.7e-7 after 200; from 100 to 200 it shrinks by ~0.905 / 0.908 per
    iteration, approaching 1 - step = 0.9 (lower layers carry a polynomial factor in n)."""
    ref = bp_grads(family)
    runs = (25, 50, 100, 200)
    errors = {
        n: relative_error(rule_grads(family, "activation-relaxation", iterations=n, tol=0), ref) for n in runs
    }
    assert errors[25] > errors[50] > errors[100] > errors[200]
    for n, err in errors.items():
        assert err < 10 * n**2 * 0.9**n, (n, err)
    assert errors[200] < 1e-5
    rate = (errors[200] / errors[100]) ** (1 / 100)
    assert 0.88 < rate < 0.93


def test_activation_relaxation_relaxations_change_the_update():
    ref = bp_grads("mlp")
    assert relative_error(rule_grads("mlp", "activation-relaxation", derivatives=False), ref) > 0.05
    assert relative_error(rule_grads("mlp", "activation-relaxation", feedback="learned"), ref) > 0.05


@pytest.mark.parametrize("family", FEED_FORWARD)
def test_predictive_coding_with_fixed_predictions_is_backprop_after_one_iteration_per_layer(family):
    ref = bp_grads(family)
    hidden = len(Chain(make_model(family), "test")) - 1
    exact = rule_grads(family, "predictive-coding", iterations=hidden, step=1.0)
    for name in ref:
        torch.testing.assert_close(exact[name], ref[name], rtol=1e-10, atol=1e-13)
    short = rule_grads(family, "predictive-coding", iterations=hidden - 1, step=1.0)
    assert relative_error(short, ref) > 0.1  # one iteration short, the lowest layer has no error yet


def test_predictive_coding_defaults_approximate_backprop():
    ref = bp_grads("mlp")
    assert relative_error(rule_grads("mlp", "predictive-coding", tol=0), ref) < 1e-3
    assert relative_error(rule_grads("mlp", "predictive-coding"), ref) < 2e-3  # + the convergence stop
    # without the fixed-prediction assumption the errors spread over the layers: same direction only
    standard = rule_grads("mlp", "predictive-coding", fixed_predictions=False)
    cos = sum(float((standard[k] * ref[k]).sum()) for k in ref)
    cos /= math.sqrt(sum(float(v.square().sum()) for v in standard.values()))
    cos /= math.sqrt(sum(float(v.square().sum()) for v in ref.values()))
    assert cos > 0.5


def test_learned_backward_weights_receive_the_forward_update():
    for name in ("activation-relaxation", "predictive-coding"):
        model = make_model("mlp")
        rule = make_rule(name, model, feedback="learned", feedback_lr_scale=0.3, seed=2)
        before = [None if b is None else b.clone() for b in rule.feedback]
        rule.backward(*make_batch("mlp"))
        assert before[0] is None and rule.feedback[0] is None
        for b0, b, layer in zip(before[1:], rule.feedback[1:], rule.layers[1:]):
            torch.testing.assert_close(b, b0 - 0.3 * layer.weight.grad, rtol=0, atol=1e-15)


def test_learned_error_connectivity_is_updated_and_inference_still_converges():
    model = make_model("conv")
    rule = make_rule(
        "predictive-coding", model, error_connectivity="learned", seed=3, iterations=100, step=0.1
    )
    v0 = rule.error_weight_1.clone()
    assert v0.shape == (4, 4) and (v0 >= 0).all()
    rule.backward(*make_batch("conv"))
    assert not torch.equal(rule.error_weight_1, v0)
    assert relative_error(grads(model), bp_grads("conv")) < 0.05


def linear_two_layer(width: int, outputs: int, seed: int = 0) -> nn.Module:
    g = generator(seed, "model")
    return nn.Sequential(Dense(20, width, generator=g), Dense(width, outputs, generator=g)).double()


def angle(b: torch.Tensor, w: torch.Tensor) -> float:
    cos = float((b * w).sum() / (b.norm() * w.norm()))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def train_linear(model: nn.Module, name: str, steps: int, seed: int = 3) -> list[float]:
    """Fit a random linear map with SGD; the angle between feedback_1 and W_1 after every step."""
    rule = make_rule(name, model, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(10, 20, generator=g, dtype=torch.float64) / math.sqrt(20)
    angles = []
    for _ in range(steps):
        x = torch.randn(100, 20, generator=g, dtype=torch.float64)
        opt.zero_grad()
        rule.backward(x, x @ teacher.T)
        opt.step()
        angles.append(angle(rule.feedback[1], model[1].weight.detach()))
    return angles


def test_pal_feedback_aligns_with_the_forward_weights_within_50_steps():
    """Measured: ~87 degrees after 1 step, ~9 after 50, ~7 after 100 (width 64); fa stays near 90."""
    pal = train_linear(linear_two_layer(64, 10), "pal-simplified", 50)
    assert pal[0] > 60 and pal[-1] < 20
    fa = train_linear(linear_two_layer(64, 10), "fa", 5)
    assert fa[-1] > 60


def test_pal_noise_is_on_and_feedback_tends_to_sigma2_over_regularizer_times_w():
    model = linear_two_layer(32, 10)
    rule = make_rule("pal-simplified", model, sigma=0.2, regularizer=0.02, feedback_lr=5.0, seed=1)  # ratio 2
    x = torch.randn(200, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _, out = rule.backward(x, torch.zeros(200, 10, dtype=torch.float64))
    assert not torch.allclose(out, model(x))  # the forward pass carried noise
    for _ in range(60):
        rule.backward(x, model(x).detach())  # zero error: W stays, only B learns
    ratio = float(rule.feedback[1].norm() / model[1].weight.detach().norm())
    assert 1.6 < ratio < 2.5 and angle(rule.feedback[1], model[1].weight.detach()) < 15


def test_dynamic_inversion_converges_to_the_pseudo_inverse_target():
    """Linear 8 -> 3 readout, B = -W^T, alpha = 0: W B - alpha I = -W W^T is negative definite."""
    model = nn.Sequential(Dense(6, 8), Dense(8, 3)).double()
    torch.manual_seed(0)
    for layer in model:
        layer.reset_parameters()
    rule = make_rule("dynamic-inversion", model, alpha=0.0, iterations=3000, dt=0.1, tol=0, solver="dynamics")
    assert rule.stability()[1] < 0
    w = model[1].scale * model[1].weight.detach()
    delta = torch.randn(5, 3, dtype=torch.float64)
    r_x = rule.invert(1, delta, torch.zeros(5, 8, dtype=torch.float64))
    target = delta @ torch.linalg.pinv(w).T
    torch.testing.assert_close(r_x, target, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(r_x @ w.T, delta, rtol=1e-9, atol=1e-12)
    short = make_rule("dynamic-inversion", model, alpha=0.0, iterations=10, dt=0.1, solver="dynamics")
    assert not torch.allclose(
        short.invert(1, delta, torch.zeros(5, 8, dtype=torch.float64)), target, atol=1e-3
    )


def test_dynamic_inversion_update_uses_the_inverted_error():
    model = nn.Sequential(Dense(6, 8), Dense(8, 3)).double()
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    rule = make_rule("dynamic-inversion", model, alpha=0.0, iterations=3000, tol=0, solver="dynamics")
    rule.backward(x, y)
    with torch.no_grad():
        e = 2 * (model(x) - y) / y.numel()
        w = model[1].scale * model[1].weight
        hidden = e @ torch.linalg.pinv(w).T  # dL/du_1 stands in: minus the inverted change of -e
    torch.testing.assert_close(model[0].weight.grad, model[0].scale * hidden.T @ x, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(model[1].weight.grad, model[1].scale * e.T @ model[0](x).detach())


def test_dynamic_inversion_warns_when_unstable_and_not_adjusting():
    unstable = "dynamic-inversion: the inversion dynamics have an eigenvalue with real part >= 0 at layer"
    with pytest.warns(RuntimeWarning, match=unstable):
        make_rule("dynamic-inversion", make_model("mlp"), feedback="random", stability_every=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_rule("dynamic-inversion", make_model("mlp"))


def block_abscissa(rule, index: int) -> float:
    layer = rule.layers[index]
    w = layer.scale * layer.weight.detach()
    b = layer.scale * rule.feedback[index].T
    out, inp = w.shape
    m = torch.cat(
        [
            torch.cat([-torch.eye(inp, dtype=w.dtype), b], 1),
            torch.cat([w, -rule.alpha * torch.eye(out, dtype=w.dtype)], 1),
        ]
    )
    return float(torch.linalg.eigvals(m).real.max())


@pytest.mark.parametrize("widths", [(5, [7, 6], 3), (5, [4, 9], 6)])
def test_dynamic_inversion_stability_is_the_abscissa_of_the_dynamics_jacobian(widths):
    """The quadratic-root shortcut equals the eigenvalues of [[-I, B], [W, -alpha I]] directly."""
    inp, hidden, out = widths
    from widealign.models import MLP

    rule = make_rule(
        "dynamic-inversion",
        MLP(inp, out, hidden, seed=1).double(),
        feedback="random",
        stability_every=0,
        alpha=0.05,
    )
    for index, value in enumerate(rule.stability()[1:], start=1):
        assert value == pytest.approx(block_abscissa(rule, index), abs=1e-10)


def test_dynamic_inversion_adjusts_unstable_feedback_at_creation_and_during_training():
    model = make_model("mlp")
    rule = make_rule("dynamic-inversion", model, feedback="random", seed=3)
    assert int(rule.adjustments.sum()) >= 1 and len(rule.adjustment_log) == int(rule.adjustments.sum())
    assert all(s is None or s < 0 for s in rule.stability())
    before = int(rule.adjustments[2])
    with torch.no_grad():
        model.layers[2].weight.neg_()  # W B turns positive definite: the dynamics become unstable
    assert rule.stability()[2] > 0
    rule.backward(*make_batch("mlp"))
    assert int(rule.adjustments[2]) == before + 1 and rule.step_stats()["stability_adjustments"] >= 1
    step, layer, unstable, stable = rule.adjustment_log[-1]
    assert (step, layer) == (0, 2) and unstable > 0 > -0.01 >= stable
    assert rule.stability()[2] == pytest.approx(stable)
    rule.backward(*make_batch("mlp"))
    assert rule.step_stats()["stability_adjustments"] == 0


def test_dynamic_inversion_closed_form_is_the_fixed_point_of_the_dynamics():
    ref = rule_grads("mlp", "dynamic-inversion", iterations=20000, dt=0.1, tol=0, solver="dynamics")
    closed = rule_grads("mlp", "dynamic-inversion", solver="closed-form")
    for name in ref:
        torch.testing.assert_close(closed[name], ref[name], rtol=1e-8, atol=1e-11)
    with pytest.raises(ValueError, match="solver closed-form supports dense layers only"):
        make_rule("dynamic-inversion", make_model("conv"), solver="closed-form")


def test_dynamic_inversion_auto_solver_is_closed_form_on_dense_layers_and_dynamics_on_convs():
    """On the conv net (conv layers, then a dense readout) ``solver="auto"`` inverts the readout by
    ``B (W B - alpha I)^{-1} delta`` and each conv layer by the dynamics."""
    model = make_model("conv")
    x, _ = make_batch("conv")
    u, a = Chain(model, "test").forward(x)
    rules = {s: make_rule("dynamic-inversion", model, solver=s, iterations=50) for s in ("auto", "dynamics")}
    kinds = []
    for index in range(1, len(rules["auto"].layers)):
        layer = rules["auto"].layers[index]
        delta = torch.randn_like(a[index].detach())
        got = rules["auto"].invert(index, delta, u[index].detach())
        if isinstance(layer, Dense):
            w, b = layer.scale * layer.weight.detach(), layer.scale * rules["auto"].feedback[index].T
            m = w @ b - rules["auto"].alpha * torch.eye(w.shape[0], dtype=w.dtype)
            want = torch.linalg.solve(m, delta.T).T @ b.T
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        else:
            assert torch.equal(got, rules["dynamics"].invert(index, delta, u[index].detach()))
        kinds.append(type(layer).__name__)
    assert "Dense" in kinds and "Conv2d" in kinds


CONVERGING = {
    "activation-relaxation": {"start": "zero"},
    "predictive-coding": {},
    "dynamic-inversion": {"solver": "dynamics"},
}


@pytest.mark.parametrize("name", sorted(CONVERGING))
def test_convergence_stop_stays_within_1e_3_of_the_fixed_iteration_update(name):
    """tol=0 runs every iteration; the default tol stops early and changes the update by < 1e-3."""
    options = CONVERGING[name]
    full_model = make_model("mlp")
    full = make_rule(name, full_model, tol=0, **options)
    full.backward(*make_batch("mlp"))
    layers = len(full.layers) - 1 if name == "dynamic-inversion" else 1
    assert full.step_stats()["relax_iterations"] == full.iterations * layers
    model = make_model("mlp")
    rule = make_rule(name, model, **options)
    rule.backward(*make_batch("mlp"))
    assert rule.tol > 0 and rule.step_stats()["relax_iterations"] < full.iterations * layers
    assert relative_error(grads(model), grads(full_model)) < 1e-3


@pytest.mark.parametrize("family", FEED_FORWARD)
def test_relaxing_the_frozen_feedforward_pass_moves_the_update_away_from_backprop(family):
    """Measured relative error to bp after 200 iterations (float64, MLP / conv net): frozen
    feedforward pass 4.2e-8 / 2.7e-7; relaxed (derivatives and presynaptic activity from the relaxing
    activities) 0.25 / 1.5: the update no longer approximates bp."""
    ref = bp_grads(family)
    frozen = relative_error(rule_grads(family, "activation-relaxation", iterations=200, tol=0), ref)
    relaxed = relative_error(
        rule_grads(family, "activation-relaxation", iterations=200, tol=0, feedforward="relaxed"), ref
    )
    assert frozen < 1e-5 and relaxed > 0.1


def test_trainer_records_the_mean_relaxation_iterations_per_step():
    from widealign.train import Trainer

    model = make_model("mlp")
    rule = make_rule("dynamic-inversion", model, solver="dynamics")
    batches = [make_batch("mlp", seed=k) for k in range(3)]
    seen = []
    original = rule.step_stats

    def spy():
        stats = original()
        seen.append(stats["relax_iterations"])
        return stats

    rule.step_stats = spy
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (record,) = Trainer(model, rule, opt, batches, task="regression", progress=False).fit(1)
    assert len(seen) == 3 and record.extra["relax_iterations"] == pytest.approx(sum(seen) / 3)
    assert record.extra["stability_adjustments"] == 0


def test_predictive_coding_clamps_and_steps_connections_with_the_run_rate():
    model = make_model("mlp")
    make_rule("predictive-coding", model, clamp=1e-3).backward(*make_batch("mlp"))
    g = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert float(g.abs().max()) == pytest.approx(1e-3)
    changes = []
    for lr in (0.5, 1.0):
        rule = make_rule("predictive-coding", make_model("mlp"), error_connectivity="learned", lr=lr)
        v0 = rule.error_weight_1.clone()
        rule.backward(*make_batch("mlp"))
        changes.append(rule.error_weight_1 - v0)
    torch.testing.assert_close(changes[1], 2 * changes[0], rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", RELAXATION)
def test_relaxation_rules_refuse_the_rnn_in_one_line(name):
    with pytest.raises(ValueError, match=f"^{name} supports feed-forward models only, not RNN$"):
        make_rule(name, make_model("rnn"), "sequence-mse")


@pytest.mark.parametrize("name", RELAXATION)
def test_state_dict_round_trip_is_exact(name):
    options = {
        "activation-relaxation": {"feedback": "learned"},
        "predictive-coding": {"feedback": "learned", "error_connectivity": "learned"},
    }.get(name, {})
    model = make_model("mlp")
    rule = make_rule(name, model, seed=4, **options)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for k in range(2):
        opt.zero_grad()
        rule.backward(*make_batch("mlp", seed=20 + k))
        opt.step()
    opt.zero_grad()
    state = {k: v.clone() for k, v in rule.state_dict().items()}
    assert state
    twin_model = make_model("mlp")
    twin_model.load_state_dict(model.state_dict())
    twin = make_rule(name, twin_model, seed=99, **options)
    twin.load_state_dict(state)
    assert twin.state_dict().keys() == state.keys()
    assert all(torch.equal(twin.state_dict()[k], v) for k, v in state.items())
    batch = make_batch("mlp", seed=30)
    rule.backward(*batch)
    twin.backward(*batch)
    for p, q in zip(model.parameters(), twin_model.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_options_are_checked_and_converted():
    assert rule_options("activation-relaxation")["iterations"] == 100
    rule = make_rule("activation-relaxation", make_model("mlp"), iterations="7", derivatives="false")
    assert rule.iterations == 7 and rule.derivatives is False
    with pytest.raises(
        ValueError,
        match=r"activation-relaxation has no option 'steps' \(did you mean step\?\); its options: iterations",
    ):
        make_rule("activation-relaxation", make_model("mlp"), steps=3)
    with pytest.raises(ValueError, match="bp has no option 'iterations'; its options: none"):
        make_rule("bp", make_model("mlp"), iterations=3)
    with pytest.raises(ValueError, match="option iterations must be a number"):
        make_rule("predictive-coding", make_model("mlp"), iterations="many")
    with pytest.raises(ValueError, match="unknown feedback 'mirror'"):
        make_rule("predictive-coding", make_model("mlp"), feedback="mirror")

"""The input-weight alignment score (docs/method.md#alignment-score), its control and the theory pair."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import FAMILIES, grads, loss_for, make_batch, make_model, sgd_steps
from widealign.data import load_digits
from widealign.diagnostics import (
    TheoryPair,
    alignment_metrics,
    alignment_scores,
    fan_out,
    layer_alignment,
    layer_input_shapes,
    project,
    shuffled_update,
)
from widealign.models import Conv2d, ConvNet, Dense, synaptic_layers
from widealign.rules import make_rule

TOL = dict(rtol=1e-10, atol=1e-12)

#: (layer, one example's input shape, expected fan_out); the stride-2 conv on 7x7 pads (1, 1),
#: on 6x6 it pads (0, 1): both SAME cases.
LAYERS = {
    "dense": (lambda: Dense(7, 5), (7,), 5),
    "conv": (lambda: Conv2d(3, 4, 3, stride=1), (3, 6, 6), 36),
    "conv-stride2-even": (lambda: Conv2d(3, 4, 3, stride=2), (3, 6, 6), 36),
    "conv-stride2-odd": (lambda: Conv2d(3, 4, 3, stride=2), (3, 7, 7), 36),
}


def rand(shape, seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_projection_is_the_layers_own_map_then_its_adjoint(kind):
    """P n equals autograd's vjp of the layer's own forward (weight dW, no bias, no factor)."""
    build, shape, expected_fan_out = LAYERS[kind]
    layer = build().double()
    dw = rand(layer.weight.shape, 1)
    n = rand((4, *shape), 2).requires_grad_(True)
    params = {"weight": dw, "bias": torch.zeros_like(layer.bias)}
    out = torch.func.functional_call(layer, params, (n,)) / layer.scale
    (back,) = torch.autograd.grad(out, n, out)
    assert fan_out(layer) == expected_fan_out
    torch.testing.assert_close(project(layer, dw, n.detach()), back / expected_fan_out, **TOL)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_identical_updates_score_one_and_scaling_is_invisible(kind):
    build, shape, _ = LAYERS[kind]
    layer = build().double()
    a, b = rand(layer.weight.shape, 1), rand(layer.weight.shape, 2)

    def score(u: torch.Tensor, v: torch.Tensor) -> float:
        return layer_alignment(layer, u, v, shape, seeded(), draws=5, batch=10)

    assert score(a, a) == pytest.approx(1, abs=1e-12)
    base = score(a, b)
    assert base < 0.999  # the scaling checks below are not vacuous
    for scaled in (score(a, 3.7 * b), score(0.01 * a, b), score(b, a)):
        assert scaled == pytest.approx(base, rel=1e-12)


@pytest.mark.parametrize(
    "layer, shape",
    [(Dense(400, 4), (400,)), (Conv2d(64, 2, 3), (64, 6, 6)), (Conv2d(64, 2, 3, stride=2), (64, 7, 7))],
    ids=["dense", "conv", "conv-stride2"],
)
def test_independent_random_updates_score_near_zero(layer, shape):
    """Two random updates of a wide-to-narrow layer project on nearly orthogonal subspaces."""
    layer = layer.double()
    for seed in range(3):
        a, b = rand(layer.weight.shape, 10 + seed), rand(layer.weight.shape, 20 + seed)
        assert abs(layer_alignment(layer, a, b, shape, seeded(seed), draws=10, batch=20)) < 0.1


def test_layer_input_shapes_follow_same_padding():
    model = make_model("conv")  # strides 1, 2, 2 on 6x6: inputs 6x6, 6x6, 3x3, then pooled
    x, _ = make_batch("conv")
    assert layer_input_shapes(model, x) == [(2, 6, 6), (4, 6, 6), (5, 3, 3), (3,)]
    assert layer_input_shapes(make_model("mlp"), make_batch("mlp")[0]) == [(5,), (7,), (6,)]


def test_shuffled_update_permutes_the_final_weights():
    final, initial = rand((5, 4, 3, 3), 1), rand((5, 4, 3, 3), 2)
    control = shuffled_update(final, initial, seeded())
    assert not torch.equal(control + initial, final)
    torch.testing.assert_close((control + initial).flatten().sort().values, final.flatten().sort().values)


@pytest.mark.parametrize("family", FAMILIES)
def test_network_scores_of_a_network_with_itself_are_one(family):
    """alignment_scores pairs layers in order, for dense, conv and recurrent layers alike."""
    model = make_model(family)
    initial = copy.deepcopy(model)
    sgd_steps(model, make_rule("bp", model, loss_for(family)), family, steps=3)
    scores = alignment_scores(model, model, initial, make_batch(family)[0], seeded(), draws=4, batch=8)
    assert len(scores) == len(synaptic_layers(model))
    for s, layer in zip(scores, synaptic_layers(model)):
        assert s.score == pytest.approx(1, abs=1e-12)
        assert s.shuffled < 1 or layer.fan_in == 1  # on a 1-d input every P is a multiple of 1
    keys = [f"align{suffix}/{i}" for i in range(len(scores)) for suffix in ("", "_shuffled")]
    assert list(alignment_metrics(scores)) == keys


def test_network_scores_reject_different_architectures():
    with pytest.raises(ValueError):
        alignment_scores(
            make_model("conv"), make_model("mlp"), make_model("conv"), make_batch("conv")[0], seeded()
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_theory_equals_bp_at_step_zero(family):
    pair = TheoryPair(make_model(family), loss_for(family), lr=0.5)
    x, y = make_batch(family)
    pair.compute_updates(x, y)
    bp_grads, theory_grads = grads(pair.bp), grads(pair.theory)
    for name, g in bp_grads.items():
        torch.testing.assert_close(theory_grads[name], g, **TOL, msg=name)
    pair.bp_optimizer.step()
    pair.theory_optimizer.step()
    for (name, p), q in zip(pair.bp.named_parameters(), pair.theory.parameters()):
        torch.testing.assert_close(q, p, **TOL, msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_theory_update_is_initial_network_backprop_with_bp_error(family):
    """After k steps the theory update is J_{theta_0}^T e_bp: backprop through the initial network
    with targets shifted so that its error equals the bp network's (both losses depend on f - y)."""
    pair = TheoryPair(make_model(family), loss_for(family), lr=0.5)
    for k in range(3):
        pair.step(*make_batch(family, seed=10 + k))
    x, y = make_batch(family, seed=99)
    result = pair.compute_updates(x, y)
    initial = copy.deepcopy(pair.initial).requires_grad_(True)
    with torch.no_grad():
        shifted = initial(x) - (result.output - y)
    make_rule("bp", initial, loss_for(family)).backward(x, shifted)
    expected, got, bp = grads(initial), grads(pair.theory), grads(pair.bp)
    for name, g in expected.items():
        torch.testing.assert_close(got[name], g, **TOL, msg=name)
    assert any(not torch.allclose(got[n], bp[n]) for n in got)  # theta moved: theory != bp now


WIDTHS = (8, 256)


@pytest.fixture(scope="module")
def digits_pairs():
    """Theory pairs of the KMNIST conv net on 500 digits: 5 steps of batch 100 at lr 2."""
    data = load_digits().subset(500)
    pairs = {}
    for width in WIDTHS:
        pair = TheoryPair(ConvNet.preset("kmnist", 1, 10, width, seed=0), lr=2.0, seed=0)
        pair.train_epoch(data, batch_size=100)
        pairs[width] = pair.alignment(data.x_train[:100], seeded(), draws=10, batch=10)
    return pairs


def test_shuffled_control_falls_below_the_score_on_trained_pairs(digits_pairs):
    for width, scores in digits_pairs.items():
        for i, s in enumerate(scores):
            assert s.shuffled < s.score, (width, i, s)


def test_alignment_rises_with_width(digits_pairs):
    means = {w: sum(s.score for s in scores) / len(scores) for w, scores in digits_pairs.items()}
    assert means[256] > means[8], means


@pytest.mark.parametrize("kind", list(LAYERS))
def test_every_draw_is_normalised_by_its_mean_absolute_value(kind):
    """The score from the formula written out by hand, draw by draw: P n / mean|P n| for each draw
    before accumulating. Without the per-draw normalisation the same draws give another score, so a
    library that skipped it would fail here."""
    make, shape, _ = LAYERS[kind]
    layer = make().double()
    # Two updates whose relative size depends on the draw: one of low rank, one dense.
    dw_a = rand(layer.weight.shape, 1)
    dw_a[1:] = 0.0
    dw_b = rand(layer.weight.shape, 2)
    draws, batch = 6, 2
    got = layer_alignment(layer, dw_a, dw_b, shape, seeded(7), draws=draws, batch=batch)

    g = seeded(7)
    wd = ww = dd = 0.0
    raw_wd = raw_ww = raw_dd = 0.0
    for _ in range(draws):
        n = torch.randn((batch, *shape), generator=g, dtype=torch.float64)
        pa, pb = project(layer, dw_a, n), project(layer, dw_b, n)
        raw_wd += float((pa * pb).sum())
        raw_ww += float((pa * pa).sum())
        raw_dd += float((pb * pb).sum())
        pa, pb = pa / pa.abs().mean(), pb / pb.abs().mean()
        wd += float((pa * pb).sum())
        ww += float((pa * pa).sum())
        dd += float((pb * pb).sum())
    expected = wd / (ww * dd) ** 0.5
    unnormalised = raw_wd / (raw_ww * raw_dd) ** 0.5
    assert got == pytest.approx(expected, rel=1e-10)
    assert abs(expected - unnormalised) > 1e-3

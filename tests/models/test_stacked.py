"""Stacked models: K members computed as one, each member exactly its own model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from widealign.models import MLP, RNN, ConvNet, TwoLayer
from widealign.models.layers import conv2d_weight
from widealign.models.stacked import (
    StackedState,
    check_stackable,
    member_axis,
    member_outputs,
    split_into,
    stack_inputs,
    stack_models,
)

BUILDERS = {
    "convnet": (lambda s: ConvNet(2, 3, [3, 4], [1, 2], seed=s), (6, 2, 7, 7)),
    "convnet-batchnorm": (lambda s: ConvNet(1, 3, 4, [2, 1], norm="batchnorm", seed=s), (6, 1, 8, 8)),
    "mlp": (lambda s: MLP(12, 3, [5, 4], seed=s), (6, 12)),
    "rnn": (lambda s: RNN(2, 5, 1, seed=s), (6, 4, 2)),
}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_each_block_of_a_stacked_model_is_its_member(kind: str) -> None:
    build, shape = BUILDERS[kind]
    members = [build(seed).double() for seed in range(3)]
    xs = [
        torch.randn(*shape, generator=torch.Generator().manual_seed(k), dtype=torch.float64) for k in range(3)
    ]
    stacked = stack_models(members)
    assert stacked.members == 3
    out = stacked(stack_inputs(xs, member_axis(stacked)))
    weights = [torch.randn_like(o) for o in member_outputs(out, 3)]
    sum((o * w).sum() for o, w in zip(member_outputs(out, 3), weights)).backward()
    for k, member in enumerate(members):
        own = member(xs[k])
        torch.testing.assert_close(member_outputs(out, 3)[k], own, rtol=1e-12, atol=1e-12)
        (own * weights[k]).sum().backward()
    for (name, _), blocks in zip(members[0].named_parameters(), stacked.parameters()):
        for k, member in enumerate(members):
            torch.testing.assert_close(
                blocks.grad.chunk(3, 0)[k], dict(member.named_parameters())[name].grad, rtol=1e-11, atol=1e-12
            )


def test_split_into_writes_each_members_block_back() -> None:
    members = [MLP(4, 2, [3], seed=s) for s in range(2)]
    stacked = stack_models(members)
    with torch.no_grad():
        for p in stacked.parameters():
            p.add_(1.0)
    before = [m.layers[0].weight.clone() for m in members]
    split_into(stacked, members)
    for k, m in enumerate(members):
        assert torch.equal(m.layers[0].weight, before[k] + 1.0)


def test_state_scalars_must_agree_unless_they_are_the_members_own() -> None:
    states = [{"w": torch.ones(2, 3) * k, "seed": torch.tensor(k)} for k in range(2)]
    with pytest.raises(ValueError, match="seed differ"):
        StackedState(states).stacked()
    layout = StackedState(states, own=["seed"])
    stacked = layout.stacked()
    assert stacked["w"].shape == (4, 3)
    parts = layout.split(stacked)
    assert [int(p["seed"]) for p in parts] == [0, 1]
    assert torch.equal(parts[1]["w"], states[1]["w"])


def test_the_grouped_weight_gradient_with_one_input_channel_per_group_is_exact() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 9, 9, generator=g, dtype=torch.float64)
    w_shape = (3 * 5, 1, 3, 3)
    grad_y = torch.randn(4, 15, 4, 4, generator=g, dtype=torch.float64)
    native = torch.nn.grad.conv2d_weight(x, w_shape, grad_y, 2, 0, 1, 3)
    torch.testing.assert_close(conv2d_weight(x, w_shape, grad_y, 2, 1, 3), native, rtol=1e-12, atol=1e-12)
    # and it is the gradient of the grouped convolution
    w = torch.zeros(w_shape, dtype=torch.float64, requires_grad=True)
    (F.conv2d(x, w, None, 2, 0, 1, 3) * grad_y).sum().backward()
    torch.testing.assert_close(native, w.grad)


def test_models_with_parts_that_are_not_blockwise_are_refused() -> None:
    with pytest.raises(ValueError, match="not TwoLayer"):
        check_stackable(TwoLayer(3, 4))
    net = MLP(4, 2, [3])
    net.extra = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="cannot stack a Linear"):
        check_stackable(net)
    with pytest.raises(ValueError, match="one model family"):
        stack_models([MLP(4, 2, [3]), ConvNet(1, 2, 3, [1])])

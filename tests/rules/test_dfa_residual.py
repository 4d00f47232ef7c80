"""dfa on a residual network, as docs/convert.md defines it: u_l is the input of synaptic layer
l+1; it receives B_l^T e, and the error reaching it also includes what later u_k send back through
neuron-local paths (identity skips), never through a synaptic layer."""

from __future__ import annotations

import torch
from torch import nn

from conftest import grads
from widealign.models import Dense
from widealign.rules import make_rule


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.l0 = Dense(4, 6, parameterization="standard", generator=g)
        self.l1 = Dense(6, 6, parameterization="standard", generator=g)
        self.l2 = Dense(6, 3, parameterization="standard", generator=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = self.l0(x).relu()
        h2 = self.l1(h1).relu() + h1  # identity skip: neuron-local
        return self.l2(h2)


def test_dfa_on_a_residual_block_matches_the_documented_definition():
    model = Residual().double()
    rule = make_rule("dfa", model, seed=1)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.randn(5, 3, generator=g, dtype=torch.float64)
    rule.backward(x, y)
    got = grads(model)
    _, b1, b2 = rule.feedback
    with torch.no_grad():
        a0 = x @ model.l0.weight.T + model.l0.bias
        h1 = a0.relu()
        a1 = h1 @ model.l1.weight.T + model.l1.bias
        h2 = a1.relu() + h1
        f = h2 @ model.l2.weight.T + model.l2.bias
        e = 2 * (f - y) / f.numel()
        du2 = e @ b2  # u_2 = h2, the readout's input
        du1 = e @ b1 + du2  # u_1 = h1: its own projection plus u_2's through the skip
        d1 = du2 * (a1 > 0)
        d0 = du1 * (a0 > 0)
    expected = {
        "l0.weight": d0.T @ x, "l0.bias": d0.sum(0),
        "l1.weight": d1.T @ h1, "l1.bias": d1.sum(0),
        "l2.weight": e.T @ h2, "l2.bias": e.sum(0),
    }  # fmt: skip
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-12, atol=1e-14, msg=name)

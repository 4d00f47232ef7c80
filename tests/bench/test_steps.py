"""The bench's yardsticks: the bare loop is the same network, FLOPs are counted exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from widealign.bench.steps import BareLoop, bench, format_bench, step_flops
from widealign.models import MLP, ConvNet
from widealign.rules import make_rule


@pytest.mark.parametrize("kind", ["conv", "mlp"])
def test_bare_loop_is_the_same_network_and_the_same_sgd_step(kind):
    g = torch.Generator().manual_seed(0)
    if kind == "conv":
        net = ConvNet.preset("kmnist", 1, 10, 4, seed=0).double()
        x = torch.rand(6, 1, 9, 9, generator=g, dtype=torch.float64)
    else:
        net = MLP(12, 10, [5, 5], seed=0).double()
        x = torch.rand(6, 12, generator=g, dtype=torch.float64)
    y = torch.randn(6, 10, generator=g, dtype=torch.float64)
    bare = BareLoop(copy.deepcopy(net), lr=0.1)
    torch.testing.assert_close(bare.forward(x), net(x), rtol=1e-12, atol=1e-12)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    make_rule("bp", net).backward(x, y)
    opt.step()
    bare.step(x, y)
    torch.testing.assert_close(bare.forward(x), net(x), rtol=1e-10, atol=1e-12)


def test_step_flops_count_every_matmul_of_an_mlp_step():
    """Forward: 2*B*(d*w + w*w + w*o); backward: every weight gradient again, plus the input
    gradients of the two layers whose input needs one."""
    b, d, w, o = 8, 12, 5, 3
    net = MLP(d, o, [w, w], seed=0)
    rule = make_rule("bp", net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.rand(b, d), torch.randn(b, o)
    forward = 2 * b * (d * w + w * w + w * o)
    expected = 2 * forward + 2 * b * (w * w + w * o)
    assert step_flops(rule, opt, x, y) == expected


def test_bench_reports_the_yardsticks_and_the_contended_slowdown():
    rows = bench(widths=[2], rules=["bp", "fa"], input_shape=(1, 6, 6), batch_size=4, repeats=1, warmup=0,
                 contended=True)  # fmt: skip
    assert [r["rule"] for r in rows] == ["bp", "fa", "bare"]
    bp = rows[0]
    assert bp["flops"] > 0 and 0 < bp["matmul_fraction"] and bp["ratio_to_bare"] > 0
    assert all(r["contended_slowdown"] > 0 for r in rows)
    text = format_bench(rows)
    assert "bp / bare loop" in text and "of the matmul rate" in text and "busy process" in text


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(input_shape=(28, 28)), "C H W"),
        (dict(batch_size=0), "batch size must be a positive integer"),
        (dict(repeats=0), "repeats must be a positive integer"),
        (dict(widths=[0]), "widths must be positive"),
    ],
)
def test_bench_refuses_bad_input_before_any_work(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench(**{"widths": [2], **kwargs})


def test_bench_batched_times_separate_and_batched_steps_and_refuses_bad_input():
    from widealign.bench.batched import bench_batched, format_bench_batched

    rows = bench_batched(2, model="rnn", widths=[4], rules=["bp", "fa"], input_shape=[5, 1], batch_size=4,
                         repeats=1, warmup=0)  # fmt: skip
    assert [(r["width"], r["rule"], r["members"]) for r in rows] == [(4, "bp", 2), (4, "fa", 2)]
    for r in rows:
        assert r["speedup"] == pytest.approx(r["separate_seconds"] / r["batched_seconds"])
    assert "speed-up" in format_bench_batched(rows)
    with pytest.raises(ValueError, match="at least 2 members"):
        bench_batched(1, widths=[4])
    with pytest.raises(ValueError, match="pal-simplified cannot train in a batched run"):
        bench_batched(2, model="mlp", widths=[4], rules=["pal-simplified"], input_shape=[4])

"""Time one training step of every rule against backprop, on the same model and batch.

A step is ``optimizer.zero_grad()``, ``rule.backward(x, y)`` and ``optimizer.step()``. Every rule
starts from the same initial network; rules are timed in interleaved rounds (bp, fa, ..., bp, fa,
...) so that drift in the machine's speed affects all of them alike, and the median over rounds is
reported with its ratio to bp measured in the same process. Peak GPU memory is reported on CUDA.

Three more yardsticks, measured in the same process and interleaved with the rules:

* ``bare``: the same network written as a bare PyTorch loop (plain ``F.conv2d``/``F.linear``,
  the same padding and normalisation, autograd, an SGD step): bp's ratio to it is widealign's
  framework overhead;
* the floating-point operations of one bp step (``torch.utils.flop_counter``) over bp's time,
  as a fraction of the machine's dense matmul rate (a square float matmul timed here): how close
  a step comes to what the machine can do;
* ``contended=True`` repeats the timing with one busy background process and reports bp's
  slowdown (2x would be in proportion to losing one core of two).
"""

from __future__ import annotations

import copy
import functools
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widealign.models import MLP, RNN, Conv2d, ConvNet, same_padding, synaptic_layers
from widealign.rules import RULES, Rule, make_rule
from widealign.runs.config import resolve_device
from widealign.train.loop import autocast_region
from widealign.train.timing import timed, train_step


class BareLoop:
    """The benchmarked network as a hand-written PyTorch training step, independent of widealign's
    layers and rules: the same weights, SAME padding, batch-axis normalisation, mse loss and SGD.

    Plain ops and autograd throughout: symmetric SAME padding is ``F.conv2d``'s own ``padding``
    (as widealign's layers do it), asymmetric padding an ``F.pad``; the normalisation is the plain
    ops of ``BatchAxisNorm.plain``, whose gradient autograd's rounding makes equal to widealign's
    hand-written one only up to float tolerance."""

    def __init__(self, net: nn.Module, lr: float = 1e-3) -> None:
        self.layers = [
            (layer.weight.detach().clone().requires_grad_(True),
             None if layer.bias is None else layer.bias.detach().clone().requires_grad_(True),
             layer.scale, getattr(layer, "stride", None), getattr(layer, "kernel_size", None))
            for layer in synaptic_layers(net)
        ]  # fmt: skip
        self.conv = isinstance(synaptic_layers(net)[0], Conv2d)
        self.eps = getattr(getattr(net, "norms", [None])[0], "eps", 1e-6)
        self.opt = torch.optim.SGD([t for w, b, *_ in self.layers for t in (w, b) if t is not None], lr=lr)

    def forward(self, x: Tensor) -> Tensor:
        *hidden, (w_out, b_out, s_out, _, _) = self.layers
        h = x if self.conv else x.flatten(1)
        for i, (w, b, scale, stride, k) in enumerate(hidden):
            if self.conv:
                if i > 0:
                    h = F.relu(h)
                top, bottom = same_padding(h.shape[-2], k, stride)
                left, right = same_padding(h.shape[-1], k, stride)
                if top == bottom and left == right:
                    h = F.conv2d(h, w, None, stride, (top, left))
                else:
                    h = F.conv2d(F.pad(h, (left, right, top, bottom)), w, None, stride)
                h = h * scale + b[:, None, None]
                mean = h.mean(0, keepdim=True)
                h = (h - mean) / torch.sqrt((h - mean).square().mean(0, keepdim=True) + self.eps)
            else:
                h = F.relu(F.linear(h, w) * scale + b)
        if self.conv:
            h = F.relu(h).mean((2, 3))
        return F.linear(h, w_out) * s_out + b_out

    def step(self, x: Tensor, y: Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        (self.forward(x) - y).square().mean().backward()
        self.opt.step()


def step_flops(rule: Rule, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> int:
    """Floating-point operations of one training step, counted by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        train_step(rule, optimizer, x, y)
    return int(counter.get_total_flops())


def matmul_rate(
    device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024, repeats: int = 5
) -> float:
    """The machine's dense matmul rate in FLOP/s: the median of ``repeats`` n x n products."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    torch.mm(a, b)
    seconds = statistics.median(timed(device, functools.partial(torch.mm, a, b)) for _ in range(repeats))
    return 2 * n**3 / seconds


def bench_model(
    model: str, width: int, preset: str, input_shape: Sequence[int], outputs: int, seed: int
) -> nn.Module:
    """The benchmarked network: the conv-net preset, an MLP with two hidden layers of ``width``, or
    the RNN (``input_shape`` T F, ``width`` hidden units)."""
    if model == "convnet":
        return ConvNet.preset(preset, input_shape[0], outputs, width, seed=seed)
    if model == "rnn":
        return RNN(input_shape[-1], width, outputs, seed=seed)
    return MLP(int(torch.tensor(input_shape).prod()), outputs, [width, width], seed=seed)


def busy_process() -> subprocess.Popen:
    """A background process that keeps one core busy until it is killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def bench(
    model: str = "convnet",
    widths: Sequence[int] = (64, 256),
    rules: Sequence[str] = tuple(RULES),
    preset: str = "kmnist",
    input_shape: Sequence[int] = (1, 28, 28),
    outputs: int = 10,
    batch_size: int = 100,
    repeats: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    contended: bool = False,
    autocast: str | None = None,
) -> list[dict[str, Any]]:
    """Median seconds per step of each rule at each width, and the ratio to bp.

    Also one ``bare`` row per width (the hand-written loop, :class:`BareLoop`), and in bp's row its
    ``ratio_to_bare``, the step's ``flops`` and ``matmul_fraction`` (achieved FLOP/s over the
    measured matmul rate). With ``contended``, every rule is timed again beside a busy process
    (``contended_seconds``, and ``contended_slowdown`` = contended / quiet). With ``autocast``
    (``bf16``) every rule's step runs under autocast (the bare loop does not). A rule that reports
    figures of its step (``step_stats``, e.g. a relaxation's iterations) has their last values in
    its row.
    """
    _check_bench(widths, input_shape, batch_size, repeats, model)
    if "bp" not in rules:
        rules = ["bp", *rules]
    dev = resolve_device(device)
    rate = matmul_rate(dev, dtype)
    rows = []
    for width in widths:
        if model not in ("convnet", "mlp"):
            raise ValueError(f"bench supports the convnet and the mlp, not {model!r}")
        net = bench_model(model, width, preset, input_shape, outputs, seed)
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(batch_size, *input_shape, generator=g).to(dev, dtype)
        y = torch.randn(batch_size, outputs, generator=g).to(dev, dtype)
        steps: dict[str, Callable[[], None]] = {}
        rule_objects: dict[str, Rule] = {}
        for name in rules:
            m = copy.deepcopy(net).to(dev, dtype)
            rule = make_rule(name, m, seed=seed)
            opt = torch.optim.SGD([*m.parameters(), *rule.feedback_parameters()], lr=1e-3)
            rule_objects[name] = rule
            steps[name] = functools.partial(_autocast_step, autocast, rule, opt, x, y)
            if name == "bp":
                flops = step_flops(rule, opt, x, y)
        steps["bare"] = functools.partial(BareLoop(copy.deepcopy(net).to(dev, dtype)).step, x, y)
        times = _interleaved(steps, dev, warmup, repeats)
        loaded = None
        if contended:
            background = busy_process()
            try:
                loaded = _interleaved(steps, dev, warmup, repeats)
            finally:
                background.kill()
                background.wait()
        base = times["bp"]
        for name in steps:
            row = {"model": model, "width": width, "rule": name, "seconds": times[name],
                   "ratio_to_bp": times[name] / base}  # fmt: skip
            if name == "bp":
                row.update(ratio_to_bare=base / times["bare"], flops=flops, matmul_rate=rate,
                           matmul_fraction=flops / base / rate)  # fmt: skip
            if loaded is not None:
                row.update(contended_seconds=loaded[name], contended_slowdown=loaded[name] / times[name])
            if name in rule_objects:
                row.update(getattr(rule_objects[name], "step_stats", dict)())
                if hasattr(rule_objects[name], "iterations"):
                    row["iterations"] = rule_objects[name].iterations
            if autocast is not None and name != "bare":
                row["autocast"] = autocast
            rows.append(row)
    return rows


def _autocast_step(
    autocast: str | None, rule: Rule, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor
) -> None:
    """One timed step, under ``autocast`` where given."""
    optimizer.zero_grad(set_to_none=True)
    with autocast_region(rule.model, autocast):
        rule.backward(x, y)
    optimizer.step()


def _interleaved(
    steps: dict[str, Callable[[], None]], device: torch.device, warmup: int, repeats: int
) -> dict[str, float]:
    """Median seconds of each step, timed in interleaved rounds after ``warmup`` untimed ones."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(warmup + repeats):
        for name, step in steps.items():
            times[name].append(timed(device, step))
    return {name: statistics.median(t[warmup:]) for name, t in times.items()}


def _check_bench(
    widths: Sequence[int], input_shape: Sequence[int], batch_size: int, repeats: int, model: str
) -> None:
    """One-line errors for inputs that cannot be benchmarked, before anything is built."""
    if not widths or any(not isinstance(w, int) or w <= 0 for w in widths):
        raise ValueError(f"widths must be positive integers, got {list(widths)}")
    if model == "convnet" and len(input_shape) != 3:
        raise ValueError(f"--input-shape for the convnet is C H W (3 numbers), got {list(input_shape)}")
    if any(d <= 0 for d in input_shape):
        raise ValueError(f"--input-shape must be positive, got {list(input_shape)}")
    if batch_size <= 0:
        raise ValueError(f"batch size must be a positive integer, got {batch_size}")
    if repeats <= 0:
        raise ValueError(f"repeats must be a positive integer, got {repeats}")


def format_bench(rows: list[dict[str, Any]]) -> str:
    """One line per (width, rule): milliseconds per step and the ratio to bp; then bp's yardsticks."""
    contended = "contended_slowdown" in rows[0]
    head = f"{'width':>6} {'rule':<22} {'ms/step':>9} {'x bp':>6}"
    lines = [head + (f" {'contended x':>12}" if contended else "")]
    for r in rows:
        line = f"{r['width']:>6} {r['rule']:<22} {1000 * r['seconds']:>9.2f} {r['ratio_to_bp']:>6.2f}"
        lines.append(line + (f" {r['contended_slowdown']:>12.2f}" if contended else ""))
    lines.append("")
    lines.append("bp against yardsticks (bare: the same network as a hand-written PyTorch loop)")
    for r in rows:
        if r["rule"] == "bp":
            gflops = r["flops"] / 1e9
            line = (
                f"  width {r['width']}: bp / bare loop {r['ratio_to_bare']:.2f}; {gflops:.3g} GFLOP per "
                f"step at {gflops / r['seconds']:.3g} GFLOP/s = {r['matmul_fraction']:.2f} of the matmul "
                f"rate ({r['matmul_rate'] / 1e9:.3g} GFLOP/s)"
            )
            if contended:
                line += f"; beside a busy process bp is {r['contended_slowdown']:.2f}x slower"
            lines.append(line)
    return "\n".join(lines)

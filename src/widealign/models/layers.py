"""Synaptic layers (docs/method.md#models) and the one feedback-aware op they all use.

A *synaptic layer* computes ``y = scale * (W x) + b`` (a dense product or a convolution), with
``scale = 1/sqrt(fan_in)`` under the NTK parameterisation and ``1`` under the standard one.
Everything between two synaptic layers (normalisation, activation, pooling) is neuron-local and is
built from ordinary torch ops.

Learning rules differ in two things only, and a synaptic layer exposes exactly those two:

* the tensor it receives as input (a rule may stop its gradient, record it, or inject another
  network's value), and
* the matrix ``B`` that carries the error backwards: ``grad_x = scale * B^T grad_y``. Backprop uses
  ``B = W``; feedback alignment uses a fixed random ``B``; Align-prop uses ``B = W(0)``.

The weight gradient is always the true local one, ``grad_W = scale * grad_y x^T``. The op saves the
input only when the weight needs a gradient and ``B`` only when the input needs one, so a rule
whose ``B`` is not the current weight never keeps the current weight for its backward pass
(:func:`widealign.testing.forward_weight_reads` checks every rule for reads of the current weights,
whatever route they take).

A rule changes those two things for the duration of one pass with :func:`routed`, which gives every
synaptic layer of a model a :class:`Route` and removes it afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widealign.suggest import did_you_mean

PARAMETERIZATIONS = ("ntk", "standard")
#: How a batched conv layer (``members`` > 1) computes: ``"split"``, one ungrouped convolution per
#: member (faster on the CPU, docs/performance.md#batched-runs), or ``"grouped"``, one grouped one.
MEMBER_CONV = "split"


def grouped_linear(x: Tensor, matrix: Tensor, groups: int) -> Tensor:
    """``x W^T`` for ``groups`` independent blocks on the last axis: ``x`` is (..., G*in) and
    ``matrix`` (G*out, in) holds the blocks' matrices one above the other (block g maps inputs
    ``g*in:(g+1)*in`` to outputs ``g*out:(g+1)*out``). With one group this is ``F.linear``."""
    if groups == 1:
        return F.linear(x, matrix)
    blocks = matrix.unflatten(0, (groups, -1))
    return torch.einsum("...gi,goi->...go", x.unflatten(-1, (groups, -1)), blocks).flatten(-2)


def grouped_linear_transpose(g: Tensor, matrix: Tensor, groups: int) -> Tensor:
    """``g W``: the transpose of :func:`grouped_linear` (``g`` is (..., G*out))."""
    if groups == 1:
        return g @ matrix
    blocks = matrix.unflatten(0, (groups, -1))
    return torch.einsum("...go,goi->...gi", g.unflatten(-1, (groups, -1)), blocks).flatten(-2)


class _DenseOp(torch.autograd.Function):
    """``y = scale * x W^T + b`` whose input gradient is ``scale * grad_y B``.

    With ``groups`` > 1 (the members of a batched run) the last axes of ``x`` and ``y`` are that many
    independent blocks and ``W``, ``B`` their matrices one above the other (:func:`grouped_linear`).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor, weight: Tensor, bias: Tensor | None, feedback: Tensor, scale: float, groups: int = 1
    ) -> Tensor:
        y = grouped_linear(x, weight, groups) * scale
        return y if bias is None else y + bias

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, bias, feedback, scale, *rest = inputs
        ctx.scale, ctx.groups, ctx.num_inputs = scale, (*rest, 1)[0], len(inputs)
        ctx.save_for_backward(
            x if ctx.needs_input_grad[1] else None,
            feedback if ctx.needs_input_grad[0] else None,
        )

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple:
        x, feedback = ctx.saved_tensors
        g = grad_y * ctx.scale
        grad_x = grouped_linear_transpose(g, feedback, ctx.groups) if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1] and ctx.groups == 1:
            grad_w = g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])
        elif ctx.needs_input_grad[1]:
            gg = g.reshape(-1, ctx.groups, g.shape[-1] // ctx.groups)
            xx = x.reshape(-1, ctx.groups, x.shape[-1] // ctx.groups)
            grad_w = torch.einsum("ngo,ngi->goi", gg, xx).flatten(0, 1)
        grad_b = grad_y.reshape(-1, grad_y.shape[-1]).sum(0) if ctx.needs_input_grad[2] else None
        return (grad_x, grad_w, grad_b) + (None,) * (ctx.num_inputs - 3)


def _grouped_single_channel(w_shape: Sequence[int], groups: int) -> bool:
    """Whether a weight gradient takes the CPU kernels' slow path (see :func:`conv2d_weight`)."""
    return groups > 1 and w_shape[1] == 1 and w_shape[0] // groups > 1


def conv2d_weight(
    x: Tensor,
    w_shape: Sequence[int],
    g: Tensor,
    stride: int | tuple[int, int],
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    padding: int | tuple[int, int] = 0,
) -> Tensor:
    """The weight gradient of ``conv2d(x, W, stride, padding, dilation, groups)`` for output
    gradient ``g``.

    A grouped convolution with one input channel and several output channels per group (the first
    layer of a batched run on grey images) takes a path in the CPU kernels that is about 40 times
    slower than computing each group on its own, so that case is computed group by group.
    """
    if not _grouped_single_channel(w_shape, groups):
        return torch.nn.grad.conv2d_weight(x, w_shape, g, stride, padding, dilation, groups)
    shape = (w_shape[0] // groups, *w_shape[1:])
    return torch.cat(
        [
            torch.nn.grad.conv2d_weight(xk, shape, gk, stride, padding, dilation)
            for xk, gk in zip(x.chunk(groups, 1), g.chunk(groups, 1))
        ]
    )


class _Conv2dOp(torch.autograd.Function):
    """``y = scale * conv(x, W) + b`` (any stride, dilation, groups; symmetric zero ``padding``
    done by the convolution itself) whose input gradient uses ``B``.

    The backward pass calls ``aten.convolution_backward`` once for both gradients, with the saved
    input and ``B`` as the weight (the weight gradient depends on the weight's shape only, and ``B``
    has ``W``'s). ``torch.nn.grad.conv2d_input`` would instead hand the kernel a stride-0 expanded
    stand-in for the input, which the CPU kernel copies into a full-size dense tensor every step.
    A stand-in that is needed (the input or ``B`` was not saved) is an uninitialised ``empty``.
    The one weight gradient the CPU kernels compute slowly is left to :func:`conv2d_weight`.
    Under autocast the forward convolution runs in the lower precision and the backward pass in
    the dtype of the saved input and ``B``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        feedback: Tensor,
        scale: float,
        stride: int | tuple[int, int],
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> Tensor:
        if groups > 1 and MEMBER_CONV == "split":
            y = torch.cat(
                [
                    F.conv2d(xk, wk, None, stride, padding, dilation)
                    for xk, wk in zip(x.chunk(groups, 1), weight.chunk(groups, 0))
                ],
                1,
            ).mul_(scale)
        else:
            y = F.conv2d(x, weight, None, stride, padding, dilation, groups) * scale
        return y if bias is None else y + bias[:, None, None]

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, bias, feedback, scale, stride, *rest = inputs
        defaults = (1, 1, 0)
        dilation, groups, padding = (*rest, *defaults[len(rest) :])[:3]
        ctx.scale, ctx.groups = scale, groups
        ctx.stride, ctx.dilation, ctx.padding = _pair(stride), _pair(dilation), _pair(padding)
        ctx.num_inputs = len(inputs)
        ctx.x_shape, ctx.w_shape = x.shape, weight.shape
        ctx.save_for_backward(
            x if ctx.needs_input_grad[1] else None,
            feedback if ctx.needs_input_grad[0] else None,
        )

    @staticmethod
    def backward(ctx: Any, grad_y: Tensor) -> tuple:
        x, feedback = ctx.saved_tensors
        # under autocast grad_y may be bfloat16 while x and B are not: compute in theirs
        g = (grad_y * ctx.scale).to((x if x is not None else feedback).dtype)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = grad_w = grad_b = None
        if ctx.groups > 1 and MEMBER_CONV == "split":
            return _split_conv_backward(ctx, g, x, feedback, grad_y)
        slow_w = need_w and _grouped_single_channel(ctx.w_shape, ctx.groups)
        if need_x or (need_w and not slow_w):
            if x is None:
                x = g.new_empty(ctx.x_shape)
            if feedback is None:
                feedback = g.new_empty(ctx.w_shape)
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                g, x, feedback, None, ctx.stride, ctx.padding, ctx.dilation, False, [0, 0],
                ctx.groups, (need_x, need_w and not slow_w, False),
            )  # fmt: skip
        if slow_w:
            grad_w = conv2d_weight(x, ctx.w_shape, g, ctx.stride, ctx.dilation, ctx.groups, ctx.padding)
        if ctx.needs_input_grad[2]:
            grad_b = grad_y.sum((0, 2, 3))
        return (grad_x, grad_w, grad_b) + (None,) * (ctx.num_inputs - 3)


def _split_conv_backward(
    ctx: Any, g: Tensor, x: Tensor | None, feedback: Tensor | None, grad_y: Tensor
) -> tuple:
    """:class:`_Conv2dOp`'s backward pass member by member: one ungrouped
    ``aten.convolution_backward`` per block of channels, the blocks' gradients concatenated."""
    k = ctx.groups
    need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    x_shape = (ctx.x_shape[0], ctx.x_shape[1] // k, *ctx.x_shape[2:])
    w_shape = (ctx.w_shape[0] // k, *ctx.w_shape[1:])
    xs = x.chunk(k, 1) if x is not None else [g.new_empty(x_shape)] * k
    fs = feedback.chunk(k, 0) if feedback is not None else [g.new_empty(w_shape)] * k
    grads_x, grads_w = [], []
    for gk, xk, fk in zip(g.chunk(k, 1), xs, fs):
        gx, gw, _ = torch.ops.aten.convolution_backward(
            gk, xk, fk, None, ctx.stride, ctx.padding, ctx.dilation, False, [0, 0], 1,
            (need_x, need_w, False),
        )  # fmt: skip
        grads_x.append(gx)
        grads_w.append(gw)
    grad_x = torch.cat(grads_x, 1) if need_x else None
    grad_w = torch.cat(grads_w, 0) if need_w else None
    grad_b = grad_y.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
    return (grad_x, grad_w, grad_b) + (None,) * (ctx.num_inputs - 3)


def _pair(value: int | Sequence[int]) -> list[int]:
    """An int or a pair as the two-entry list that ``aten.convolution_backward`` takes."""
    return [value, value] if isinstance(value, int) else list(value)


class Route:
    """What a learning rule changes in the synaptic layers during one pass.

    ``index`` is the layer's position in :func:`synaptic_layers` order. The defaults give backprop.
    """

    def input(self, index: int, x: Tensor) -> Tensor:
        """The tensor synaptic layer ``index`` computes with, given its input ``x``."""
        return x

    def feedback(self, index: int, layer: Synaptic) -> Tensor:
        """The matrix that carries the error back through layer ``index`` (``W`` for backprop)."""
        return layer.weight

    def tap(self, kind: str, index: int, x: Tensor) -> Tensor:
        """The activity that passes the ``index``-th :class:`Tap` of ``kind`` (unchanged by default)."""
        return x


class Synaptic(nn.Module):
    """Base class of the synaptic layers: a weight in PyTorch layout, an optional bias, a scale.

    Args:
        fan_in: inputs per output unit (``k*k*C_in`` for a ``k x k`` convolution).
        parameterization: ``"ntk"`` (W ~ N(0, 1), forward factor 1/sqrt(fan_in)) or
            ``"standard"`` (W ~ N(0, 1/fan_in), no factor).
        scale: overrides the forward factor (for models such as Song et al.'s, whose first layer
            computes ``w . x`` with no factor).
    """

    weight: nn.Parameter
    bias: nn.Parameter | None

    def __init__(self, fan_in: int, parameterization: str, scale: float | None) -> None:
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(did_you_mean("parameterization", parameterization, PARAMETERIZATIONS))
        self.fan_in = fan_in
        self.parameterization = parameterization
        if scale is None:
            scale = 1.0 / math.sqrt(fan_in) if parameterization == "ntk" else 1.0
        self.scale = float(scale)
        #: Independent blocks the layer computes (the members of a batched run,
        #: :mod:`widealign.models.stacked`); 1 for an ordinary layer. Not a layer's own grouping
        #: (a converted grouped convolution has ``groups``): stacking multiplies that by K.
        self.members = 1
        self._route: tuple[Route, int] | None = None

    @property
    def init_std(self) -> float:
        """Standard deviation of the weight distribution at initialisation."""
        return 1.0 if self.parameterization == "ntk" else 1.0 / math.sqrt(self.fan_in)

    def sample_weight(self, generator: torch.Generator | None = None) -> Tensor:
        """A fresh draw from the weight's initial distribution (also fa's feedback distribution),
        of :attr:`member_shape` (one member's block in a batched run).

        The draw is made on ``generator``'s device (the library's generators are CPU ones) and then
        moved to the weight's, so the same seed gives the same matrix on every device. On the meta
        device (shapes only) nothing is drawn.
        """
        if self.weight.device.type == "meta":  # shapes only (memory estimates): nothing to draw
            return torch.empty(self.member_shape, dtype=self.weight.dtype, device="meta")
        device = self.weight.device if generator is None else generator.device
        w = torch.empty(self.member_shape, dtype=self.weight.dtype, device=device)
        return w.normal_(0.0, self.init_std, generator=generator).to(self.weight.device)

    @property
    def member_shape(self) -> torch.Size:
        """The shape of one block's weight: the weight's shape, or one of ``groups`` equal row blocks."""
        return torch.Size((self.weight.shape[0] // self.members, *self.weight.shape[1:]))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """W from the parameterisation's distribution, b = 0 (docs/method.md#models)."""
        with torch.no_grad():
            self.weight.copy_(self.sample_weight(generator))
            if self.bias is not None:
                self.bias.zero_()

    def apply_matrix(self, x: Tensor, matrix: Tensor) -> Tensor:
        """The layer's linear map with ``matrix`` in place of its weight and no bias.

        Rules that learn their feedback use it to send activity or noise through ``W`` or ``B``.
        """
        raise NotImplementedError

    def _routed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self._route is None:
            return x, self.weight
        route, index = self._route
        return route.input(index, x), route.feedback(index, self)


class Dense(Synaptic):
    """Dense synaptic layer ``y = scale * W x + b`` acting on the last axis of ``x``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        parameterization: str = "ntk",
        scale: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_positive(in_features=in_features, out_features=out_features)
        super().__init__(in_features, parameterization, scale)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters(generator)

    def forward(self, x: Tensor) -> Tensor:
        x, feedback = self._routed(x)
        if self.members > 1:
            return _DenseOp.apply(x, self.weight, self.bias, feedback, self.scale, self.members)
        return _DenseOp.apply(x, self.weight, self.bias, feedback, self.scale)

    def apply_matrix(self, x: Tensor, matrix: Tensor) -> Tensor:
        """``scale * matrix x`` on the last axis, no bias (plain torch ops, differentiable in both)."""
        return grouped_linear(x, matrix, self.members) * self.scale

    def extra_repr(self) -> str:
        return (
            f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, {self.parameterization}"
        )


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: (before, after), the odd pixel after.

    The output has ``ceil(size / stride)`` positions; a stride-2 3x3 conv on 28 pads (0, 1).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2d(Synaptic):
    """Convolutional synaptic layer with TensorFlow SAME padding, ``fan_in = k*k*C_in``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = True,
        parameterization: str = "ntk",
        scale: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        _check_positive(
            in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, stride=stride
        )
        super().__init__(kernel_size * kernel_size * in_channels, parameterization, scale)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters(generator)

    def forward(self, x: Tensor) -> Tensor:
        x, feedback = self._routed(x)
        x, padding = self._same_padded(x)
        return _Conv2dOp.apply(
            x, self.weight, self.bias, feedback, self.scale, self.stride, 1, self.members, padding
        )

    def apply_matrix(self, x: Tensor, matrix: Tensor) -> Tensor:
        """``scale * conv(x, matrix)`` with this layer's padding and stride, no bias (plain torch ops)."""
        x, padding = self._same_padded(x)
        return F.conv2d(x, matrix, None, self.stride, padding, 1, self.members) * self.scale

    def _same_padded(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``x`` and the padding for the convolution that together give TensorFlow SAME padding.

        Where SAME pads ``(p_h, p_h)`` and ``(p_w, p_w)`` the convolution pads by ``(p_h, p_w)``
        itself (no padded copy of ``x``); otherwise (a stride-2 conv on an even size pads
        ``(0, 1)``) ``x`` is padded with ``F.pad`` and the convolution pads nothing.
        """
        top, bottom = same_padding(x.shape[-2], self.kernel_size, self.stride)
        left, right = same_padding(x.shape[-1], self.kernel_size, self.stride)
        if top == bottom and left == right:
            return x, (top, left)
        return F.pad(x, (left, right, top, bottom)), (0, 0)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, {self.parameterization}"
        )


class _BatchAxisNormOp(torch.autograd.Function):
    """``y = (x - mean_0(x)) / sqrt(var_0(x) + eps)`` with a hand-written backward pass.

    ``mean_0`` and ``var_0`` are over the batch axis (population variance). The forward pass
    returns ``y`` and ``1/std`` (one value per unit, not differentiable) and saves both; backward
    computes

        grad_x = (1/std) * (g - mean_0(g) - y * mean_0(g * y))

    in four elementwise passes and two batch-axis reductions, instead of the dozen or so that
    autograd records for the plain ops. The forward arithmetic is the plain ops' own (the same
    ``y`` to the bit). Only reductions over the leading axis are used (each unit's sum runs over
    the batch in one fixed order), so the results do not depend on torch's thread count. torch's
    native batch-norm kernel is not used: an earlier version with it broke the bit-identity of a
    process-pool sweep with the sequential one.

    Lower-precision input (under bf16 autocast) is normalised in float32 and ``y`` is float32. The
    backward pass is not itself differentiable (``once_differentiable``: a second derivative raises
    instead of being silently wrong); no rule takes one through the normalisation.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        centred = x - x.mean(0, keepdim=True)
        std = torch.sqrt(centred.square().mean(0, keepdim=True) + eps)
        return centred / std, std.reciprocal()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        y, inv_std = output
        ctx.x_dtype = inputs[0].dtype
        ctx.mark_non_differentiable(inv_std)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(y, inv_std)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g: Tensor | None, _: None) -> tuple[Tensor | None, None]:
        if g is None:
            return None, None
        y, inv_std = ctx.saved_tensors
        g = g.to(y.dtype)
        grad = torch.addcmul(g - g.mean(0, keepdim=True), y, (g * y).mean(0, keepdim=True), value=-1.0)
        grad.mul_(inv_std)
        return grad.to(ctx.x_dtype), None


class BatchAxisNorm(nn.Module):
    """The paper's normalisation: standardise every unit over the batch axis only.

    ``y = (x - mean_batch(x)) / sqrt(var_batch(x) + eps)`` per channel *and* spatial position,
    population variance, batch statistics at train and evaluation time alike, no affine parameters.
    A unit that is constant across the batch (zero image borders) is divided by ``sqrt(eps)``.
    Computed by one autograd op with a hand-written backward (:class:`_BatchAxisNormOp`), whose
    numbers are the same whatever torch's thread count; :meth:`plain` is the same map in plain ops.

    ``native=True`` (``norm="batch-axis-native"``, ``--norm batch-axis-native``; opt-in, ours)
    computes the same map with torch's batch-norm kernel on an ``(N, C*H*W)`` view, without affine
    parameters or running statistics. It is the same function to rounding (a test checks 1e-12 in
    float64), faster on the CPU, but its reductions are split across threads, so its float32
    numbers can differ in the last bits with the thread count: a process-pool sweep then need not
    repeat a sequential one bit for bit. The default stays deterministic.
    """

    def __init__(self, eps: float = 1e-6, native: bool = False) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.eps = eps
        self.native = bool(native)

    def forward(self, x: Tensor) -> Tensor:
        if self.native:
            flat = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
            flat = flat.reshape(flat.shape[0], -1)
            return F.batch_norm(flat, None, None, training=True, momentum=0.0, eps=self.eps).view(x.shape)
        return _BatchAxisNormOp.apply(x, self.eps)[0]

    def plain(self, x: Tensor) -> Tensor:
        """The same normalisation in plain torch ops (autograd differentiates it, to any order)."""
        mean = x.mean(0, keepdim=True)
        var = (x - mean).square().mean(0, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}" + (", native=True" if self.native else "")


class Tap(nn.Module):
    """A named point in the neuron-local stage between synaptic layers; the identity unless routed.

    Models mark two kinds of activity with taps, so that rules can read or replace it:

    * ``"preactivation"``: a hidden layer's normalised output just before the activation, where the
      activation's output feeds another hidden synaptic layer (the authors' align-ada injects the
      current network's value there, see ``docs/method.md#variants``);
    * ``"hidden"``: a hidden layer's full post-activation output ``u_l`` (for a conv map all of
      C*H*W, before any pooling; for the RNN the states of every time step), which dfa projects
      the output error onto.
    """

    KINDS = ("preactivation", "hidden")

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown tap kind {kind!r}; choose one of {', '.join(self.KINDS)}")
        self.kind = kind
        self._route: tuple[Route, int] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self._route is None:
            return x
        route, index = self._route
        return route.tap(self.kind, index, x)

    def extra_repr(self) -> str:
        return repr(self.kind)


def taps(model: nn.Module, kind: str) -> list[Tap]:
    """The model's taps of ``kind`` in registration (forward) order; empty if it marks none."""
    return [m for m in model.modules() if isinstance(m, Tap) and m.kind == kind]


def synaptic_layers(model: nn.Module) -> list[Synaptic]:
    """The model's synaptic layers in registration order, which must be forward order.

    The last one is the readout. Any ``nn.Module`` built from these layers works with every rule.
    """
    layers = [m for m in model.modules() if isinstance(m, Synaptic)]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no widealign synaptic layers (widealign.models.Dense or Conv2d)"
        )
    return layers


@contextlib.contextmanager
def routed(model: nn.Module, route: Route) -> Iterator[None]:
    """Give every synaptic layer and :class:`Tap` of ``model`` the ``route`` for the duration of the block."""
    layers = synaptic_layers(model)
    if any(layer._route is not None for layer in layers):
        raise RuntimeError("a learning rule is already attached to this model (nested rule passes)")
    marked = [tap for kind in Tap.KINDS for tap in taps(model, kind)]
    for index, layer in enumerate(layers):
        layer._route = (route, index)
    for kind in Tap.KINDS:
        for index, tap in enumerate(taps(model, kind)):
            tap._route = (route, index)
    try:
        yield
    finally:
        for module in [*layers, *marked]:
            module._route = None


def _check_positive(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def as_list(value: int | Sequence[int], length: int, name: str) -> list[int]:
    """Broadcast an int to ``length`` entries, or check a sequence has ``length`` entries."""
    if isinstance(value, int):
        return [value] * length
    values = list(value)
    if len(values) != length:
        raise ValueError(f"{name} has {len(values)} entries but the network has {length} layers")
    return values

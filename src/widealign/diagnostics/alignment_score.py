"""The input-weight alignment score, per synaptic layer, with its shuffled control.

See docs/method.md#alignment-score.

For one synaptic layer let ``dW = W_a(T) - W(0)`` and ``dW' = W_b(T) - W(0)`` be the changes of two
networks trained from the same initialisation (bp and the "theory" rule, in the paper). With
Gaussian noise ``n`` shaped like a batch of the layer's inputs,

    P n = dW^T (dW n) / fan_out,        P n  <-  P n / mean(|P n|),

where ``dW n`` is the layer's own linear map without bias or forward factor (a dense product, or a
convolution with the layer's stride and TensorFlow SAME padding, whose transpose is the transposed
convolution followed by cropping the padding). Over ``draws`` independent draws,

    WD = sum <P n, P' n>,   WW = sum <P n, P n>,   DD = sum <P' n, P' n>,
    alignment = WD / sqrt(WW * DD).

``fan_out`` is ``out_features`` for a dense layer and ``k*k*C_out`` for a ``k x k`` convolution;
like the omitted forward factor it is a constant that the normalisation cancels. The *shuffled
control* replaces ``dW`` by ``shuffle(W_a(T)) - W(0)``, a random permutation of all of ``W_a(T)``'s
entries: an update of the same size that carries no structure learnt from the inputs.

Both ``P`` are positive semi-definite, so the score of two unrelated updates is not 0 but about
``rank/dimension`` (``fan_out/fan_in`` for random dense updates): read scores against the control.
A layer whose update is exactly zero scores 0; a layer with one input (the Add-task RNN's input
layer) always scores 1, since every ``P`` is then a multiple of the identity.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widealign.models.layers import Conv2d, Route, Synaptic, routed, same_padding, synaptic_layers

#: Noise draws and noise batch size of docs/method.md#alignment-score.
DRAWS = 100
BATCH = 100


class LayerAlignment(NamedTuple):
    """One synaptic layer's alignment score and its shuffled-weights control."""

    score: float
    shuffled: float


def fan_out(layer: Synaptic) -> int:
    """Outputs fed by one input: ``out_features`` (dense) or ``k*k*C_out`` (convolution)."""
    if isinstance(layer, Conv2d):
        return layer.kernel_size * layer.kernel_size * layer.out_channels
    return layer.weight.shape[0]


def _conv_pads(layer: Conv2d, shape: torch.Size) -> tuple[int, int, int, int]:
    top, bottom = same_padding(shape[-2], layer.kernel_size, layer.stride)
    left, right = same_padding(shape[-1], layer.kernel_size, layer.stride)
    return left, right, top, bottom


def project(layer: Synaptic, dw: Tensor, n: Tensor) -> Tensor:
    """``P n = dW^T (dW n) / fan_out`` with ``dW`` acting as ``layer``'s linear map on inputs ``n``.

    For a convolution, ``dW n`` pads ``n`` as the layer does (TensorFlow SAME) and convolves with its
    stride; ``dW^T`` is the exact adjoint: a transposed convolution, then the padding cropped.
    """
    if isinstance(layer, Conv2d):
        left, right, top, bottom = _conv_pads(layer, n.shape)
        padded = F.pad(n, (left, right, top, bottom))
        y = F.conv2d(padded, dw, stride=layer.stride)
        back = torch.nn.grad.conv2d_input(padded.shape, dw, y, layer.stride)
        back = back[..., top : back.shape[-2] - bottom, left : back.shape[-1] - right]
    else:
        back = (n @ dw.T) @ dw
    return back / fan_out(layer)


def _gram(
    layer: Synaptic,
    updates: list[Tensor],
    input_shape: tuple[int, ...],
    generator: torch.Generator,
    draws: int,
    batch: int,
) -> Tensor:
    """``G[i, j] = sum over draws of <P_i n, P_j n>``, every ``P_i n`` normalised by its mean |.|."""
    ref = updates[0]
    gram = torch.zeros(len(updates), len(updates), dtype=torch.float64, device=ref.device)
    for _ in range(draws):
        n = torch.randn((batch, *input_shape), generator=generator, device=generator.device, dtype=ref.dtype)
        n = n.to(ref.device)
        rows = []
        for dw in updates:
            p = project(layer, dw, n)
            scale = p.abs().mean()
            rows.append((p / scale if scale > 0 else p).flatten().double())
        stacked = torch.stack(rows)
        gram += stacked @ stacked.T
    return gram


def _cosine(gram: Tensor, i: int, j: int) -> float:
    denominator = math.sqrt(float(gram[i, i]) * float(gram[j, j]))
    return float(gram[i, j]) / denominator if denominator > 0 else 0.0


def layer_alignment(
    layer: Synaptic,
    dw_a: Tensor,
    dw_b: Tensor,
    input_shape: tuple[int, ...],
    generator: torch.Generator,
    draws: int = DRAWS,
    batch: int = BATCH,
) -> float:
    """``WD / sqrt(WW * DD)`` of two weight updates of ``layer`` (docs/method.md#alignment-score).

    ``input_shape`` is one example's input to the layer (e.g. ``(C, H, W)``); noise is drawn from
    ``generator`` (on its device), so the same generator state gives the same score.
    """
    return _cosine(_gram(layer, [dw_a.detach(), dw_b.detach()], input_shape, generator, draws, batch), 0, 1)


def shuffled_update(final: Tensor, initial: Tensor, generator: torch.Generator) -> Tensor:
    """The control update ``shuffle(W(T)) - W(0)``: all entries of ``W(T)`` randomly permuted."""
    perm = torch.randperm(final.numel(), generator=generator, device=generator.device).to(final.device)
    return final.detach().flatten()[perm].reshape(final.shape) - initial.detach()


class _RecordShapes(Route):
    def __init__(self, num_layers: int) -> None:
        self.shapes: list[tuple[int, ...] | None] = [None] * num_layers

    def input(self, index: int, x: Tensor) -> Tensor:
        if self.shapes[index] is None:
            self.shapes[index] = tuple(x.shape[1:])
        return x


def layer_input_shapes(model: nn.Module, x: Tensor) -> list[tuple[int, ...]]:
    """One example's input shape for every synaptic layer, from a forward pass on the batch ``x``.

    A layer called more than once per pass (an RNN's recurrent layer) reports its first call.
    """
    record = _RecordShapes(len(synaptic_layers(model)))
    with torch.no_grad(), routed(model, record):
        model(x)
    return [shape if shape is not None else () for shape in record.shapes]


def alignment_scores(
    trained_a: nn.Module,
    trained_b: nn.Module,
    initial: nn.Module,
    x: Tensor,
    generator: torch.Generator,
    draws: int = DRAWS,
    batch: int = BATCH,
) -> list[LayerAlignment]:
    """Per synaptic layer (forward order), the alignment of two networks' updates and its control.

    ``trained_a`` and ``trained_b`` (bp and theory, in the paper) were trained from ``initial``, a
    network of the same architecture holding ``W(0)``; ``x`` is an example input batch, used only
    for the layers' input shapes. The control shuffles ``trained_a``'s weights.
    """
    layers = [synaptic_layers(m) for m in (initial, trained_a, trained_b)]
    if not len(layers[0]) == len(layers[1]) == len(layers[2]):
        raise ValueError("the three networks have different numbers of synaptic layers")
    shapes = layer_input_shapes(initial, x)
    results = []
    for layer0, layer_a, layer_b, shape in zip(*layers, shapes, strict=True):
        w0 = layer0.weight.detach()
        if not w0.shape == layer_a.weight.shape == layer_b.weight.shape:
            raise ValueError(
                f"weight shapes differ: {w0.shape}, {layer_a.weight.shape}, {layer_b.weight.shape}"
            )
        updates = [
            layer_a.weight.detach() - w0,
            layer_b.weight.detach() - w0,
            shuffled_update(layer_a.weight, w0, generator),
        ]
        gram = _gram(layer0, updates, shape, generator, draws, batch)
        results.append(LayerAlignment(_cosine(gram, 0, 1), _cosine(gram, 2, 1)))
    return results


def alignment_metrics(scores: list[LayerAlignment]) -> dict[str, float]:
    """A flat, JSON-friendly record: ``align/i`` and ``align_shuffled/i`` per synaptic layer ``i``."""
    record: dict[str, float] = {}
    for i, s in enumerate(scores):
        record[f"align/{i}"] = s.score
        record[f"align_shuffled/{i}"] = s.shuffled
    return record

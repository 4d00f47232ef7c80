"""Kunin et al. 2020's local primitives for learning a feedback matrix B of a layer with weight W.

Written for one synaptic layer with forward map ``A_W x = scale * W x`` (dense) or
``scale * conv(x, W)`` (convolution, the layer's padding and stride) and ``A_B`` the same map with
``B``. With ``W_e = scale * W`` and ``B_e = scale * B`` the matrices the layer effectively applies,
and means taken over the batch (and, for a layer called several times, over its calls):

* decay:  ``||W_e||^2 + ||B_e||^2``
* self:   ``-<W_e, B_e>``                       (``-tr(B^T W)``)
* amp:    ``-mean_n <A_B x_n, A_W x_n>``        (``-tr(x^T B^T W x)``)
* null:   ``mean_n ||A_B^T A_W x_n||^2``        (``||B^T W x||^2``, the forward reconstruction)

``amp`` and ``null`` take an optional ``bias`` (the layer's, as it adds it: ``A_W x + b``), which
Kunin et al.'s code adds to both projections by default (``use_bias_forward`` and
``use_bias_backward``, ``flags.py`` lines 558-566; ``Alignments/alignment.py`` lines 106-126):

* amp with bias:  ``-mean_n <A_B x_n + b, A_W x_n + b>``
* null with bias: ``mean_n ||A_B^T (A_W x_n + b)||^2``

They are written in the effective matrices so that their balance, and the fixed points of the
rules built from them, are the same under the NTK and the standard parameterisation (under the
standard one ``scale = 1`` and these are Kunin et al.'s formulas on the kernels).
"""

from __future__ import annotations

import torch
from torch import Tensor

from widealign.models.layers import Synaptic


def decay(layer: Synaptic, w: Tensor, b: Tensor) -> Tensor:
    """``||W_e||^2 + ||B_e||^2``."""
    return layer.scale**2 * (w.square().sum() + b.square().sum())


def self_(layer: Synaptic, w: Tensor, b: Tensor) -> Tensor:
    """``-<W_e, B_e>``."""
    return -(layer.scale**2) * (w * b).sum()


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _with_bias(z: Tensor, bias: Tensor | None) -> Tensor:
    """``z + bias`` on the output axis (channels of a convolution's ``(N, C, H, W)``, else the last)."""
    if bias is None:
        return z
    return z + (bias[:, None, None] if z.dim() == 4 else bias)


def amp(layer: Synaptic, w: Tensor, b: Tensor, x: Tensor, bias: Tensor | None = None) -> Tensor:
    """``-mean_n <A_B x_n + bias, A_W x_n + bias>`` over the rows (samples) of ``x``."""
    back = _with_bias(layer.apply_matrix(x, b), bias)
    return -(_flat(back) * _flat(_with_bias(layer.apply_matrix(x, w), bias))).sum(1).mean()


def null(layer: Synaptic, w: Tensor, b: Tensor, x: Tensor, bias: Tensor | None = None) -> Tensor:
    """``mean_n ||A_B^T (A_W x_n + bias)||^2``: the forward response sent back through B should vanish."""
    z = _with_bias(layer.apply_matrix(x, w), bias)
    probe = torch.zeros_like(x, requires_grad=True)
    with torch.enable_grad():
        (back,) = torch.autograd.grad(layer.apply_matrix(probe, b), probe, z, create_graph=True)
    return _flat(back).square().sum(1).mean()

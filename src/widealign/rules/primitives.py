"""Kunin et al. 2020's local primitives for learning a feedback matrix B of a layer with weight W.

Written for one synaptic layer with forward map ``A_W x = scale * W x`` (dense) or
``scale * conv(x, W)`` (convolution, the layer's padding and stride) and ``A_B`` the same map with
``B``. With ``W_e = scale * W`` and ``B_e = scale * B`` the matrices the layer effectively applies,
and means taken over the batch (and, for a layer called several times, over its calls):

* decay:  ``||W_e||^2 + ||B_e||^2``
* self:   ``-<W_e, B_e>``                       (``-tr(B^T W)``)
* amp:    ``-mean_n <A_B x_n, A_W x_n>``        (``-tr(x^T B^T W x)``)
* null:   ``mean_n ||A_B^T A_W x_n||^2``        (``||B^T W x||^2``, the forward reconstruction)

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


def amp(layer: Synaptic, w: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """``-mean_n <A_B x_n, A_W x_n>`` over the rows (samples) of ``x``."""
    return -(_flat(layer.apply_matrix(x, b)) * _flat(layer.apply_matrix(x, w))).sum(1).mean()


def null(layer: Synaptic, w: Tensor, b: Tensor, x: Tensor) -> Tensor:
    """``mean_n ||A_B^T A_W x_n||^2``: the forward response sent back through B should vanish."""
    z = layer.apply_matrix(x, w)
    probe = torch.zeros_like(x, requires_grad=True)
    with torch.enable_grad():
        (back,) = torch.autograd.grad(layer.apply_matrix(probe, b), probe, z, create_graph=True)
    return _flat(back).square().sum(1).mean()

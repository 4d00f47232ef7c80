"""Han et al.'s extensions of dfa to CNNs and RNNs, as options of the ``dfa`` rule.

Han, Park, Ryu & Yoo, "Extension of Direct Feedback Alignment to Convolutional and Recurrent
Neural Network for Bio-plausible Deep Learning" (arXiv 2006.12830, 2020) name four pieces; the
paper gives no code, so where it is vague the reading below is ours (``docs/method.md#dfa-modules``).

Notation: synaptic layers ``0 .. L-1`` (the readout last); the *hidden output* ``u_s`` is the
activity that feeds synaptic layer ``s`` (the model's ``"hidden"`` taps where it marks them, else
the layer's input); ``e = dL/df`` the output error; ``B_s`` the fixed matrix plain dfa draws for
``u_s`` (same seed, same draws).

* ``modules=k`` (module-wise DFA): the synaptic layers are split into ``k`` contiguous groups, the
  first groups one layer larger when ``L`` is not a multiple of ``k``. At the input ``u_s`` of each
  module but the first the error is ``B_s^T e`` alone (``sg`` on that input); inside a module it
  backpropagates through the module's own layers with their current weights (through time too, on
  the RNN). ``modules=1`` is bp; ``modules=L`` is plain dfa on feed-forward models (on the RNN,
  ``modules=2`` keeps backprop through time inside the recurrent module, ``modules=3`` is plain dfa).
  ``modules=0`` (the default) is plain dfa.
* ``bp_modules=j`` (hybrid DFA): the last ``j`` modules learn by backprop: the ``j - 1``
  boundaries between them are removed, so the output error reaches them through the true weights;
  earlier modules still receive ``B_s^T e``. The last module always learns from the true error, so
  ``bp_modules=1`` changes nothing; ``bp_modules >= k`` is bp. With ``modules=0`` every synaptic
  layer is a module: ``bp_modules=2`` trains the readout and the layer below it by backprop.
* ``sparse=r`` (sparse backward weights): ``B_s`` keeps one entry in ``r``. For a conv map ``u_s``
  (C x H x W) the entries kept are the rows and columns ``h, w`` divisible by ``r`` (every channel),
  so ``B_s u_s`` is a convolution of ``u_s`` with the kernel ``K[o, c, i, j] = B_s[o, c, r*i, r*j]``
  dilated by ``r`` (and ``B_s^T e`` its transpose); for a vector ``u_s`` (dense layers, the RNN
  state) the entries kept are ``(j - o) % r == 0``, and the product runs as a sparse matrix product.
* ``groups=G`` (error propagation through group convolution): inside a module the error passes
  back through a convolution with its weight restricted to ``G`` diagonal blocks (input channels
  ``g*C_in/G .. (g+1)*C_in/G`` reach output channels of block ``g`` only), i.e. by a group
  convolution of those blocks; dense layers pass it with their whole weight, and the weight
  gradients stay the true local ones. (The blocks are applied as the masked dense kernel: the
  numbers are the group convolution's, the cost is the full convolution's.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from widealign.models.layers import Route, Synaptic


@dataclass(frozen=True)
class ModuleOptions:
    """The dfa options of Han et al. (their defaults give plain dfa)."""

    modules: int = 0
    bp_modules: int = 0
    sparse: int = 1
    groups: int = 1

    def __post_init__(self) -> None:
        for name, least in (("modules", 0), ("bp_modules", 0), ("sparse", 1), ("groups", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"dfa option {name} must be an integer >= {least}, got {value!r}")

    @property
    def plain(self) -> bool:
        """Whether these options give plain dfa."""
        return self == ModuleOptions()

    def boundaries(self, num_layers: int) -> set[int]:
        """The synaptic layers whose input is a module boundary (``sg``'d, receives ``B^T e``)."""
        if self.modules > num_layers:
            raise ValueError(f"dfa modules={self.modules} exceeds the model's {num_layers} synaptic layers")
        k = self.modules or num_layers
        sizes = [num_layers // k + (m < num_layers % k) for m in range(k)]
        starts = [sum(sizes[:m]) for m in range(1, k)]
        kept = starts[: max(len(starts) - max(self.bp_modules - 1, 0), 0)]
        if self.groups > 1 and len(kept) == num_layers - 1:
            raise ValueError(
                f"dfa groups={self.groups} acts on errors passing inside a module; with every layer its own "
                "module none does (set modules)"
            )
        return set(kept)


def block_mask(weight: Tensor, groups: int) -> Tensor:
    """1 where ``weight`` (out, in, ...) connects input and output channels of the same block."""
    out_c, in_c = weight.shape[:2]
    if out_c % groups or in_c % groups:
        raise ValueError(
            f"dfa groups={groups} must divide the channels of a layer of weight {tuple(weight.shape)}"
        )
    blocks = torch.arange(out_c)[:, None] * groups // out_c == torch.arange(in_c)[None, :] * groups // in_c
    return blocks.to(weight.dtype).reshape(out_c, in_c, *([1] * (weight.dim() - 2)))


def sparse_mask(outputs: int, shape: tuple[int, ...], rate: int) -> Tensor:
    """The entries of ``B`` (outputs x prod(shape)) kept by ``sparse=rate``, as 0/1 floats."""
    if len(shape) == 3:
        _, h, w = shape
        keep = (torch.arange(h)[:, None] % rate == 0) & (torch.arange(w)[None, :] % rate == 0)
        return keep.expand(outputs, *shape).reshape(outputs, -1).double()
    (d,) = shape
    return ((torch.arange(d)[None, :] - torch.arange(outputs)[:, None]) % rate == 0).double()


def dilated_kernel(matrix: Tensor, shape: tuple[int, int, int], rate: int) -> Tensor:
    """The kernel ``K[o, c, i, j] = B[o, c, r*i, r*j]`` of a sparse ``B`` on a C x H x W map."""
    return matrix.reshape(matrix.shape[0], *shape)[:, :, ::rate, ::rate]


def project(u: Tensor, matrix: Tensor, rate: int, batch_dims: int) -> Tensor:
    """``B u`` for each sample: ``u`` has ``batch_dims`` leading axes, ``B`` is (outputs, d).

    With ``rate`` > 1 a conv map goes through a dilated convolution and a vector through a sparse
    matrix product; either equals the dense product with ``B`` (whose other entries are zero).
    """
    features = u.shape[batch_dims:]
    if rate == 1:
        return F.linear(u.flatten(batch_dims), matrix)
    if len(features) == 3:
        kernel = dilated_kernel(matrix, tuple(features), rate)
        h, w = (rate * (k - 1) + 1 for k in kernel.shape[2:])  # the dilated kernel's extent
        return F.conv2d(u[..., :h, :w], kernel, dilation=rate).flatten(1)
    flat = u.reshape(-1, features.numel())
    product = torch.sparse.mm(matrix.to_sparse(), flat.T).T
    return product.reshape(*u.shape[:batch_dims], -1)


class ModuleRoute(Route):
    """Stops the gradient at the boundary layers' inputs, records the hidden outputs, and hands the
    other layers the block-diagonal part of their weight (``groups``) or their weight."""

    def __init__(self, num_layers: int, boundaries: set[int], tapped: bool, groups: int) -> None:
        self.boundaries, self.tapped, self.groups = boundaries, tapped, groups
        self.inputs: list[list[Tensor]] = [[] for _ in range(num_layers)]
        self.hidden: list[Tensor] = []

    def input(self, index: int, x: Tensor) -> Tensor:
        if not self.tapped and index > 0:
            self.inputs[index].append(x)
        return x.detach() if index in self.boundaries else x

    def feedback(self, index: int, layer: Synaptic) -> Tensor:
        if self.groups == 1 or index in self.boundaries or index == 0 or layer.weight.dim() != 4:
            return layer.weight
        return layer.weight * block_mask(layer.weight, self.groups)

    def tap(self, kind: str, index: int, x: Tensor) -> Tensor:
        if kind == "hidden":
            self.hidden.append(x)
        return x

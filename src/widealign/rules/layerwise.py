"""A feed-forward model seen as a chain of synaptic layers, for the relaxation rules.

Activation relaxation, predictive coding, PAL and dynamic inversion (docs/relaxation.md) work layer
by layer: they need each synaptic layer's input, the neuron-local stage that follows it, and the
linear maps ``v -> W v`` and ``g -> B^T g`` on arbitrary vectors. :class:`Chain` provides those for
the model families where the chain is explicit:

    u_0 = input,   a_l = L_l(u_l) = s_l W_l u_l + b_l,   u_{l+1} = f_l(a_l),   output = a_{L-1},

where ``L_l`` is synaptic layer ``l`` (``s_l`` its forward factor) and ``f_l`` the neuron-local stage
after it: ``relu`` in the MLP; ``relu(norm(a))`` in the conv net, ``mean_hw(relu(norm(a)))`` after
its last conv; ``psi`` in Song et al.'s two-layer net; the modules between two synaptic layers of an
``nn.Sequential``. Every stage is written as ``f_l = g_l(phi(h_l(a)))`` with ``phi`` the pointwise
nonlinearity; "no nonlinear derivatives" (``derivatives=False``) replaces ``phi'`` by 1 and keeps
the Jacobians of the linear or normalising parts ``g_l``, ``h_l`` (pooling, normalisation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from widealign.models.layers import Conv2d, Dense, Synaptic, same_padding, synaptic_layers
from widealign.models.networks import ACTIVATIONS, MLP, ConvNet, TwoLayer

Stage = Callable[[Tensor, bool], Tensor]


def _identity(z: Tensor) -> Tensor:
    return z


class Chain:
    """The layer-by-layer view of an MLP, a conv net, a TwoLayer or an ``nn.Sequential``.

    Raises ``ValueError`` (one line, naming ``rule``) for any other model, e.g. the RNN.
    """

    def __init__(self, model: nn.Module, rule: str) -> None:
        self.model = model
        self.layers: list[Synaptic] = synaptic_layers(model)
        self.flatten = False
        self.phi: Callable[[Tensor], Tensor] = F.relu
        self._pointwise = True
        if isinstance(model, MLP):
            self.flatten = True
            self._stages: list[Stage] = [_pointwise(F.relu)] * (len(self.layers) - 1)
        elif isinstance(model, TwoLayer):
            self.flatten = True
            self.phi = ACTIVATIONS[model.activation]
            self._stages = [_pointwise(self.phi)]
        elif isinstance(model, ConvNet):
            self._pointwise = False
            norms = list(model.norms)
            self._stages = [(lambda a, d, n=n: _relu_if(n(a), d)) for n in norms[:-1]]
            last = norms[-1]
            self._stages.append(lambda a, d: _relu_if(last(a), d).mean((2, 3)))
        elif isinstance(model, nn.Sequential) and self._sequential_ok(model):
            between: list[list[nn.Module]] = [[]]
            for m in model:
                if isinstance(m, Synaptic):
                    between.append([])
                else:
                    between[-1].append(m)
            self.phi = _identity
            self._stages = [(lambda a, d, ms=ms: _run(ms, a) if d else a) for ms in between[1:-1]]
        else:
            raise ValueError(
                f"{rule} supports the mlp, the convnet and chains of dense layers, not {type(model).__name__}"
            )

    @staticmethod
    def _sequential_ok(model: nn.Sequential) -> bool:
        kinds = [isinstance(m, Synaptic) for m in model]
        dense = all(isinstance(m, Dense) for m in model if isinstance(m, Synaptic))
        return bool(kinds) and kinds[0] and kinds[-1] and dense

    def __len__(self) -> int:
        return len(self.layers)

    def input(self, x: Tensor) -> Tensor:
        """``u_0``: the model's input as its first synaptic layer sees it."""
        return x.flatten(1) if self.flatten else x

    def stage(self, index: int, a: Tensor, derivatives: bool = True) -> Tensor:
        """``u_{index+1} = f_index(a)``; with ``derivatives=False`` the pointwise ``phi`` is dropped."""
        return self._stages[index](a, derivatives)

    def stage_vjp(self, index: int, a: Tensor, g: Tensor, derivatives: bool = True) -> Tensor:
        """``(d f_index / d a)^T g`` at ``a``: the stage's local Jacobian transposed (no parameters)."""
        if self._pointwise and not derivatives:
            return g
        if self._pointwise and self.phi is F.relu and isinstance(self.model, MLP | TwoLayer):
            return g * (a > 0).to(g.dtype)
        with torch.enable_grad():
            leaf = a.detach().requires_grad_()
            (out,) = torch.autograd.grad(self.stage(index, leaf, derivatives), leaf, g)
        return out

    def stage_map(self, index: int, a: Tensor, derivatives: bool = True) -> Callable[[Tensor], Tensor]:
        """``g -> (d f_index / d a)^T g`` at a fixed ``a``, prepared once for repeated use."""
        if self._pointwise and not derivatives:
            return _identity
        if self._pointwise and self.phi is F.relu and isinstance(self.model, MLP | TwoLayer):
            mask = (a > 0).to(a.dtype)
            return lambda g: g * mask
        with torch.enable_grad():
            leaf = a.detach().requires_grad_()
            out = self.stage(index, leaf, derivatives)
        return lambda g: torch.autograd.grad(out, leaf, g, retain_graph=True)[0]

    def transpose_map(self, index: int, matrix: Tensor, like: Tensor) -> Callable[[Tensor], Tensor]:
        """``g -> s B^T g`` for a fixed ``matrix`` (see :meth:`transpose`), prepared once."""
        layer = self.layers[index]
        if isinstance(layer, Conv2d):
            return lambda g: self.transpose(index, g, matrix, like)
        scaled = matrix * layer.scale
        return lambda g: g @ scaled

    def linear(self, index: int, v: Tensor, weight: Tensor | None = None) -> Tensor:
        """``s W v`` (no bias) for layer ``index``, with its current weight unless ``weight`` is given."""
        layer = self.layers[index]
        w = layer.weight.detach() if weight is None else weight
        if isinstance(layer, Conv2d):
            return F.conv2d(_pad(layer, v), w, None, layer.stride) * layer.scale
        return F.linear(v, w) * layer.scale

    def transpose(self, index: int, g: Tensor, matrix: Tensor, like: Tensor) -> Tensor:
        """``s B^T g``: ``g`` (shaped like layer ``index``'s output) carried back through ``matrix``.

        ``matrix`` has the weight's layout; ``like`` is a tensor shaped like the layer's input.
        """
        layer = self.layers[index]
        if isinstance(layer, Conv2d):
            padded = _pad(layer, like).shape
            g = (g * layer.scale).to(matrix.dtype)  # bfloat16 under autocast; conv backward needs one dtype
            full = torch.nn.grad.conv2d_input(padded, matrix, g, layer.stride)
            top, _ = same_padding(like.shape[-2], layer.kernel_size, layer.stride)
            left, _ = same_padding(like.shape[-1], layer.kernel_size, layer.stride)
            return full[..., top : top + like.shape[-2], left : left + like.shape[-1]]
        return (g * layer.scale) @ matrix

    def correlate(self, index: int, g: Tensor, x: Tensor) -> Tensor:
        """``g x^T`` in the weight's layout, summed over the batch (and positions, for a conv)."""
        layer = self.layers[index]
        if isinstance(layer, Conv2d):
            x = _pad(layer, x)
            return torch.nn.grad.conv2d_weight(x, layer.weight.shape, g.to(x.dtype), layer.stride)
        return g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """One pass with every layer's input ``sg``'d: inputs ``u`` (``u[0]`` the model input) and
        outputs ``a`` (``a[-1]`` the network output), the ``u[l+1]`` and ``a`` carrying graphs to the
        parameters only, so that ``torch.autograd.backward(u[l+1], delta)`` is layer ``l``'s local update.
        """
        u, a = [self.input(x)], []
        for index, layer in enumerate(self.layers):
            a.append(layer(u[-1].detach()))
            if index < len(self.layers) - 1:
                u.append(self.stage(index, a[-1]))
        return u, a


def _pointwise(phi: Callable[[Tensor], Tensor]) -> Stage:
    return lambda a, d: phi(a) if d else a


def _relu_if(a: Tensor, derivatives: bool) -> Tensor:
    return F.relu(a) if derivatives else a


def _run(modules: list[nn.Module], a: Tensor) -> Tensor:
    for m in modules:
        a = m(a)
    return a


def _pad(layer: Conv2d, x: Tensor) -> Tensor:
    top, bottom = same_padding(x.shape[-2], layer.kernel_size, layer.stride)
    left, right = same_padding(x.shape[-1], layer.kernel_size, layer.stride)
    return F.pad(x, (left, right, top, bottom))


def local_update(u: list[Tensor], a: list[Tensor], deltas: list[Tensor], error: Tensor) -> None:
    """Fill the parameters' ``.grad`` with every layer's local update.

    ``deltas[l]`` stands for ``dL/du_{l+1}`` (hidden layers, in order) and ``error`` for ``dL/da_{L-1}``;
    each layer's update is its local gradient given that signal (the same arithmetic as backprop).
    """
    torch.autograd.backward([*u[1:], a[-1]], [*deltas, error])


def check_choice(name: str, value: object, options: tuple[str, ...]) -> None:
    """One-line error for an option outside its choices."""
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(options)}")


def learned_feedback_step(rule: nn.Module, lr: float) -> None:
    """``B_l <- B_l - lr * grad W_l`` for every learned backward matrix ``rule.feedback_l``.

    The backward weights receive the forward weights' own update (transposed in the papers'
    notation, the same array in the weight layout used here), as in Millidge et al.'s relaxations.
    """
    with torch.no_grad():
        for b, layer in zip(rule.feedback, rule.layers):
            if b is not None and layer.weight.grad is not None:
                b.sub_(lr * layer.weight.grad)


#: The relaxation rules test for convergence every this many iterations (each test synchronises
#: and costs about as much as an iteration of a small layer).
CHECK_EVERY = 10


def settled(changes: list[Tensor], values: list[Tensor], tol: float) -> bool:
    """Whether one iteration of a relaxation changed its variables by at most ``tol`` relative,
    ``sqrt(sum |dx|^2) <= tol * sqrt(sum |x|^2)`` over all relaxed variables (the convergence stop
    of the relaxation rules, which pass their option ``tol`` times their step size, so that the
    test bounds the relative residual of the fixed-point equation; ``tol=0`` never stops)."""
    if changes[0].device.type == "meta":  # tensors without values never converge
        return False
    change = sum(float(c.square().sum()) for c in changes)
    size = sum(float(v.square().sum()) for v in values)
    return change <= tol * tol * size


def check_relaxation(rule: str, iterations: int, tol: float) -> None:
    """One-line errors for a maximum iteration count below 1 or a negative tolerance."""
    if iterations < 1:
        raise ValueError(f"{rule}: iterations must be at least 1, got {iterations}")
    if not tol >= 0:
        raise ValueError(f"{rule}: tol must be >= 0, got {tol}")

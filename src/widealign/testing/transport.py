"""A weight-transport check that can fail: which current forward weights a rule reads.

:func:`forward_weight_reads` runs one ``rule.backward(x, y)`` under a
``torch.utils._python_dispatch.TorchDispatchMode`` that sees every tensor operation (the rule's
own code, the forward passes and autograd's backward passes alike) and follows what is computed
from the model's forward weights, the ``weight`` of every synaptic layer (``Dense``, ``Conv2d``).

**What counts as a forward use.** A weight may be used as its layer uses it in a forward pass: as
the weight operand of the layer's own linear map in the forward direction, ``x W^T`` (``aten.mm``,
``addmm``, ``bmm``, ``baddbmm`` with ``W^T`` on the right, which is what ``F.linear`` dispatches to,
and ``aten.linear``) or ``conv(x, W)`` (``aten.convolution``, not transposed), applied to any
input: the data's activity, value nodes, noise, an inversion's ``r_x``. What such a product computes
is activity, which carries nothing of ``W`` that the layer's output does not; every rule's forward
pass is made of these. So is sending noise through the layer (weight mirroring's mirror phase),
which is how those rules learn about ``W`` without transporting it. Rows are samples, as in
``F.linear``: ``W`` on the left of a product (``W @ X``) is not taken for a forward use, since
``W @ B`` and ``B @ W`` are the same kind of read (write a forward use as ``x @ W.T``,
``F.linear(x, W)`` or the layer's ``apply_matrix(x, W)``).

**What counts as a read.** Every other operation on a forward weight, or on anything computed from
one by such an operation, makes its result *carry* that weight: ``W^T g`` (``g @ W``, the backward
pass of a linear layer, ``convolution_backward``, a transposed convolution), a copy kept for later
(``W.clone()``, ``.detach()`` of a copy, ``.to()``, ``copy_``), ``sign(W)``, ``W * mask``,
``W @ B``, a norm, an eigen-decomposition. A copy (views, clones, casts, scalar multiples) stays a
forward weight until something other than a forward use touches it: a fresh ``W.clone()`` per step
sent through a backward pass is read. Whatever an operation computes from carried values carries
them too (the union over its inputs), so the trail survives any chain of operations; operations
that use only a tensor's shape and dtype (``zeros_like``, ``new_empty``) carry nothing. A weight is
reported when what carries it reaches

* another parameter's update: the ``.grad`` of any model parameter but its own (a weight's value in
  its own update, like Kolen-Pollack's weight decay ``W.grad += lambda W``, is local to the synapse),
* the rule's state: its buffers, parameters and their ``.grad``, and any tensor the rule object
  holds after the call, or the model's buffers,
* Python: a number taken out of a tensor (``.item()``, ``float()``, ``bool()``, a comparison that
  returns a bool), which can steer the rule (dynamic inversion's stability check does).

The result names the weights by their names in ``model.named_parameters()``: ``"layers.1.weight"``
when its value is read, ``"layers.1.weight:sign"`` when only its sign is (what reaches a sink was
computed through ``sign(W)``: usf, frsf and brsf). A weight read both ways is reported once, by
value. :func:`read_kind` sums a result up in the words of the rules' declaration
(``Rule.reads``): ``"nothing"``, ``"weight-sign"`` or ``"weight"``.

Limits (documented, not silent): only the synaptic layers' weights are watched (biases, norms'
parameters and an RNN's ``h0`` carry no error backwards through a linear map); values that leave
the tensor world without a dispatched operation (``.numpy()``, ``.tolist()``) are not followed; a
rule that writes into the weights themselves is not checked; a weight that carries itself only into
its own ``.grad`` is not reported (so backprop through time's use of the recurrent weight in its own
update is not, though every other layer's is); a batched run's member blocks (views of part of a
weight) count as reads. Probing the forward map with chosen inputs (the identity, noise) is a
forward use by the definition above: that is weight mirroring, which the check passes by design.
The check watches one call: run a step first if the rule does something once, at its first call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from widealign.models.layers import synaptic_layers
from widealign.rules import check_rule_options
from widealign.rules.base import READS, Rule, check_variant

aten = torch.ops.aten

#: Suffix of a weight whose sign alone is read.
SIGN = ":sign"

# Operations whose result depends on their inputs' shapes and dtypes only.
_SHAPE_ONLY = {
    aten.empty_like,
    aten.zeros_like,
    aten.ones_like,
    aten.full_like,
    aten.rand_like,
    aten.randn_like,
    aten.randint_like,
    aten.new_empty,
    aten.new_empty_strided,
    aten.new_zeros,
    aten.new_ones,
    aten.new_full,
    aten.sym_size,
    aten.sym_stride,
    aten.sym_numel,
    aten.sym_storage_offset,
    aten.is_same_size,
}
# Operations that give a (scalar multiple of a) copy of their one carried input, the same shape.
_COPIES = {
    aten.clone,
    aten._to_copy,
    aten.lift_fresh_copy,
    aten.neg,
    aten.mul,
    aten.div,
    aten.positive,
}
_SIGNS = {aten.sign, aten.sgn, aten.signbit}
# Matrix products whose second operand is the weight operand of a linear map x W^T.
_PRODUCTS = {aten.mm, aten.bmm, aten.addmm, aten.baddbmm}


@dataclass(frozen=True)
class _Copy:
    """A storage that holds ``c * W`` (``flip`` False) or ``c * W^T`` (``flip`` True) when viewed
    with ``shape``, ``stride`` and ``offset``."""

    flip: bool
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int

    def orientation(self, t: Tensor) -> str:
        """``"same"`` if ``t`` is c*W, ``"flipped"`` if it is c*W^T, ``"other"`` otherwise."""
        shape, stride, offset = tuple(t.shape), tuple(t.stride()), t.storage_offset()
        if offset == self.offset and (shape, stride) == (self.shape, self.stride):
            return "flipped" if self.flip else "same"
        if (
            offset == self.offset
            and len(shape) == 2
            and (shape, stride) == (self.shape[::-1], self.stride[::-1])
        ):
            return "same" if self.flip else "flipped"
        return "other"


def _copy_of(t: Tensor, flip: bool) -> _Copy:
    return _Copy(flip, tuple(t.shape), tuple(t.stride()), t.storage_offset())


# A label on a storage: a _Copy (still a forward weight) or "value" / "sign" (carried).
Label = Any


def _key(t: Tensor) -> tuple | None:
    """Where a tensor's values live: its storage (shared by its views), or the tensor itself for
    layouts without one (sparse); None for tensors without values."""
    if t.layout != torch.strided:
        return ("id", id(t))
    storage = t.untyped_storage()
    if storage.nbytes() == 0 or t.device.type == "meta":
        return None
    return ("storage", t.device.type, t.device.index, storage.data_ptr())


def _carried(kind: str) -> str:
    """What a label becomes once used other than forwards: a copy's value is read."""
    return "sign" if kind == "sign" else "value"


def _merge(into: dict[str, str], name: str, kind: str) -> None:
    if into.get(name) != "value":
        into[name] = kind


class _Watch(TorchDispatchMode):
    """Follows what the watched weights' values reach (see the module docstring)."""

    def __init__(self, weights: dict[str, Tensor]) -> None:
        super().__init__()
        self.sources: dict[tuple, tuple[str, _Copy]] = {}
        for name, w in weights.items():
            key = _key(w)
            if key is None:
                raise ValueError("forward_weight_reads needs tensors with values, not the meta device")
            self.sources[key] = (name, _copy_of(w, flip=False))
        # key -> (the storage or tensor, kept alive so that its key is not reused; labels by name)
        self.derived: dict[tuple, tuple[Any, dict[str, Label]]] = {}
        self.escaped: dict[str, str] = {}

    def labels(self, t: Tensor) -> dict[str, str]:
        """The weights ``t`` holds or carries: ``"same"``/``"flipped"``/``"other"`` (a forward weight
        viewed as W, W^T, or otherwise), ``"value"`` or ``"sign"``."""
        key = _key(t)
        if key is None:
            return {}
        if key in self.sources:
            name, copy = self.sources[key]
            return {name: copy.orientation(t)}
        entry = self.derived.get(key)
        if entry is None:
            return {}
        return {n: (lab.orientation(t) if isinstance(lab, _Copy) else lab) for n, lab in entry[1].items()}

    def _set(self, t: Tensor, labels: dict[str, Label], merge: bool) -> None:
        key = _key(t)
        if key is None or key in self.sources:
            return
        held = t.untyped_storage() if key[0] == "storage" else t
        old = self.derived.get(key, (held, {}))[1] if merge else {}
        new = dict(old)
        for name, lab in labels.items():
            if merge:
                _merge(new, name, _carried(lab if isinstance(lab, str) else "value"))
            else:
                new[name] = lab
        if new:
            self.derived[key] = (held, new)
        elif key in self.derived:
            del self.derived[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        if packet in _SHAPE_ONLY:
            return out
        flat_args = [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, Tensor)]
        per_input = [self.labels(a) for a in flat_args]
        if not any(per_input):
            return out
        outputs = [o for o in pytree.tree_leaves(out) if isinstance(o, Tensor)]
        if packet is aten.convolution_backward:
            self._convolution_backward(args, out)
        else:
            self._propagate(func, packet, args, kwargs, per_input, outputs)
        if any(not isinstance(o, Tensor) for o in pytree.tree_leaves(out) if o is not None):
            for labels in per_input:
                for name, kind in labels.items():
                    _merge(self.escaped, name, _carried(kind))
        return out

    def _result(self, inputs: Iterable[dict[str, str]], forward: set[str] = frozenset()) -> dict[str, str]:
        result: dict[str, str] = {}
        for labels in inputs:
            for name, kind in labels.items():
                if name not in forward:
                    _merge(result, name, _carried(kind))
        return result

    def _propagate(self, func, packet, args, kwargs, per_input, outputs) -> None:  # noqa: ANN001
        mutated = self._mutated(func, args, kwargs)
        if mutated:
            result = self._result(per_input)
            for t in mutated:
                self._set(t, result, merge=True)
            return
        fresh = [o for o in outputs if not any(_same_storage(o, a) for a in _tensors(args, kwargs))]
        if not fresh:
            return  # a view: its values are its input's, labelled where they live
        carried = [(i, lab) for i, lab in enumerate(per_input) if lab]
        if packet in _COPIES and len(carried) == 1 and len(fresh) == 1:
            labels = carried[0][1]
            others_scalar = all(
                a.dim() == 0 for i, a in enumerate(_tensors(args, kwargs)) if i != carried[0][0]
            ) and (packet is not aten.div or carried[0][0] == 0)
            if others_scalar and all(kind in ("same", "flipped") for kind in labels.values()):
                if fresh[0].shape == _shape_of(args, carried[0][0], kwargs):
                    copy = {n: _copy_of(fresh[0], flip=(k == "flipped")) for n, k in labels.items()}
                    self._set(fresh[0], copy, merge=False)
                    return
        if packet in _SIGNS:
            result = {}
            for labels in per_input:  # the sign of a weight; the sign of a value read stays a value
                for name, kind in labels.items():
                    _merge(result, name, "value" if kind == "value" else "sign")
        else:
            result = self._result(per_input, self._forward_uses(packet, args, kwargs))
        for o in fresh:
            self._set(o, result, merge=False)

    def _forward_uses(self, packet, args, kwargs) -> set[str]:  # noqa: ANN001
        """The weights this op applies in their layer's forward direction."""
        operand = None
        if packet in _PRODUCTS:
            operand, wanted = args[-1] if packet in (aten.mm, aten.bmm) else args[2], "flipped"
        elif packet is aten.linear:
            operand, wanted = args[1], "same"
        elif packet is aten.convolution and not args[6]:
            operand, wanted = args[1], "same"
        if not isinstance(operand, Tensor):
            return set()
        if operand.dim() == 3:  # bmm: the same matrix for every batch entry (an expand of W^T)
            if operand.stride(0) != 0:
                return set()
            operand = operand[0]
        return {n for n, k in self.labels(operand).items() if k == wanted}

    def _convolution_backward(self, args, out) -> None:  # noqa: ANN001
        """grad_input from the weight (and grad_output), grad_weight from the input: each output
        carries only what it is computed from."""
        grad_output, inputs, weight = args[0], args[1], args[2]
        sources = {0: (grad_output, weight), 1: (grad_output, inputs), 2: (grad_output,)}
        for index, o in enumerate(out):
            if isinstance(o, Tensor):
                result = self._result(self.labels(t) for t in sources[index] if isinstance(t, Tensor))
                self._set(o, result, merge=False)

    @staticmethod
    def _mutated(func, args, kwargs) -> list[Tensor]:  # noqa: ANN001
        """The tensors an in-place or ``out=`` op writes."""
        written = []
        for i, arg in enumerate(func._schema.arguments):
            if arg.alias_info is None or not arg.alias_info.is_write:
                continue
            value = kwargs.get(arg.name) if arg.kwarg_only or i >= len(args) else args[i]
            written.extend(t for t in pytree.tree_leaves(value) if isinstance(t, Tensor))
        return written

    def carried_by(self, t: Tensor) -> dict[str, str]:
        """What the values of ``t`` carry (a copy of a weight held as state is a read of it); a
        forward weight itself, or a view of it, carries nothing."""
        key = _key(t)
        if key is None or key in self.sources or key not in self.derived:
            return {}
        return {
            n: _carried(lab if isinstance(lab, str) else "value") for n, lab in self.derived[key][1].items()
        }


def _tensors(args: Any, kwargs: Any) -> list[Tensor]:
    return [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, Tensor)]


def _shape_of(args: Any, index: int, kwargs: Any) -> torch.Size:
    """The shape of the ``index``-th tensor among an op's arguments."""
    return _tensors(args, kwargs)[index].shape


def _same_storage(a: Tensor, b: Tensor) -> bool:
    key = _key(a)
    return key is not None and key == _key(b)


def _held_tensors(obj: Any, depth: int = 0) -> Iterable[Tensor]:
    """Tensors an object holds in its attributes, lists, tuples and dicts (modules excluded)."""
    if isinstance(obj, Tensor):
        yield obj
    elif depth < 4 and isinstance(obj, list | tuple | set | frozenset):
        for item in obj:
            yield from _held_tensors(item, depth + 1)
    elif depth < 4 and isinstance(obj, dict):
        for item in obj.values():
            yield from _held_tensors(item, depth + 1)


def forward_weight_reads(rule: Rule, x: Tensor, y: Tensor) -> set[str]:
    """The current forward weights that one ``rule.backward(x, y)`` reads outside forward passes.

    Runs the step (the model's ``.grad`` are cleared first, as ``optimizer.zero_grad()`` would) and
    returns the names (``model.named_parameters()``) of the synaptic layers' weights whose values
    reach another parameter's update, the rule's state or Python by any use but a forward pass
    through their layer: ``"name"`` when the value is read, ``"name:sign"`` when only its sign is.
    An empty set: no weight transport in this step. The module docstring defines forward use and
    read, and lists the check's limits.
    """
    if not isinstance(rule, Rule):
        raise ValueError(f"forward_weight_reads takes a widealign Rule, got {type(rule).__name__}")
    model = rule.model
    names = {id(p): n for n, p in model.named_parameters()}
    weights = {names[id(layer.weight)]: layer.weight for layer in synaptic_layers(model)}
    for p in model.parameters():
        p.grad = None
    watch = _Watch(weights)
    # the backward pass on the calling thread (an accelerator's runs on a worker thread otherwise)
    with torch.autograd.set_multithreading_enabled(False), watch:
        rule.backward(x, y)
    found: dict[str, str] = {}

    def reach(carried: dict[str, str], own: str | None = None) -> None:
        for name, kind in carried.items():
            if name != own:
                _merge(found, name, kind)

    for name, p in model.named_parameters():
        if p.grad is not None:
            reach(watch.carried_by(p.grad), own=name)
    for b in model.buffers():
        reach(watch.carried_by(b))
    state = [*rule.buffers(), *rule.parameters()]
    state += [p.grad for p in rule.parameters() if p.grad is not None]
    state += list(_held_tensors([v for k, v in vars(rule).items() if k not in ("model", "_modules")]))
    for t in state:
        reach(watch.carried_by(t))
    reach(watch.escaped)
    return {name if kind == "value" else name + SIGN for name, kind in found.items()}


def read_kind(reads: Iterable[str]) -> str:
    """A result of :func:`forward_weight_reads` in the words of ``Rule.reads``: ``"nothing"``,
    ``"weight-sign"`` (signs only) or ``"weight"``."""
    reads = list(reads)
    if not reads:
        return READS[0]
    return READS[1] if all(r.endswith(SIGN) for r in reads) else READS[2]


#: The model families a setting may name (``model=...``); ``mlp`` unless it names one.
FAMILIES = ("mlp", "conv", "rnn")


def parse_setting(rule: type[Rule], setting: str) -> tuple[dict[str, Any], str, str]:
    """A setting of ``Rule.reads_settings`` (``"feedback=learned"``, ``"variant=reference,
    model=rnn"``) as the rule's options (typed), its variant and the model family."""
    options: dict[str, Any] = {}
    variant, family = "default", "mlp"
    for item in setting.split(", "):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{rule.name}: a reads setting is 'name=value, ...', got {setting!r}")
        if key == "variant":
            variant = value
        elif key == "model":
            family = value
        else:
            options[key] = value
    check_variant(rule, variant)
    if family not in FAMILIES:
        raise ValueError(f"{rule.name}: reads setting model={family!r}; choose one of {', '.join(FAMILIES)}")
    return check_rule_options(rule, options), variant, family


def reads_table(rules: Iterable[type[Rule]]) -> str:
    """The table of docs/method.md#what-each-rule-reads, from the rules' declarations
    (``Rule.reads`` and ``Rule.reads_settings``), as Markdown."""
    lines = [
        "| rule | reads, by default | settings that change it |",
        "| --- | --- | --- |",
    ]
    for cls in rules:
        changes = "; ".join(f"{reads} with `{setting}`" for setting, reads in cls.reads_settings)
        lines.append(f"| `{cls.name}` | {cls.reads or 'undeclared'} | {changes} |")
    return "\n".join(lines)


__all__ = ["SIGN", "forward_weight_reads", "parse_setting", "read_kind", "reads_table"]

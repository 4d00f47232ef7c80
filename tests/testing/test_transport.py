"""The weight-transport check (widealign.testing.forward_weight_reads) and every rule's declaration.

The check must find what a rule reads and nothing else: it is run on every registered rule (MLP,
conv net, RNN; defaults and each declared setting that changes what the rule reads) and compared with
the rule's declaration (``Rule.reads_for``), on rules built to transport the weights in disguise
(bp dressed as fa, fa that copies W into its feedback, fa fed a fresh ``W.clone()``), and on
single operations at the edge of the definition (a forward use, weight decay, a number taken out).
"""

from __future__ import annotations

import pytest
import torch

from conftest import fast, loss_for, make_batch, make_model, sgd_steps
from widealign import testing
from widealign.models import synaptic_layers
from widealign.models.layers import Route, Synaptic, routed
from widealign.rules import READS, RULES, learns_feedback, make_rule
from widealign.rules.fa import FeedbackAlignment
from widealign.testing import SIGN, forward_weight_reads, read_kind
from widealign.testing.transport import parse_setting


def step_size(name) -> dict:
    """``lr=0.1`` for a rule with its own step size; learned feedback is stepped by the optimiser."""
    return {} if learns_feedback(name) else {"lr": 0.1}


def checked(name, family: str, options: dict | None = None, variant: str = "default") -> set[str]:
    """What the check finds in one step of rule ``name``, after one SGD step away from theta_0."""
    model = make_model(family)
    kwargs = {**fast(name), **(options or {})}
    rule = make_rule(name, model, loss_for(family), variant=variant, **step_size(name), **kwargs)
    sgd_steps(model, rule, family, steps=1, lr=0.05)
    x, y = make_batch(family)
    return forward_weight_reads(rule, x, y)


def weight_names(family: str) -> set[str]:
    model = make_model(family)
    ids = {id(layer.weight) for layer in synaptic_layers(model)}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_declares_what_it_reads(name):
    cls = RULES[name]
    assert cls.reads in READS, f"{name} declares reads={cls.reads!r}"
    assert cls.reads_for({}) == cls.reads
    for setting, reads in cls.reads_settings:
        options, variant, family = parse_setting(cls, setting)
        assert reads in READS and reads != cls.reads, f"{setting} is listed but changes nothing"
        assert cls.reads_for(options, variant, recurrent=family == "rnn") == reads, setting


@pytest.mark.parametrize("name", sorted(RULES))
def test_the_check_agrees_with_each_rule_s_declaration(name, family):
    cls = RULES[name]
    if family == "rnn" and not cls.supports_recurrent:
        pytest.skip(f"{name} is feed-forward only")
    found = checked(name, family)
    assert read_kind(found) == cls.reads_for({}, recurrent=family == "rnn"), sorted(found)
    assert {r.removesuffix(SIGN) for r in found} <= weight_names(family)


SETTINGS = [(n, s, r) for n in sorted(RULES) for s, r in RULES[n].reads_settings]


@pytest.mark.parametrize(("name", "setting", "reads"), SETTINGS, ids=[f"{n}:{s}" for n, s, _ in SETTINGS])
@pytest.mark.parametrize("on", ["mlp", "conv"])
def test_each_declared_setting_reads_what_it_says(name, setting, reads, on):
    options, variant, family = parse_setting(RULES[name], setting)
    if "model=" in setting and on != "mlp":
        pytest.skip(f"{setting} names its model")
    family = family if "model=" in setting else on
    found = checked(name, family, options, variant)
    assert read_kind(found) == reads, sorted(found)


def test_what_the_check_finds_in_bp_and_the_sign_rules_names_the_weights():
    # bp's backward pass carries the error back through every weight but the first layer's
    assert checked("bp", "mlp") == {"layers.1.weight", "layers.2.weight"}
    assert checked("bp", "conv") == {"convs.1.weight", "convs.2.weight", "readout.weight"}
    for name in ("usf", "frsf", "brsf"):
        assert checked(name, "mlp") == {"layers.1.weight:sign", "layers.2.weight:sign"}


class _Weights(Route):
    def feedback(self, index: int, layer: Synaptic) -> torch.Tensor:
        return layer.weight


class BackpropAsFA(FeedbackAlignment):
    """bp in fa's clothes: its feedback route hands every layer its own current weight."""

    name = "bp-as-fa"

    def _backward(self, x, y):
        with routed(self.model, _Weights()):
            output = self.model(x)
        loss = self.loss_fn(output, y)
        loss.backward()
        return loss, output


class CopyingFA(FeedbackAlignment):
    """fa that copies the current weights into its feedback buffers at every step."""

    name = "copying-fa"

    def _backward(self, x, y):
        self.set_feedback([layer.weight for layer in self.layers])
        return super()._backward(x, y)


class _Clones(Route):
    def feedback(self, index: int, layer: Synaptic) -> torch.Tensor:
        return layer.weight.detach().clone()


class CloningFA(FeedbackAlignment):
    """fa fed a fresh ``W.clone()`` per step: no state, nothing saved by autograd is W itself."""

    name = "cloning-fa"

    def _backward(self, x, y):
        with routed(self.model, _Clones()):
            output = self.model(x)
        loss = self.loss_fn(output, y)
        loss.backward()
        return loss, output


@pytest.mark.parametrize("cls", [BackpropAsFA, CopyingFA, CloningFA])
def test_bp_disguised_as_fa_is_caught(cls, family):
    model = make_model(family)
    plain = make_rule("fa", make_model(family), loss_for(family))
    rule = cls(model, loss_for(family))
    x, y = make_batch(family)
    assert forward_weight_reads(plain, x, y) == set()
    found = forward_weight_reads(rule, x, y)
    assert read_kind(found) == "weight"
    readout = "layers.2.weight" if family == "mlp" else "readout.weight"
    assert readout in found  # the readout's weight carries the error to the layer below it


def test_the_disguises_compute_bp():
    """They are bp indeed (so the check is catching transport, not something else)."""
    x, y = make_batch("mlp")
    results = []
    for cls in (BackpropAsFA, CopyingFA, CloningFA):
        model = make_model("mlp")
        cls(model).backward(x, y)
        results.append([p.grad for p in model.parameters()])
    model = make_model("mlp")
    make_rule("bp", model).backward(x, y)
    for grads in results:
        for g, ref in zip(grads, [p.grad for p in model.parameters()]):
            torch.testing.assert_close(g, ref)


class _Probe(FeedbackAlignment):
    """fa plus one extra operation on the weights, given as ``extra(rule)`` (run before the step)."""

    name = "probe"
    extra = None

    def _backward(self, x, y):
        type(self).extra(self)
        return super()._backward(x, y)


def probe(extra) -> set[str]:
    cls = type("P", (_Probe,), {"extra": staticmethod(extra), "name": "p"})
    model = make_model("mlp")
    x, y = make_batch("mlp")
    return forward_weight_reads(cls(model), x, y)


def test_a_forward_pass_through_the_weights_is_no_read():
    """Applying W forwards to anything (noise, a probe, a transposed copy used as x @ W^T) is a
    forward use; holding W or a view of it is no read either."""

    def forward_uses(rule):
        for layer in rule.layers:
            noise = torch.randn(4, layer.weight.shape[1], dtype=layer.weight.dtype)
            rule.noise = layer(noise)  # the layer's own forward
            rule.scaled = noise @ (layer.weight.detach().T * 2.0)  # a scaled copy, applied forwards
            rule.view = layer.weight.detach()

    assert probe(forward_uses) == set()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (lambda r: setattr(r, "kept", r.layers[1].weight.detach().clone()), {"layers.1.weight"}),
        (lambda r: setattr(r, "signs", r.layers[2].weight.sign() * 3), {"layers.2.weight:sign"}),
        (lambda r: r.feedback_0.add_(r.layers[1].weight.detach().sum()), {"layers.1.weight"}),
        (lambda r: setattr(r, "gain", float(r.layers[2].weight.detach().norm())), {"layers.2.weight"}),
        (lambda r: setattr(r, "t", r.feedback_2[:, :3] @ r.layers[2].weight), {"layers.2.weight"}),
        (lambda r: setattr(r, "both", r.layers[1].weight.sign() + r.layers[1].weight), {"layers.1.weight"}),
        (lambda r: setattr(r, "shape_only", torch.zeros_like(r.layers[1].weight)), set()),
        (lambda r: setattr(r, "reciprocal", 2.0 / r.layers[1].weight.detach()), {"layers.1.weight"}),
        (lambda r: setattr(r, "sign_of_read", (r.feedback_2[:, :3] @ r.layers[2].weight).sign()),
         {"layers.2.weight"}),
        (lambda r: setattr(r, "unused", r.layers[1].weight.detach().square().sum() * 0), {"layers.1.weight"}),
    ],
    ids=["clone-kept", "sign-kept", "into-feedback", "item", "transposed-product", "sign-and-value",
         "shape-only", "reciprocal", "sign-of-a-read", "kept-even-if-zero"],
)  # fmt: skip
def test_what_counts_as_a_read(extra, expected):
    assert probe(extra) == expected


def test_a_weight_in_its_own_update_is_local_but_in_another_s_it_is_read():
    def own(rule):
        rule.layers[1].weight.grad = rule.layers[1].weight.detach() * 1e-4

    class Decay(FeedbackAlignment):
        name = "decay"

        def _backward(self, x, y):
            loss, output = super()._backward(x, y)
            for layer in self.layers:  # weight decay: W.grad += lambda W
                layer.weight.grad.add_(layer.weight.detach(), alpha=1e-4)
            return loss, output

    class Crossed(FeedbackAlignment):
        name = "crossed"

        def _backward(self, x, y):
            loss, output = super()._backward(x, y)
            self.layers[0].weight.grad.add_(self.layers[1].weight.detach()[:, :5].sum())
            return loss, output

    x, y = make_batch("mlp")
    assert forward_weight_reads(Decay(make_model("mlp")), x, y) == set()
    assert forward_weight_reads(Crossed(make_model("mlp")), x, y) == {"layers.1.weight"}


def test_the_check_clears_grad_and_takes_rules_only():
    model = make_model("mlp")
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    rule = make_rule("fa", model)
    x, y = make_batch("mlp")
    forward_weight_reads(rule, x, y)
    reference = make_model("mlp")
    make_rule("fa", reference).backward(x, y)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    with pytest.raises(ValueError, match="takes a widealign Rule"):
        forward_weight_reads(model, x, y)


def test_read_kind_and_settings():
    assert read_kind(set()) == "nothing"
    assert read_kind({"a.weight:sign"}) == "weight-sign"
    assert read_kind({"a.weight:sign", "b.weight"}) == "weight"
    options, variant, family = parse_setting(RULES["dynamic-inversion"], "solver=dynamics, stability_every=0")
    assert (options, variant, family) == ({"solver": "dynamics", "stability_every": 0}, "default", "mlp")
    assert parse_setting(RULES["readout"], "variant=reference, model=rnn") == ({}, "reference", "rnn")
    with pytest.raises(ValueError, match="setting"):
        parse_setting(RULES["dfa"], "modules")


#: Settings that do not change what a rule reads (or change it in a way reads_for must compute):
#: (rule, options, expected reads).
MORE = [
    ("activation-relaxation", {"feedforward": "relaxed"}, "weight"),
    ("activation-relaxation", {"feedforward": "relaxed", "feedback": "learned"}, "nothing"),
    ("activation-relaxation", {"derivatives": False, "feedback": "learned"}, "nothing"),
    ("predictive-coding", {"fixed_predictions": False}, "weight"),
    (
        "predictive-coding",
        {"fixed_predictions": False, "feedback": "learned", "error_connectivity": "learned"},
        "nothing",
    ),
    ("dynamic-inversion", {"solver": "dynamics"}, "weight"),  # the stability check
    ("dynamic-inversion", {"stability_every": 0}, "weight"),  # the closed form
    ("dynamic-inversion", {"solver": "dynamics", "stability_every": 0, "feedback": "random"}, "nothing"),
    ("dfa", {"sparse": 2}, "nothing"),
    ("dfa", {"modules": 3}, "weight"),  # one layer per module: plain dfa (declared weight, see reads_for)
]


@pytest.mark.parametrize(("name", "options", "reads"), MORE, ids=[f"{n}:{o}" for n, o, _ in MORE])
def test_options_that_keep_or_change_what_a_rule_reads(name, options, reads):
    assert RULES[name].reads_for(options) == reads
    found = checked(name, "mlp", options)
    if (name, options.get("modules")) == ("dfa", 3):
        assert found == set()  # the declaration is the safe side of the truth
    else:
        assert read_kind(found) == reads, sorted(found)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(RULES))
def test_the_check_finds_the_same_on_a_gpu(name, family):
    """On an accelerator autograd's backward pass runs on a worker thread unless the check keeps
    it on the caller's: the check must find there what it finds on the CPU."""
    if family == "rnn" and not RULES[name].supports_recurrent:
        pytest.skip(f"{name} is feed-forward only")
    x, y = make_batch(family)
    found = []
    for device in ("cpu", "cuda"):
        model = make_model(family).to(device)
        rule = make_rule(name, model, loss_for(family), **step_size(name), **fast(name))
        found.append(forward_weight_reads(rule, x.to(device), y.to(device)))
    assert found[0] == found[1]


def test_check_reads_holds_a_rule_to_its_declaration():
    assert testing.check_reads("bp") == "ok bp on the mlp: reads weight"
    assert testing.check_reads("usf", "convnet") == "ok usf on the convnet: reads weight-sign"
    assert testing.check_reads("activation-relaxation", feedback="learned", iterations=5).endswith("nothing")
    assert testing.check_reads("readout", "rnn", variant="reference").endswith("reads weight")
    # a subclass inherits fa's declaration, "nothing", and copies W into its feedback
    with pytest.raises(AssertionError, match="declares reads='nothing', but the check finds it reads layers"):
        testing.check_reads(CopyingFA)
    undeclared = type("Undeclared", (FeedbackAlignment,), {"name": "undeclared", "reads": None})
    with pytest.raises(AssertionError, match="does not declare what it reads"):
        testing.check_reads(undeclared)

"""A learning rule of one's own, in one file: feedback alignment whose feedback decays.

Each synaptic layer l sends the error back through its own matrix B_l (fa's transport), and
after every step the matrices shrink toward zero:

    grad_x = scale * B_l^T grad_y,     B_l(0) ~ the forward weights' initial distribution,
    B_l(t+1) = (1 - decay) * B_l(t).

The weight update of every layer is its local gradient given that error (as in fa). The matrices
are buffers, so the state round-trips through ``state_dict`` and a run resumes from its
checkpoint; the decay is elementwise, so K seeds can train as one batched run. With this file's
folder on ``PYTHONPATH`` (``docs/add-a-rule.md`` walks through it):

    widealign train --rule decaying_fa:DecayingFA --rule-option decay=0.01 --model mlp --width 64
    python examples/decaying_fa.py            # the library's conformance checks, then 2 epochs
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
from torch import Tensor, nn

import widealign
from widealign.losses import Loss
from widealign.models.layers import Route, Synaptic, routed
from widealign.rules.base import FeedbackState
from widealign.seeding import generator


class _Through(Route):
    """Layer ``i`` sends its error back through ``matrices[i]`` instead of its weight."""

    def __init__(self, matrices: list[Tensor]) -> None:
        self.matrices = matrices

    def feedback(self, index: int, layer: Synaptic) -> Tensor:
        return self.matrices[index]


@widealign.register_rule
class DecayingFA(FeedbackState, widealign.Rule):
    """fa whose feedback matrices shrink by a factor (1 - decay) after every step."""

    name = "decaying-fa"
    batchable = True  # state per weight entry, elementwise computation, no random draws per step
    feedback_replaces_weight = True  # B_l stands where W_l would in the backward pass
    reads = "nothing"  # of the current forward weights (testing.check_reads holds it to that)

    def __init__(
        self, model: nn.Module, loss: str | Loss = "mse", seed: int = 0, decay: float = 0.01
    ) -> None:
        super().__init__(model, loss)
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        g = generator(seed, "feedback")  # fa's draw: the same seed gives fa's matrices
        self._init_feedback([layer.sample_weight(g) for layer in self.layers])  # buffers feedback_i

    def _backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with routed(self.model, _Through(self.feedback)):
            output = self.model(x)
        loss = self.loss_fn(output, y)
        loss.backward()  # the update lands in .grad, which the base class found empty
        with torch.no_grad():
            for b in self.feedback:
                b.mul_(1 - self.decay)
        return loss, output


def main(argv: Sequence[str] | None = None) -> float:
    """Run the rule through the library's conformance checks, then train it; returns the accuracy."""
    from widealign import testing
    from widealign.runs import RunConfig, train_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--decay", type=float, default=0.01)
    args = parser.parse_args(argv)

    # B shrinks inside backward, so two half-batches do not add up to one batch: skip that identity.
    print("\n".join(testing.check_rule(DecayingFA, half_batches=False, decay=args.decay)))
    config = RunConfig(
        rule=DecayingFA.name, model="mlp", width=args.width, epochs=args.epochs,
        rule_options={"decay": args.decay},
    )  # fmt: skip
    result = train_run(config, progress=False)
    accuracy = result["epochs"][-1]["test_acc"]
    print(f"{DecayingFA.name}: held-out accuracy {100 * accuracy:.1f}% after {args.epochs} epochs")
    return accuracy


if __name__ == "__main__":
    main()

"""A Lightning ``LightningModule`` trained by a backprop-free rule, with manual optimisation.

Lightning's automatic optimisation calls ``loss.backward()``; a widealign rule computes its own
update instead, so the module turns automatic optimisation off and calls ``optimizer.zero_grad()``,
``rule.backward(x, y)`` and ``optimizer.step()`` in ``training_step``. The rule is a submodule, so
Lightning moves its state (initial network, feedback matrices) to the training device and saves it
in checkpoints.
Needs the ``lightning`` extra (``pip install -e '.[lightning]'`` in the widealign checkout).

    python examples/lightning_module.py --rule align-zero --epochs 5
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from widealign import ConvNet, make_rule
from widealign.data import load_digits


class WideAlignModule(L.LightningModule):
    """The paper's KMNIST conv net trained by the rule ``rule`` with plain SGD."""

    def __init__(self, rule: str = "align-ada", width: int = 64, lr: float = 5.0) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.lr = lr
        self.model = ConvNet.preset("kmnist", in_channels=1, num_outputs=10, width=width, seed=0)
        self.rule = make_rule(rule, self.model, seed=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        optimizer = self.optimizers()
        optimizer.zero_grad()
        loss, output = self.rule.backward(x, y)  # the rule's update is now added to .grad
        optimizer.step()
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_acc", (self(x).argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # A rule that learns its feedback (kolen-pollack, weight-mirror, ...) has it stepped here too.
        return torch.optim.SGD([*self.model.parameters(), *self.rule.feedback_parameters()], lr=self.lr)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Fit for ``--epochs`` epochs on digits and return Lightning's final logged metrics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", default="align-ada")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)

    data = load_digits()
    train = TensorDataset(data.x_train, data.y_train.argmax(-1))  # integer labels
    test = TensorDataset(data.x_test, data.y_test.argmax(-1))
    module = WideAlignModule(args.rule, args.width)
    trainer = L.Trainer(
        max_epochs=args.epochs, accelerator="auto", logger=False, enable_checkpointing=False,
        enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(
        module,
        DataLoader(train, batch_size=100, shuffle=True, generator=torch.Generator().manual_seed(0)),
        DataLoader(test, batch_size=100),
    )
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(f"after {args.epochs} epochs: {metrics}")
    return metrics


if __name__ == "__main__":
    main()

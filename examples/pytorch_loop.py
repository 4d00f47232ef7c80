"""Train a wide network without backprop in a plain PyTorch loop over a DataLoader.

The learning rule replaces ``loss.backward()``: ``rule.backward(x, y)`` adds its update to the
parameters' ``.grad`` (cleared first by ``optimizer.zero_grad()``, as for ``loss.backward()``) and
returns the loss and outputs, so the usual ``optimizer.step()`` applies it. Labels are plain class
indices (what torchvision data sets yield): the mse loss turns them into the paper's targets,
one-hot minus 0.1.

    python examples/pytorch_loop.py --rule align-ada --epochs 5
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader, TensorDataset

from widealign import ConvNet, make_rule
from widealign.data import load_digits


def main(argv: list[str] | None = None) -> float:
    """Train, print one line per epoch and return the final held-out accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", default="align-ada")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=5.0)
    args = parser.parse_args(argv)

    data = load_digits()  # 8x8 images bundled with scikit-learn; any (image, label) data set works
    train = TensorDataset(data.x_train, data.y_train.argmax(-1))
    test = TensorDataset(data.x_test, data.y_test.argmax(-1))
    loader = DataLoader(train, batch_size=100, shuffle=True, generator=torch.Generator().manual_seed(0))

    model = ConvNet.preset("kmnist", in_channels=1, num_outputs=10, width=args.width, seed=0)
    rule = make_rule(args.rule, model, seed=0)  # align-* rules copy the initial network here
    # Learned feedback (kolen-pollack, weight-mirror, ...) is stepped by the same optimiser.
    optimizer = torch.optim.SGD([*model.parameters(), *rule.feedback_parameters()], lr=args.lr)

    accuracy = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            loss, output = rule.backward(x, y)  # instead of loss.backward(): adds the update to .grad
            optimizer.step()
        model.eval()  # the paper's normalisation uses batch statistics: evaluate in batches too
        with torch.no_grad():
            hits = sum(int((model(x).argmax(-1) == y).sum()) for x, y in DataLoader(test, batch_size=100))
        accuracy = hits / len(test)
        print(f"epoch {epoch}: last batch loss {float(loss):.4f}, held-out accuracy {100 * accuracy:.1f}%")
    return accuracy


if __name__ == "__main__":
    main()

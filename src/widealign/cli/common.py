"""What the commands share: one-line usage errors, exit codes, the flags of a training run and
the :class:`~widealign.runs.config.RunConfig` built from them.

Nothing here imports torch when the module is imported: the flags' choices come from the static
index (:mod:`widealign.cli.names`), and the library is imported inside the functions that use it.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from widealign.cli.names import index
from widealign.suggest import suggestion

if TYPE_CHECKING:
    from widealign.runs.config import RunConfig
    from widealign.train import EpochRecord

#: The rules of the paper and its baselines: what compare and bench run unless told otherwise.
PAPER_RULES = ("bp", "readout", "align-zero", "align-ada", "align-prop", "fa", "dfa")

EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 2, 1, 130


class UsageError(Exception):
    """A command-line mistake, reported in one line."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports mistakes in one line instead of usage + message."""

    def error(self, message: str) -> NoReturn:
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if choice:  # argparse lists the choices; a close one is suggested first
            hint = suggestion(choice[1], re.findall(r"'?([^',]+)'?(?:, |$)", choice[2]))
            if hint:
                message = f"{message[: choice.start()]}invalid choice: {choice[1]!r}; {hint}"
        raise UsageError(f"{message} (see '{self.prog} --help')")


def add_run_flags(p: argparse.ArgumentParser) -> None:
    names = index()
    datasets, models = ", ".join(names["datasets"]), ", ".join(names["models"])
    p.add_argument("--dataset", default="digits", help=f"one of {datasets} (default digits)")
    p.add_argument("--data-dir", help="where data sets live (default $WIDEALIGN_DATA_DIR or ./data)")
    p.add_argument("--download", action="store_true", help="download a missing data set (never by default)")
    p.add_argument(
        "--train-size", type=int,
        help="train on the first N training examples (batch size if not given: N below 100, else gcd(100,N))",
    )  # fmt: skip
    p.add_argument(
        "--holdout", type=int,
        help="training images held out for evaluation, the first ones (mnist, kmnist, cifar10; default 5000)",
    )  # fmt: skip
    p.add_argument(
        "--eval-train", action="store_true", default=None,
        help="re-evaluate the whole training set after every epoch (default: on for add only)",
    )  # fmt: skip
    p.add_argument("--official-test", action="store_true", help="evaluate on the official test set")
    p.add_argument(
        "--model",
        help=f"{models} or a torchvision classification model such as resnet18, converted "
        "(default: the dataset's)",
    )
    p.add_argument(
        "--preset", choices=names["conv_presets"], help="conv-net preset: depth and strides of the paper"
    )
    p.add_argument("--strides", type=int, nargs="+", help="conv strides, one per layer (overrides --preset)")
    p.add_argument("--depth", type=int, default=2, help="hidden layers of the mlp (default 2)")
    p.add_argument("--kernel-size", type=int, default=3)
    p.add_argument("--parameterization", choices=names["parameterizations"], default="ntk")
    p.add_argument("--norm", choices=names["norms"], default="batch-axis", help="conv-net normalisation")
    p.add_argument("--eps", type=float, default=1e-6, help="normalisation epsilon (default 1e-6)")
    p.add_argument("--loss", choices=names["losses"], help="default: the paper's (mse; sequence-mse for add)")
    p.add_argument("--optimizer", choices=names["optimizers"], default="sgd")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (default 0, the paper's)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay (default 0)")
    p.add_argument(
        "--schedule", choices=names["schedules"], default="none",
        help="learning-rate schedule, stepped every epoch: step (times --gamma every --step-size epochs) "
        "or cosine (to 0 over the run's epochs); default none",
    )  # fmt: skip
    p.add_argument("--step-size", type=int, help="with --schedule step: epochs between decays")
    p.add_argument("--gamma", type=float, default=0.1, help="with --schedule step: the factor (default 0.1)")
    p.add_argument(
        "--variant", default="default",
        help=f"{', '.join(names['variants'])} or a rule's own (widealign rules lists them); reference: "
        "align-ada, align-zero and readout as the authors' code (docs/method.md#variants)",
    )  # fmt: skip
    p.add_argument("--lr", type=float, help="learning rate (default: the dataset's, 5 for digits)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--dtype", choices=names["dtypes"], default="float32")
    p.add_argument(
        "--autocast", choices=names["autocast_dtypes"],
        help="bf16: train and evaluate under bfloat16 autocast (default off; no effect with float64)",
    )  # fmt: skip
    p.add_argument(
        "--compile", action="store_true",
        help="compile the model's forward pass with torch.compile (slow to start; pays on long runs)",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_threads(p)


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads", type=int,
        help="torch threads (default: the CPUs this process may use; a sweep worker gets its share)",
    )  # fmt: skip


def rule_option_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rule-option", action="append", default=[], metavar="NAME=VALUE",
        help="a rule's own setting, repeatable (e.g. iterations=50; widealign rules lists them)",
    )  # fmt: skip


def rule_options(texts: Sequence[str]) -> dict[str, str]:
    options = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"rule option {text!r} is not of the form name=value")
        options[name.strip()] = value.strip()
    return options


def config(args: argparse.Namespace, **fields: Any) -> RunConfig:
    from widealign.runs.config import RunConfig

    return RunConfig(
        dataset=args.dataset, model=args.model, preset=args.preset, strides=args.strides,
        depth=args.depth, kernel_size=args.kernel_size, parameterization=args.parameterization,
        norm=args.norm, eps=args.eps, loss=args.loss, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        step_size=args.step_size, gamma=args.gamma,
        variant=args.variant, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        device=args.device, dtype=args.dtype, train_size=args.train_size, holdout=args.holdout,
        official_test=args.official_test, eval_train=args.eval_train, autocast=args.autocast,
        compile=args.compile, **fields,
    )  # fmt: skip


def data_location(args: argparse.Namespace) -> None:
    """``--data-dir``/``--download`` become the environment that :func:`load_data` reads."""
    env = index()["environment"]
    if getattr(args, "data_dir", None):
        os.environ[env["data_dir"]] = str(Path(args.data_dir).resolve())
    if getattr(args, "download", False):
        os.environ[env["download"]] = "1"


def print_epoch(total: int) -> Any:
    from tqdm.auto import tqdm

    def show(r: EpochRecord) -> None:
        acc = "" if r.train_acc is None else f"  train_acc {100 * r.train_acc:5.1f}%"
        test_acc = "" if r.test_acc is None else f"  test_acc {100 * r.test_acc:5.1f}%"
        tqdm.write(
            f"epoch {r.epoch:>3}/{total}  train_loss {r.train_loss:.4f}{acc}  "
            f"test_loss {r.test_loss:.4f}{test_acc}  ({r.seconds:.1f} s)"
        )

    return show


def check_rules(rules: Sequence[str]) -> None:
    """A one-line error for the first rule that is neither a known name nor an importable ``module:Class``."""
    from widealign.rules import get_rule

    for r in rules:
        get_rule(r)

"""Golden replays: widealign, given the authors' NumPy draws, retraces the authors' own runs.

``tests/golden/kmnist_conv.json`` and ``add_rnn.json`` hold the per-step and per-epoch losses of
the authors' ``train_kmnist.py`` and ``train_add.py`` (FieteLab/Wide-Network-Alignment d242886),
recorded by ``scripts/golden/make_golden.py`` under TensorFlow, in float32 (their code) and in
float64 (their code with one textual patch, ``tf.float32`` -> ``tf.float64``). Here the same data
is rebuilt (scikit-learn's digits in KMNIST format; the Add task with the authors' own
construction), the authors' draws are regenerated with NumPy's legacy generator in their order and
checked against the recorded fingerprints, loaded into a widealign model and rule (TensorFlow's
HWIO kernels -> torch's OIHW, fa's and dfa's feedback, align's theta_0), and widealign's own
``Trainer``, rule and ``torch.optim.SGD`` train on the authors' batches in the authors' order.

What is matched and to what tolerance is in docs/method.md#golden-replays. Departures the replay
names: the Add-task model gets the authors' per-row initial state (``DEPARTURE_INITIAL_STATE``,
docs/method.md#departures item 6; a test shows widealign's own shared ``h_0`` leaves the authors'
run) and the authors' targets (item 7); the float32 replay of the conv net is checked for its
first three epochs only (``DEPARTURE_FLOAT32``), the float64 one for all five.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from widealign.models import RNN, ConvNet
from widealign.rules import make_rule
from widealign.train import Trainer

HERE = pathlib.Path(__file__).parent
KMNIST = json.loads((HERE / "kmnist_conv.json").read_text())
ADD = json.loads((HERE / "add_rnn.json").read_text())
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: Issue 21 item 9's tolerance: every epoch's loss within 1e-3 of the authors', relative.
EPOCH_RTOL = 1e-3
#: In float64 both sides compute the same numbers up to summation order.
FLOAT64_STEP_RTOL = 1e-6
VARIANTS = {"align-ada": "reference", "align-zero": "reference"}

DEPARTURE_INITIAL_STATE = (
    "docs/method.md#departures item 6: the authors' init_state is one trainable row per batch "
    "position (50 x 16); the replay gives widealign's RNN that parameter in place of its shared h_0"
)
DEPARTURE_FLOAT32 = (
    "float32 rounding differs between TensorFlow and torch (summation order) and grows through "
    "training: by epoch 5 widealign's float32 bp and dfa are 3e-3 from the authors' float32 runs "
    "(whose own bp is 9e-4 from their float64 run); epochs 4-5 are checked in float64 only"
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small ops: one thread is faster, and ten times faster on a busy machine (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fingerprint(kind: str, value: np.ndarray) -> dict:
    """The fingerprint make_golden.py records for a draw."""
    flat = np.asarray(value).ravel().astype(np.float64)
    return {
        "kind": kind,
        "shape": list(np.shape(value)),
        "sum": float(flat.sum()),
        "sumsq": float(np.square(flat).sum()),
        "weighted": float((flat * np.arange(flat.size)).sum()),
    }


class AuthorsRandom:
    """NumPy's legacy global stream as the authors' scripts use it, each draw fingerprinted."""

    def __init__(self) -> None:
        self.state = np.random.RandomState(99)
        self.draws: list[dict] = []

    def seed(self) -> None:
        self.state.seed(99)

    def normal(self, scale: float, size: int | tuple[int, ...]) -> np.ndarray:
        value = self.state.normal(scale=scale, size=size)
        self.draws.append(fingerprint("normal", value))
        return value

    def binomial(self, size: tuple[int, int]) -> np.ndarray:
        value = self.state.binomial(1, 0.5, size=size)
        self.draws.append(fingerprint("binomial", value))
        return value

    def permutation(self, n: int) -> np.ndarray:
        value = self.state.permutation(n)
        self.draws.append(fingerprint("permutation", value))
        return value


def check_draws(made: list[dict], recorded: list[dict]) -> None:
    assert len(made) == len(recorded)
    for a, b in zip(made, recorded):
        assert a["kind"] == b["kind"] and a["shape"] == b["shape"]
        for key in ("sum", "sumsq", "weighted"):
            assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-9), (a, b)


class AuthorsData:
    """The authors' arrays in the authors' order, through the data-set interface of ``Trainer``.

    ``orders[e]`` holds epoch e's permutations: ``"train"`` and, where the script evaluates,
    ``"test"`` and ``"train_eval"``. Like the scripts, only whole batches are used.
    """

    def __init__(self, arrays: dict[str, np.ndarray], orders: list[dict], task: str, dtype: torch.dtype):
        self.tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype) for k, v in arrays.items()}
        self.orders, self.task, self.epoch = orders, task, -1

    def _batches(self, split: str, key: str, batch_size: int):
        x, y = self.tensors[f"x_{split}"], self.tensors[f"y_{split}"]
        order = torch.from_numpy(self.orders[self.epoch].get(key, np.zeros(0, dtype=np.int64)))
        for i in range(len(order) // batch_size):
            idx = order[i * batch_size : (i + 1) * batch_size]
            yield x[idx], y[idx]

    def train_batches(self, batch_size: int, generator: torch.Generator | None):
        self.epoch += 1
        return self._batches("train", "train", batch_size)

    def test_batches(self, batch_size: int):
        return self._batches("test", "test", batch_size)

    def train_eval_batches(self, batch_size: int):
        return self._batches("train", "train_eval", batch_size)


def train(model: nn.Module, rule, data: AuthorsData, lr: float, batch: int, epochs: int, eval_train: bool):
    """widealign's Trainer with plain SGD; returns its history and every step's pre-update loss."""
    steps: list[float] = []
    backward = rule.backward

    def recorded(x, y):
        result = backward(x, y)
        steps.append(float(result.loss))
        return result

    rule.backward = recorded
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    trainer = Trainer(model, rule, optimizer, data, batch_size=batch, progress=False, eval_train=eval_train)
    return trainer.fit(epochs), steps


def relative(a: list[float], b: list[float]) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b) / np.abs(b)


# --- the KMNIST conv net ---------------------------------------------------------------------------


def kmnist_arrays(train_size: int) -> dict[str, np.ndarray]:
    """The authors' training and held-out arrays (NHWC) from the KMNIST-format digits files, as
    their code computes them: make_kmnist_digits.py's images (sklearn digits, x255/16, each pixel 3x3, padded
    to 28x28, shuffled with seed 0, the first 1,497 in the training file), then setup_kmnist.py's
    ``uint8 -> float32 / 255 - 0.5``, 300 held out, and train_kmnist.py's ``+ 0.5`` and ``- 0.1``."""
    digits = load_digits()
    x = np.round(digits.images * 255 / 16).astype(np.uint8)
    x = np.stack([np.kron(i, np.ones((3, 3), dtype=np.uint8)) for i in x])
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))
    perm = np.random.RandomState(0).permutation(len(x))[:1497]
    images = (x[perm].astype(np.float32) / 255 - 0.5).reshape(-1, 28, 28, 1)
    labels = (np.arange(10) == digits.target[perm][:, None]).astype(np.float32)
    held = KMNIST["holdout"]
    return {
        "x_train": images[held : held + train_size] + 0.5,
        "y_train": labels[held : held + train_size] - 0.1,
        "x_test": images[:held] + 0.5,
        "y_test": labels[:held] - 0.1,
    }


def hwio_to_oihw(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(3, 2, 0, 1)


def conv_replay(rule_name: str, dtype: str) -> tuple[list, list[float], list[dict]]:
    """Rebuild the authors' draws for ``rule_name``, load them and train; returns the history,
    the step losses and the fingerprints of the draws."""
    width, rs = KMNIST["width"], AuthorsRandom()
    arrays = kmnist_arrays(KMNIST["train_size"])
    model = ConvNet.preset("kmnist", 1, 10, width).to(DTYPES[dtype])
    rs.seed()
    weights, feedback, size, c_in = [], [], 28, 1
    for stride in (1, 2, 2):  # their W_val: normal(size=(l, k*k*C_in)).T reshaped to (k, k, C_in, l)
        weights.append(hwio_to_oihw(rs.normal(1, (width, 9 * c_in)).T.reshape(3, 3, c_in, width)))
        if rule_name == "fa":
            feedback.append(hwio_to_oihw(rs.normal(1, (width, 9 * c_in)).T.reshape(3, 3, c_in, width)))
        if rule_name == "dfa":  # B for the post-ReLU map, (H, W, C, 10) -> widealign's (10, C*H*W)
            size //= stride
            d = size * size * width
            b = rs.normal(1 / np.sqrt(d), (10, d)).T.reshape(size, size, width, 10)
            feedback.append(hwio_to_oihw(b).reshape(10, d))
        c_in = width
    weights.append(rs.normal(1, (10, width)))  # their (1, 1, C, 10) readout is this matrix transposed
    if rule_name == "fa":
        feedback.append(rs.normal(1, (10, width)))
    layers = [*model.convs, model.readout]
    with torch.no_grad():
        for layer, w in zip(layers, weights):
            layer.weight.copy_(torch.from_numpy(w))
    rule = make_rule(rule_name, model, variant=VARIANTS.get(rule_name, "default"))
    if rule_name == "fa":
        rule.set_feedback([torch.from_numpy(b) for b in feedback])
    if rule_name == "dfa":
        rule.set_feedback([None, *(torch.from_numpy(b) for b in feedback)])
    rs.seed()
    orders = []
    for _ in range(KMNIST["epochs"]):
        train_order = rs.permutation(len(arrays["x_train"]))
        rs.permutation(len(arrays["x_test"]))  # the held-out order their loop draws (not used here)
        orders.append({"train": train_order})
    nchw = {k: v.transpose(0, 3, 1, 2) if v.ndim == 4 else v for k, v in arrays.items()}
    data = AuthorsData(nchw, orders, "classification", DTYPES[dtype])
    history, steps = train(model, rule, data, KMNIST["lr"], KMNIST["batch_size"], KMNIST["epochs"], False)
    return history, steps, rs.draws


def test_kmnist_files_are_the_authors() -> None:
    arrays = kmnist_arrays(KMNIST["train_size"])
    assert len(arrays["x_train"]) == KMNIST["train_size"] == 300
    assert float(np.sum(arrays["x_train"], dtype=np.float64)) == pytest.approx(
        KMNIST["train_checksum"], rel=1e-12
    )
    labels = arrays["y_train"] + np.float32(0.1)
    assert float(np.sum(labels.round() * np.arange(10))) == KMNIST["label_checksum"]


@pytest.mark.parametrize("rule_name", list(KMNIST["runs"]["float64"]))
def test_kmnist_conv_replay_float64(rule_name: str) -> None:
    golden = KMNIST["runs"]["float64"][rule_name]
    history, steps, draws = conv_replay(rule_name, "float64")
    check_draws(draws, golden["draws"])
    assert relative(steps, golden["step_losses"]).max() < FLOAT64_STEP_RTOL
    assert relative([r.train_loss for r in history], golden["epoch_losses"]).max() < EPOCH_RTOL


#: Epochs of the float32 conv replays held to EPOCH_RTOL; later ones drift (DEPARTURE_FLOAT32).
FLOAT32_EPOCHS = 3


@pytest.mark.parametrize("rule_name", list(KMNIST["runs"]["float32"]))
def test_kmnist_conv_replay_float32(rule_name: str) -> None:
    """The authors' code as it is. Rounding differences grow through training (the authors' own
    float32 and float64 bp runs differ by 9e-4 at epoch 5, and widealign's float32 bp and dfa by
    3e-3 from theirs); the float64 replay checks those epochs, this one the first three."""
    golden = KMNIST["runs"]["float32"][rule_name]
    history, steps, draws = conv_replay(rule_name, "float32")
    check_draws(draws, golden["draws"])
    first = FLOAT32_EPOCHS * len(steps) // KMNIST["epochs"]
    assert relative(steps[:first], golden["step_losses"][:first]).max() < EPOCH_RTOL
    epochs = [r.train_loss for r in history][:FLOAT32_EPOCHS]
    assert relative(epochs, golden["epoch_losses"][:FLOAT32_EPOCHS]).max() < EPOCH_RTOL, DEPARTURE_FLOAT32


# --- the Add-task RNN ------------------------------------------------------------------------------


def add_arrays(rs: AuthorsRandom) -> dict[str, np.ndarray]:
    """train_add.py's ``gen_data(2, 5)``: its own construction, ``roll[:k] = 0`` zeroing the first k
    *sequences* (docs/method.md#departures item 7), shaped (N, T, 1) for widealign."""
    rs.seed()
    x = rs.binomial((400, ADD["length"]))
    rolled = []
    for k in ADD["delays"]:
        roll = np.roll(x, k, axis=1)
        roll[:k] = 0
        rolled.append(roll)
    y = 0.5 + 0.5 * rolled[0] - 0.25 * rolled[1]
    x, y = x[..., None], y[..., None]
    return {"x_train": x[:300], "y_train": y[:300], "x_test": x[300:], "y_test": y[300:]}


def add_replay(
    rule_name: str, dtype: str, per_row_state: bool = True
) -> tuple[list, list[float], list[dict]]:
    """As :func:`conv_replay`, for train_add.py; ``per_row_state=False`` keeps widealign's own shared
    ``h_0`` (DEPARTURE_INITIAL_STATE)."""
    n, batch, rs = ADD["hidden"], ADD["batch_size"], AuthorsRandom()
    arrays = add_arrays(rs)
    rs.seed()
    w_ih, w_hh, w_ho = rs.normal(1, n), rs.normal(1, (n, n)), rs.normal(1, n)
    model = RNN(1, n, 1).to(DTYPES[dtype])
    # DEPARTURE_INITIAL_STATE: the authors' trainable (batch x n) initial state, zero at the start
    if per_row_state:
        model.h0 = nn.Parameter(torch.zeros(batch, n, dtype=DTYPES[dtype]))
    with torch.no_grad():
        model.input.weight.copy_(torch.from_numpy(w_ih[:, None]))  # tensordot(x_t, W_ih, axes=0)
        model.recurrent.weight.copy_(torch.from_numpy(w_hh.T))  # state @ W_hh
        model.readout.weight.copy_(torch.from_numpy(w_ho[None, :]))  # state @ W_ho
    rule = make_rule(rule_name, model, loss="sequence-mse", variant=VARIANTS.get(rule_name, "default"))
    rs.seed()
    orders = [
        {"train": rs.permutation(300), "test": rs.permutation(100), "train_eval": rs.permutation(300)}
        for _ in range(ADD["epochs"])
    ]
    data = AuthorsData(arrays, orders, "regression", DTYPES[dtype])
    history, steps = train(model, rule, data, ADD["lr"], batch, ADD["epochs"], True)
    return history, steps, rs.draws


@pytest.mark.parametrize("rule_name", list(ADD["runs"]["float64"]))
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_add_rnn_replay(rule_name: str, dtype: str) -> None:
    golden = ADD["runs"][dtype][rule_name]
    history, steps, draws = add_replay(rule_name, dtype)
    check_draws(draws, golden["draws"])
    step_rtol = FLOAT64_STEP_RTOL if dtype == "float64" else EPOCH_RTOL
    assert relative(steps, golden["step_losses"]).max() < step_rtol
    for field, key in (("train_loss", "epoch_losses"), ("test_loss", "test_losses")):
        assert relative([getattr(r, field) for r in history], golden[key]).max() < EPOCH_RTOL
    train_eval = [r.extra["train_eval_loss"] for r in history]
    assert relative(train_eval, golden["train_eval_losses"]).max() < EPOCH_RTOL


def test_add_rnn_shared_initial_state_is_a_departure() -> None:
    """DEPARTURE_INITIAL_STATE: widealign's own RNN (one h_0 for every sequence) starts from the same
    loss but leaves the authors' run from the first update on, by more than the tolerance."""
    golden = ADD["runs"]["float64"]["bp"]
    history, steps, _ = add_replay("bp", "float64", per_row_state=False)
    assert relative(steps[:1], golden["step_losses"][:1]).max() < FLOAT64_STEP_RTOL
    assert (
        relative(steps[1:2], golden["step_losses"][1:2]).max() > 1e-8
    )  # 3.5e-7 measured; 1e-15 with the rows
    assert relative([r.train_loss for r in history], golden["epoch_losses"]).max() > EPOCH_RTOL, (
        DEPARTURE_INITIAL_STATE
    )

"""Record the authors' own training runs, for the golden replays of tests/golden (not run by tests).

usage: python make_golden.py kmnist AUTHORS_DIR OUT.json [TRAIN_SIZE]
       python make_golden.py add AUTHORS_DIR OUT.json

AUTHORS_DIR holds the authors' scripts (github FieteLab/Wide-Network-Alignment, commit d242886)
as the baseline set-up of the project makes them runnable under TensorFlow 2 (``tf.compat.v1``, a
reshape for ``tf.layers.flatten``, IDX counts read from the file headers, 300 images held out) and,
in ``AUTHORS_DIR/data``, the KMNIST-format files made from scikit-learn's digits (1,497 training
images, 28x28; the first 300 are held out). Run it with a Python that has TensorFlow (CPU) and
NumPy; it imports the scripts from AUTHORS_DIR and changes none of their files.

``kmnist`` calls ``train_kmnist.py``'s six training functions as they are (width 8, 3 conv layers,
strides 1, 2, 2, SAME padding, batch 100, lr 1.0, 5 epochs) on the first TRAIN_SIZE (default 300)
of the 1,197 training images: 3 steps per epoch. Only their loop ``train`` is replaced by this
file's, which makes the same NumPy draws (``np.random.seed(99)``, then per epoch a permutation of
the training set and one of the held-out set) and the same SGD steps, and records each step's
batch loss (the loss of the network before the step, from the same ``sess.run`` as the step).

``add`` calls ``train_add.py``'s ``train_normal``, ``train_alignzero`` and ``train_alignada``
unchanged (16 hidden units, delays 2 and 5, T = 100, lr 0.001, batch 50, 20 epochs); a
``tf.Session`` subclass records the loss of every ``sess.run``: the training steps' batch losses
and, after every epoch, the held-out and the training set's losses that the script prints.

Each run is recorded twice: with the scripts as they are (``float32``), and with one textual patch
applied to the source before it is executed (``float64``): ``tf.float32`` becomes ``tf.float64`` and
the ``'float'`` placeholders ``'float64'``, so that the whole computation is in double precision
(the input arrays keep the float32 values the scripts compute). Every NumPy draw the functions make
(``normal``, ``binomial``, ``permutation``) is fingerprinted (shape, sum, sum of squares, and the
sum of each entry times its flat position, which tells permutations apart) so that a replay can
check that it regenerates the same numbers in the same order.
"""

from __future__ import annotations

import json
import os
import sys
import types
from typing import Any

import numpy as np

KMNIST_RULES = {  # widealign rule -> the authors' function in train_kmnist.py
    "bp": "train_normal",
    "align-ada": "train_alignada",
    "align-zero": "train_alignzero",
    "fa": "train_fa",
    "dfa": "train_dfa",
    "readout": "train_lastlayer",
}
ADD_RULES = {"bp": "train_normal", "align-zero": "train_alignzero", "align-ada": "train_alignada"}
SOURCE = "FieteLab/Wide-Network-Alignment d242886"
DTYPES = ("float32", "float64")


def load_script(name: str, dtype: str) -> types.ModuleType:
    """The authors' script ``name``.py as a fresh module, in ``dtype`` (see the module docstring)."""
    with open(f"{name}.py") as f:
        text = f.read()
    if dtype == "float64":
        text = text.replace("tf.float32", "tf.float64").replace("'float'", "'float64'")
    module = types.ModuleType(f"{name}_{dtype}")
    module.__file__ = os.path.abspath(f"{name}.py")
    exec(compile(text, module.__file__, "exec"), module.__dict__)
    return module


class Draws:
    """Fingerprints of every NumPy draw made while installed (``normal``, ``binomial``, ``permutation``)."""

    KINDS = ("normal", "binomial", "permutation")

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.originals = {k: getattr(np.random, k) for k in self.KINDS}

    def install(self) -> None:
        for kind, fn in self.originals.items():
            setattr(np.random, kind, self._recording(kind, fn))

    def remove(self) -> None:
        for kind, fn in self.originals.items():
            setattr(np.random, kind, fn)

    def _recording(self, kind, fn):  # noqa: ANN001, ANN202
        def draw(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            value = np.asarray(fn(*args, **kwargs))
            flat = value.ravel().astype(np.float64)
            self.records.append(
                {
                    "kind": kind,
                    "shape": list(value.shape),
                    "sum": float(np.sum(flat)),
                    "sumsq": float(np.sum(np.square(flat))),
                    "weighted": float(np.sum(flat * np.arange(flat.size))),
                }
            )
            return value

        return draw


def record_kmnist(train_size: int, epochs: int = 5, lr: float = 1.0, width: int = 8) -> dict:
    import tensorflow.compat.v1 as tf

    record = {
        "source": f"{SOURCE} train_kmnist.py",
        "width": width,
        "epochs": epochs,
        "lr": lr,
        "batch_size": 100,
        "holdout": 300,
        "train_size": train_size,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "runs": {},
    }
    steps: list[float] = []

    def train(
        inputs: Any,
        labels: Any,
        lr: Any,
        x_train: Any,
        x_test: Any,
        y_train: Any,
        y_test: Any,
        epochs: Any,
        lr_val: Any,
        batch_size: Any,
        optimizer: Any,
        cross_entropy: Any,
        accuracy: Any,
    ) -> None:
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            np.random.seed(99)
            for _ in range(epochs):
                indices = np.random.permutation(x_train.shape[0])
                for i in range(int(x_train.shape[0] / batch_size)):
                    idx = indices[i * batch_size : (i + 1) * batch_size]
                    feed = {inputs: x_train[idx], labels: y_train[idx], lr: lr_val}
                    _, loss = sess.run([optimizer, cross_entropy], feed_dict=feed)
                    steps.append(float(loss))
                np.random.permutation(x_test.shape[0])  # the held-out order their loop draws
        tf.reset_default_graph()

    for dtype in DTYPES:
        T = load_script("train_kmnist", dtype)
        full = T.KMNIST

        class Truncated(full):
            def __init__(self) -> None:
                super().__init__()
                self.train_data = self.train_data[:train_size]
                self.train_labels = self.train_labels[:train_size]

        T.KMNIST, T.train = Truncated, train
        runs = record["runs"][dtype] = {}
        for rule, fn in KMNIST_RULES.items():
            draws = Draws()
            steps.clear()
            draws.install()
            try:
                getattr(T, fn)(
                    filters=[width] * 3,
                    kernels=[3] * 3,
                    strides=[1, 2, 2],
                    paddings=["SAME"] * 3,
                    name=f"golden_{rule}",
                    batch_size=100,
                    epochs=epochs,
                    lr_val=lr,
                )
            finally:
                draws.remove()
            per_epoch = np.reshape(steps, (epochs, -1)).mean(1)
            runs[rule] = {
                "epoch_losses": [float(v) for v in per_epoch],
                "step_losses": list(steps),
                "draws": draws.records,
            }
            print(dtype, rule, [round(float(v), 6) for v in per_epoch], flush=True)
        data = Truncated()
    record["train_checksum"] = float(np.sum(data.train_data + 0.5, dtype=np.float64))
    record["label_checksum"] = float(np.sum(data.train_labels * np.arange(10), dtype=np.float64))
    return record


def record_add(hidden: int = 16, epochs: int = 20, lr: float = 0.001, batch_size: int = 50) -> dict:
    import tensorflow.compat.v1 as tf

    record = {
        "source": f"{SOURCE} train_add.py",
        "hidden": hidden,
        "delays": [2, 5],
        "length": 100,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "runs": {},
    }
    session = tf.Session
    losses: dict[str, list[float]] = {"step": [], "eval": []}

    class Recording(session):
        def run(self, fetches, feed_dict=None, **kwargs):  # noqa: ANN001, ANN003, ANN202
            out = super().run(fetches, feed_dict=feed_dict, **kwargs)
            if isinstance(fetches, list):
                losses["step"].append(float(out[1]))
            elif fetches is not None and feed_dict is not None:
                losses["eval"].append(float(out))
            return out

    for dtype in DTYPES:
        T = load_script("train_add", dtype)
        runs = record["runs"][dtype] = {}
        for rule, fn in ADD_RULES.items():
            draws = Draws()
            losses["step"].clear(), losses["eval"].clear()
            draws.install()
            tf.Session = Recording
            try:
                getattr(T, fn)(hidden, 2, 5, T=100, lr_val=lr, batch_size=batch_size, epochs=epochs)
            finally:
                tf.Session = session
                draws.remove()
            tf.reset_default_graph()
            steps = np.reshape(losses["step"], (epochs, -1))
            evals = np.reshape(losses["eval"], (epochs, -1))  # per epoch: 2 held-out, then 6 training batches
            n_test = 100 // batch_size
            runs[rule] = {
                "epoch_losses": [float(v) for v in steps.mean(1)],
                "test_losses": [float(v) for v in evals[:, :n_test].mean(1)],
                "train_eval_losses": [float(v) for v in evals[:, n_test:].mean(1)],
                "step_losses": list(losses["step"]),
                "draws": draws.records,
            }
            print(dtype, rule, [round(float(v), 6) for v in steps.mean(1)], flush=True)
    return record


def main() -> None:
    task, authors, out = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    train_size = int(sys.argv[4]) if len(sys.argv) > 4 else 300
    os.chdir(authors)
    sys.path.insert(0, authors)
    del sys.argv[1:]  # the scripts read a "part" from the command line
    if task == "kmnist":
        record = record_kmnist(train_size)
    elif task == "add":
        record = record_add()
    else:
        raise SystemExit(f"unknown task {task!r}; choose kmnist or add")
    with open(out, "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()

"""Record the authors' per-epoch losses on the KMNIST conv net, for tests/golden (not run by tests).

usage: python make_golden.py AUTHORS_DIR OUT.json [EPOCHS] [LR]

AUTHORS_DIR holds the authors' ``train_kmnist.py`` and ``setup_kmnist.py``
(github FieteLab/Wide-Network-Alignment, commit d242886) made runnable under TensorFlow 2 with
``tf.compat.v1`` and reading KMNIST-format files made from scikit-learn's digits, 300 images held
out, in ``AUTHORS_DIR/data``: 1,197 training images, 11 batches of 100 per epoch. Run it with a
Python that has TensorFlow (CPU) and NumPy.

Their functions are called as they are (width 8, 3 conv layers, strides 1, 2, 2, SAME padding,
batch 100). Only their training loop ``train`` is replaced by this file's ``train``, which makes the
same NumPy draws (``np.random.seed(99)``, then per epoch a permutation of the training set and one
of the held-out set) and the same SGD steps, and also records each step's batch loss (the loss of
the network before the step, from the same ``sess.run`` as the step). Every NumPy draw the
functions make is recorded too (shape, sum, sum of squares), so that the test can check that it
regenerates the same numbers in the same order.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

RULES = {  # widealign rule (variant) -> the authors' function
    "bp": "train_normal",
    "align-ada": "train_alignada",
    "align-zero": "train_alignzero",
    "fa": "train_fa",
    "dfa": "train_dfa",
    "readout": "train_lastlayer",
}


def main() -> None:
    authors, out = sys.argv[1], sys.argv[2]
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    os.chdir(authors)
    sys.path.insert(0, authors)
    sys.argv = sys.argv[:1]
    import tensorflow.compat.v1 as tf
    import train_kmnist as T

    draws: list[dict] = []
    normal = np.random.normal

    def recording_normal(*args, **kwargs):
        value = normal(*args, **kwargs)
        draws.append({"shape": list(np.shape(value)), "sum": float(np.sum(value)),
                      "sumsq": float(np.sum(np.square(value)))})
        return value

    np.random.normal = recording_normal
    steps: list[float] = []
    orders: list[list[int]] = []

    def train(inputs, labels, lr, x_train, x_test, y_train, y_test, epochs, lr_val, batch_size, optimizer,
              cross_entropy, accuracy):
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            np.random.seed(99)
            for _ in range(epochs):
                indices = np.random.permutation(x_train.shape[0])
                orders.append([int(i) for i in indices[:5]])
                for i in range(int(x_train.shape[0] / batch_size)):
                    idx = indices[i * batch_size: (i + 1) * batch_size]
                    feed = {inputs: x_train[idx], labels: y_train[idx], lr: lr_val}
                    _, loss = sess.run([optimizer, cross_entropy], feed_dict=feed)
                    steps.append(float(loss))
                np.random.permutation(x_test.shape[0])  # the held-out order their loop draws
        tf.reset_default_graph()

    T.train = train
    record = {"source": "FieteLab/Wide-Network-Alignment d242886 train_kmnist.py", "width": 8, "epochs": epochs,
              "lr": lr, "batch_size": 100, "tensorflow": tf.__version__, "numpy": np.__version__, "rules": {}}
    for rule, fn in RULES.items():
        draws.clear(), steps.clear(), orders.clear()
        getattr(T, fn)(filters=[8] * 3, kernels=[3] * 3, strides=[1, 2, 2], paddings=["SAME"] * 3,
                       name=f"golden_{rule}", batch_size=100, epochs=epochs, lr_val=lr)
        per_epoch = np.reshape(steps, (epochs, -1)).mean(1)
        data = T.KMNIST()
        record["rules"][rule] = {"epoch_losses": [float(v) for v in per_epoch], "step_losses": list(steps),
                                 "draws": list(draws), "order_heads": list(orders)}
        print(rule, [round(float(v), 6) for v in per_epoch], flush=True)
    record["train_checksum"] = float(np.sum(data.train_data + 0.5, dtype=np.float64))
    record["train_size"] = int(data.train_data.shape[0])
    with open(out, "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()

"""scikit-learn's bundled handwritten digits: real 8x8 images that need no download.

1,797 images of 10 classes, pixel values 0..16 scaled to [0, 1], shaped (N, 1, 8, 8). A fixed,
stratified split (independent of the run's seed) holds out 20% (360 images) for evaluation.
Targets are one-hot minus 0.1, as for KMNIST and CIFAR-10 in the paper.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as _sk_load_digits
from sklearn.model_selection import train_test_split

from widealign.data.base import Dataset, shifted_one_hot

#: Seed of the fixed train/held-out split (not the run's seed: every run sees the same split).
SPLIT_SEED = 0


def load_digits(test_fraction: float = 0.2) -> Dataset:
    """The digits data set with a fixed stratified held-out split."""
    bunch = _sk_load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]
    labels = bunch.target
    x_tr, x_te, l_tr, l_te = train_test_split(
        images, labels, test_size=test_fraction, random_state=SPLIT_SEED, stratify=labels
    )
    return Dataset(
        name="digits",
        x_train=torch.from_numpy(x_tr),
        y_train=shifted_one_hot(torch.from_numpy(l_tr), 10),
        x_test=torch.from_numpy(x_te),
        y_test=shifted_one_hot(torch.from_numpy(l_te), 10),
        task="classification",
        num_classes=10,
    )

"""What each named data set looks like, known without its files: shapes, sizes and task.

Run-time estimates (:mod:`widealign.sweeps.estimate`) need the shape of an example and the
number of training and held-out examples, but not the data, so that the expected time of a
CIFAR-10 or ImageNet sweep on a GPU can be measured before anything is downloaded. The numbers
are those of the loaders: MNIST, KMNIST and CIFAR-10 hold out the first :data:`HOLDOUT` training
images (or evaluate on the 10,000-image official test set), ImageNet trains on the 1,281,167
ILSVRC-2012 training images at 224 x 224 and evaluates on its 50,000 val images. Tests check the
bundled sets' entries against their loaders.
"""

from __future__ import annotations

from dataclasses import dataclass

from widealign.data.imagenet import IMAGENET_TRANSFORMS, SMOKE_TRANSFORMS
from widealign.data.torchvision_sets import HOLDOUT


@dataclass(frozen=True)
class DataShape:
    """A data set's shape without its contents.

    Attributes:
        input_shape: one example's shape ((C, H, W) for images, (T, features) for sequences).
        num_outputs: a model's output size (classes, or the regression target's size).
        target_shape: one target's shape (one-hot row, or (T, 1) for the Add task).
        n_train: training examples.
        n_test: held-out examples (the held-out part of the training set where there is one).
        n_official_test: examples of the official test set (None where there is none to switch to).
        task: ``classification`` or ``regression``.
        default_loss: the paper's loss for this data.
    """

    input_shape: tuple[int, ...]
    num_outputs: int
    target_shape: tuple[int, ...]
    n_train: int
    n_test: int
    n_official_test: int | None = None
    task: str = "classification"
    default_loss: str = "mse"

    def sizes(
        self, train_size: int | None = None, official_test: bool = False, holdout: int | None = None
    ) -> tuple[int, int]:
        """(training, evaluation) examples of a run that keeps ``train_size``, holds out ``holdout``
        training examples (None: the default split) and picks its test set."""
        n_train, n_test = self.n_train, self.n_test
        if holdout is not None:
            n_train, n_test = n_train + n_test - holdout, holdout
        n_train = n_train if train_size is None else min(train_size, n_train)
        n_test = self.n_official_test if official_test and self.n_official_test else n_test
        return n_train, n_test


def _images(
    channels: int, side: int, n_train: int, n_test: int, official: int | None, classes: int
) -> DataShape:
    return DataShape((channels, side, side), classes, (classes,), n_train, n_test, official)


#: Shapes by data-set name (the keys of :data:`widealign.data.DATASETS`).
DATA_SHAPES: dict[str, DataShape] = {
    "digits": _images(1, 8, 1437, 360, None, 10),
    "add": DataShape((100, 1), 1, (100, 1), 300, 100, None, "regression", "sequence-mse"),
    "mnist": _images(1, 28, 60_000 - HOLDOUT, HOLDOUT, 10_000, 10),
    "kmnist": _images(1, 28, 60_000 - HOLDOUT, HOLDOUT, 10_000, 10),
    "cifar10": _images(3, 32, 50_000 - HOLDOUT, HOLDOUT, 10_000, 10),
    "imagenet": _images(3, IMAGENET_TRANSFORMS.crop, 1_281_167, 50_000, None, 1000),
    "imagenet-smoke": _images(3, SMOKE_TRANSFORMS.crop, 1437, 360, None, 10),
}

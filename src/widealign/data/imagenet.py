"""ImageNet streamed from its train/val folders, and ``imagenet-smoke``, a miniature of it.

ImageNet does not fit in memory, so it is read image by image (torchvision's ``ImageFolder``)
through a ``DataLoader`` instead of being held as tensors. The expected layout is the usual one::

    <data_dir>/imagenet/train/<class>/<image>   e.g. train/n01440764/n01440764_10026.JPEG
    <data_dir>/imagenet/val/<class>/<image>     the 50,000 validation images sorted into class folders

ImageNet cannot be downloaded automatically (it needs an account at image-net.org). The paper's
transforms (docs/method.md): training images get ``RandomResizedCrop(224)`` and a random
horizontal flip, evaluation images ``Resize(256)`` then ``CenterCrop(224)``; pixels are scaled to
[0, 1] and then normalised with ImageNet's per-channel mean and std (:data:`IMAGENET_MEAN`,
:data:`IMAGENET_STD`), as the authors' loader does; targets are plain one-hot rows. The val folder
is ImageNet's official evaluation set. It is sorted by class, so it is evaluated in the fixed
shuffled order of :func:`~widealign.data.base.eval_order` (the normalisation uses batch
statistics at evaluation too; class-sorted batches would hold one or two classes each).

Reproducibility: :meth:`ImageFolderDataset.train_batches` draws the epoch's order and one seed per
image from the trainer's generator before loading anything, and each image is augmented under its
own seed in a forked RNG. The batches therefore depend only on the generator's state, not on the
number of loader workers nor on their scheduling, and the global torch RNG is left untouched.

``imagenet-smoke`` exercises the same code path without ImageNet: the 1,797 scikit-learn digits
(the digits data set's fixed train/held-out split, 1,437 / 360) upsampled to 3x64x64 RGB and
written as PNG files into ``<data_dir>/imagenet-smoke/{train,val}/<digit>/`` on first use, then read
by ``ImageFolder`` with the transforms scaled to the smaller images: ``RandomResizedCrop(56)`` +
flip for training, ``Resize(64)`` + ``CenterCrop(56)`` for evaluation (the ratios of 224 and 256),
and the same mean/std normalisation.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import ImageFolder

from widealign.data.base import eval_order
from widealign.data.digits import load_digits
from widealign.data.torchvision_sets import one_line, resolve_data_dir

#: Contents of the marker file that says an imagenet-smoke tree was written completely.
SMOKE_VERSION = "1"
SMOKE_IMAGE_SIZE = 64
#: ImageNet's per-channel pixel mean and standard deviation (RGB), as the authors' loader uses them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FolderTransforms:
    """The paper's ImageNet transforms at a given scale: random resized crop + flip to train,
    resize then centre crop to evaluate; then pixels in [0, 1] normalised by ``mean`` and ``std``
    (None: left in [0, 1])."""

    crop: int
    resize: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def _tensor(self) -> list[Callable]:
        steps: list[Callable] = [transforms.ToTensor()]
        if self.mean is not None and self.std is not None:
            steps.append(transforms.Normalize(self.mean, self.std))
        return steps

    def train(self) -> Callable[[Image.Image], Tensor]:
        """Training transform: random resized crop to ``crop``, random flip, normalised pixels."""
        return transforms.Compose(
            [transforms.RandomResizedCrop(self.crop), transforms.RandomHorizontalFlip(), *self._tensor()]
        )

    def eval(self) -> Callable[[Image.Image], Tensor]:
        """Evaluation transform: shorter side to ``resize``, centre crop to ``crop``, normalised pixels."""
        return transforms.Compose(
            [transforms.Resize(self.resize), transforms.CenterCrop(self.crop), *self._tensor()]
        )


IMAGENET_TRANSFORMS = FolderTransforms(crop=224, resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD)
SMOKE_TRANSFORMS = FolderTransforms(crop=56, resize=64, mean=IMAGENET_MEAN, std=IMAGENET_STD)


class _Examples(torch.utils.data.Dataset):
    """``ImageFolder`` images indexed by ``(index, seed)``: each is transformed under its own seed."""

    def __init__(self, folder: ImageFolder, transform: Callable[[Image.Image], Tensor]) -> None:
        self.folder, self.transform = folder, transform

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int]:
        index, seed = key
        path, label = self.folder.samples[index]
        try:
            image = self.folder.loader(path)
        except (OSError, ValueError, SyntaxError) as err:
            raise ValueError(f"cannot read image {path} ({one_line(err)}); replace or remove it") from err
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), label


@dataclass(frozen=True)
class ImageFolderDataset:
    """A train/val pair of image folders streamed in mini-batches, with the interface of
    :class:`~widealign.data.base.Dataset` that the trainer and ``build_model`` use.

    Attributes:
        name: the data set's name.
        train_folder, test_folder: torchvision ``ImageFolder`` s (train and val), without transforms.
        scale: crop and resize sizes of the transforms.
        target_offset: added to the one-hot targets (0: the paper's plain one-hot for ImageNet).
        num_workers: ``DataLoader`` worker processes (0 loads in the calling process).
        device, dtype: where and in which floating dtype batches come out (see :meth:`to`).
        train_limit: train on the first ``train_limit`` images only (see :meth:`subset`).
    """

    name: str
    train_folder: ImageFolder
    test_folder: ImageFolder
    scale: FolderTransforms
    target_offset: float = 0.0
    num_workers: int = 0
    device: torch.device | None = None
    dtype: torch.dtype | None = None
    train_limit: int | None = None
    task: str = "classification"
    default_loss: str = "mse"

    @property
    def num_classes(self) -> int:
        """Classes: one per sub-folder of the train folder."""
        return len(self.train_folder.classes)

    @property
    def num_outputs(self) -> int:
        """Size of a model's output: one per class."""
        return self.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one transformed image: (3, crop, crop)."""
        return (3, self.scale.crop, self.scale.crop)

    @property
    def n_train(self) -> int:
        """Training images (after :meth:`subset`)."""
        return len(self.train_folder.samples) if self.train_limit is None else self.train_limit

    @property
    def n_test(self) -> int:
        """Evaluation (val) images."""
        return len(self.test_folder.samples)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ImageFolderDataset:
        """A copy whose batches come out on ``device`` with images and targets in ``dtype``."""
        return replace(
            self,
            device=torch.device(device) if device is not None else self.device,
            dtype=dtype if dtype is not None else self.dtype,
        )

    def subset(self, n: int) -> ImageFolderDataset:
        """The first ``n`` training images in the folder's order (sorted by class, then file name)."""
        if not 0 < n <= len(self.train_folder.samples):
            raise ValueError(f"subset size must be in 1..{len(self.train_folder.samples)}, got {n}")
        return replace(self, train_limit=n)

    def train_batches(
        self, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled, augmented training batches; order and augmentation drawn from ``generator``.

        Both are drawn when this is called, so the generator's state afterwards is that of the next
        epoch. Without a generator the images come in folder order with fixed augmentation seeds.
        """
        n = self.n_train
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        fixed = torch.Generator().manual_seed(0)
        seeds = torch.randint(0, 2**62, (n,), generator=generator if generator is not None else fixed)
        keys = list(zip(order.tolist(), seeds.tolist()))
        return self._batches(_Examples(self.train_folder, self.scale.train()), keys, batch_size)

    def test_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Evaluation batches (resize + centre crop) in the fixed shuffled order of ``eval_order``."""
        keys = [(i, 0) for i in eval_order(self.n_test).tolist()]
        return self._batches(_Examples(self.test_folder, self.scale.eval()), keys, batch_size)

    def train_eval_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The training images (after :meth:`subset`) with the evaluation transform, in the fixed
        shuffled order of ``eval_order``, to evaluate the training set."""
        keys = [(i, 0) for i in eval_order(self.n_train).tolist()]
        return self._batches(_Examples(self.train_folder, self.scale.eval()), keys, batch_size)

    def _batches(
        self, examples: _Examples, keys: Sequence[tuple[int, int]], batch_size: int
    ) -> Iterator[tuple[Tensor, Tensor]]:
        loader = DataLoader(
            examples, batch_size=batch_size, sampler=keys, num_workers=self.num_workers,
            pin_memory=self.device is not None and self.device.type == "cuda",
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        for images, labels in loader:
            x = images.to(device=self.device, dtype=self.dtype, non_blocking=True)
            targets = torch.nn.functional.one_hot(labels, self.num_classes).to(x.dtype) + self.target_offset
            yield x, targets.to(self.device, non_blocking=True)


def load_image_folders(
    root: str | os.PathLike,
    name: str,
    scale: FolderTransforms,
    target_offset: float = 0.0,
    num_workers: int = 0,
    how_to_get: str = "",
) -> ImageFolderDataset:
    """``root/train`` and ``root/val`` (one sub-folder of images per class) as a streamed data set.

    Missing folders, folders without images, differing class lists or an unreadable first image
    raise a one-line ``ValueError`` naming the folder (``how_to_get`` is appended to it).
    """
    root = Path(root)
    folders = []
    for split in ("train", "val"):
        path = root / split
        if not path.is_dir():
            raise ValueError(f"{name} not found: no folder {path}{how_to_get}")
        try:
            folders.append(ImageFolder(str(path)))
        except (OSError, ValueError) as err:
            raise ValueError(f"{name}: no usable images in {path} ({one_line(err)}){how_to_get}") from err
    train, val = folders
    if train.classes != val.classes:
        raise ValueError(
            f"{name}: {root / 'train'} has {len(train.classes)} classes and {root / 'val'} has "
            f"{len(val.classes)}, or their names differ; both need one sub-folder per class"
        )
    data = ImageFolderDataset(name, train, val, scale, target_offset, num_workers)
    _Examples(train, scale.train())[(0, 0)]
    _Examples(val, scale.eval())[(0, 0)]
    return data


def load_imagenet(
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    official_test: bool = False,
    num_workers: int | None = None,
) -> ImageFolderDataset:
    """ImageNet from ``<data_dir>/imagenet/{train,val}`` with the paper's transforms, one-hot targets.

    ``download`` cannot fetch ImageNet (a missing copy is an error either way) and
    ``official_test`` changes nothing: evaluation is always on the val folder, the official
    evaluation set. ``num_workers`` defaults to ``min(8, cpu count)`` loader processes.
    """
    root = resolve_data_dir(data_dir) / "imagenet"
    how_to_get = (
        f"; ImageNet cannot be downloaded automatically (--download does not apply): get it from "
        f"https://image-net.org and place its train/ and val/ folders, one sub-folder per class, in {root}"
    )
    workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    return load_image_folders(root, "imagenet", IMAGENET_TRANSFORMS, 0.0, workers, how_to_get)


def _write_pngs(folder: Path, images: Tensor, labels: Tensor) -> None:
    """Upsample (N, 1, 8, 8) images in [0, 1] to RGB 64x64 and save them as ``<label>/<i>.png``."""
    big = torch.nn.functional.interpolate(images, size=SMOKE_IMAGE_SIZE, mode="bilinear", align_corners=False)
    pixels = (big * 255).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1)
    for i, (image, label) in enumerate(zip(pixels, labels.tolist())):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy(), "RGB").save(
            folder / str(label) / f"{i:04d}.png", compress_level=1
        )


def _complete(root: Path) -> bool:
    marker = root / ".complete"
    return marker.is_file() and marker.read_text().strip() == SMOKE_VERSION


def build_imagenet_smoke(root: str | os.PathLike) -> Path:
    """Write the imagenet-smoke PNG tree into ``root`` unless a complete one is there already.

    The tree is written into a temporary sibling folder and renamed into place, so an interrupted
    or concurrent build never leaves a partial tree at ``root``.
    """
    root = Path(root)
    if _complete(root):
        return root
    if root.exists():
        raise ValueError(f"{root} exists but is not a complete imagenet-smoke tree; delete it to rebuild")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        digits = load_digits()
        _write_pngs(tmp / "train", digits.x_train, digits.y_train.argmax(1))
        _write_pngs(tmp / "val", digits.x_test, digits.y_test.argmax(1))
        (tmp / ".complete").write_text(SMOKE_VERSION + "\n")
        try:
            tmp.rename(root)
        except OSError:
            if not _complete(root):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root


def load_imagenet_smoke(
    data_dir: str | os.PathLike | None = None, download: bool = False, official_test: bool = False
) -> ImageFolderDataset:
    """The imagenet-smoke data set (see the module docstring), built under ``data_dir`` on first use.

    ``download`` and ``official_test`` are accepted for a uniform signature and change nothing.
    """
    root = build_imagenet_smoke(resolve_data_dir(data_dir) / "imagenet-smoke")
    return load_image_folders(root, "imagenet-smoke", SMOKE_TRANSFORMS)

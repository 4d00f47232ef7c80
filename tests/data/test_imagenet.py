"""Streamed image folders (ImageNet's layout) and imagenet-smoke, read from real PNG files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from widealign.data import ImageFolderDataset, eval_order, load_dataset, load_image_folders, load_imagenet
from widealign.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, IMAGENET_TRANSFORMS, FolderTransforms
from widealign.models import CONV_PRESETS, ConvNet
from widealign.rules import make_rule
from widealign.train import Trainer

TINY = FolderTransforms(crop=16, resize=20)
CLASSES = ("apple", "bird", "cat")


def write_tree(root: Path, per_class: dict[str, int] | None = None) -> Path:
    """``root/{train,val}/<class>/<i>.png``: 4 training and 2 validation images per class."""
    rng = np.random.default_rng(0)
    counts = per_class or {"train": 4, "val": 2}
    for split, n in counts.items():
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                size = (30 + 5 * i, 24 + 3 * c)
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(root / split / name / f"{i}.png")
    return root


@pytest.fixture
def tiny(tmp_path) -> ImageFolderDataset:
    return load_image_folders(write_tree(tmp_path), "tiny", TINY)


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def collect(batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat(ys)


def test_folder_batches_have_the_papers_format(tiny):
    assert (tiny.n_train, tiny.n_test, tiny.num_classes, tiny.num_outputs) == (12, 6, 3, 3)
    assert tiny.input_shape == (3, 16, 16) and tiny.task == "classification" and tiny.default_loss == "mse"
    sizes = [len(x) for x, _ in tiny.train_batches(5, torch.Generator().manual_seed(0))]
    assert sizes == [5, 5, 2]
    x, y = collect(tiny.train_batches(5, torch.Generator().manual_seed(0)))
    assert x.shape == (12, 3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    torch.testing.assert_close(y, torch.nn.functional.one_hot(y.argmax(1), 3).float())
    assert sorted(y.argmax(1).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    x_test, y_test = collect(tiny.test_batches(4))
    assert sorted(y_test.argmax(1).tolist()) == [0, 0, 1, 1, 2, 2]
    assert torch.equal(x_test, collect(tiny.test_batches(4))[0])
    x64, y64 = next(tiny.to("cpu", torch.float64).test_batches(4))
    assert x64.dtype == y64.dtype == torch.float64 and x64.device.type == "cpu"


def test_evaluation_is_in_the_fixed_shuffled_order_not_the_class_sorted_folder_order(tiny):
    """The val folder is class-sorted; evaluation batches follow ``eval_order``, every call alike."""
    folder_labels = torch.tensor([label for _, label in tiny.test_folder.samples])
    assert folder_labels.tolist() == [0, 0, 1, 1, 2, 2]
    order = eval_order(6)
    assert order.tolist() != list(range(6)) and torch.equal(order, eval_order(6))
    _, y = collect(tiny.test_batches(4))
    assert y.argmax(1).tolist() == folder_labels[order].tolist()
    x, _ = collect(tiny.test_batches(4))
    single = tiny.scale.eval()(tiny.test_folder.loader(tiny.test_folder.samples[int(order[0])][0]))
    torch.testing.assert_close(x[0], single)
    _, y_train = collect(tiny.train_eval_batches(5))
    train_labels = torch.tensor([label for _, label in tiny.train_folder.samples])
    assert y_train.argmax(1).tolist() == train_labels[eval_order(12)].tolist()


def test_imagenet_pixels_are_normalised_with_imagenet_mean_and_std(tmp_path):
    """As the authors' loader: ToTensor then Normalize(mean, std) after the crops, for both splits."""
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)
    for transform in (IMAGENET_TRANSFORMS.train(), IMAGENET_TRANSFORMS.eval()):
        last = transform.transforms[-1]
        assert isinstance(last, transforms.Normalize)
        assert tuple(last.mean) == IMAGENET_MEAN and tuple(last.std) == IMAGENET_STD
    write_tree(tmp_path / "imagenet")
    data = load_imagenet(tmp_path, num_workers=0)
    x, _ = next(data.test_batches(6))
    path = data.test_folder.samples[int(eval_order(6)[0])][0]
    plain = replace(IMAGENET_TRANSFORMS, mean=None, std=None).eval()(data.test_folder.loader(path))
    expected = (plain - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[
        :, None, None
    ]
    torch.testing.assert_close(x[0], expected)
    assert plain.min() >= 0 and plain.max() <= 1 and x[0].min() < 0


def test_streaming_is_reproducible_from_the_generator_alone(tiny):
    global_state = torch.get_rng_state()
    first = collect(tiny.train_batches(4, torch.Generator().manual_seed(7)))
    again = collect(tiny.train_batches(4, torch.Generator().manual_seed(7)))
    other = collect(tiny.train_batches(4, torch.Generator().manual_seed(8)))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])
    assert torch.equal(torch.get_rng_state(), global_state)
    workers = replace(tiny, num_workers=1)
    assert torch.equal(collect(workers.train_batches(4, torch.Generator().manual_seed(7)))[0], first[0])


def test_epochs_differ_and_the_generator_advances_when_batches_are_requested(tiny):
    g, h = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    epoch1 = tiny.train_batches(4, g)
    tiny.train_batches(4, h)
    assert torch.equal(g.get_state(), h.get_state())
    assert not torch.equal(collect(epoch1)[0], collect(tiny.train_batches(4, g))[0])


def test_subset_trains_on_the_first_images(tiny):
    small = tiny.subset(5)
    assert small.n_train == 5 and small.n_test == 6
    _, y = collect(small.train_batches(2, torch.Generator().manual_seed(0)))
    assert sorted(y.argmax(1).tolist()) == [0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="subset size"):
        tiny.subset(13)


def test_imagenet_reads_the_usual_layout_with_the_papers_transforms(tmp_path):
    write_tree(tmp_path / "imagenet")
    d = load_dataset("imagenet", data_dir=tmp_path)
    assert d.name == "imagenet" and d.input_shape == (3, 224, 224) and d.num_workers >= 1
    assert d.train_folder.classes == list(CLASSES)
    train = IMAGENET_TRANSFORMS.train().transforms
    assert isinstance(train[0], transforms.RandomResizedCrop) and train[0].size == (224, 224)
    assert isinstance(train[1], transforms.RandomHorizontalFlip)
    resize, crop = IMAGENET_TRANSFORMS.eval().transforms[:2]
    assert resize.size == 256 and crop.size == (224, 224)
    x, y = next(load_imagenet(tmp_path, num_workers=0).test_batches(6))
    assert x.shape == (6, 3, 224, 224) and y.sum(1).tolist() == [1.0] * 6


def test_missing_or_mismatched_folders_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="image-net.org") as info:
        load_dataset("imagenet", data_dir=tmp_path, download=True)
    assert str(tmp_path / "imagenet" / "train") in str(info.value) and "\n" not in str(info.value)
    write_tree(tmp_path / "imagenet", {"train": 1})
    with pytest.raises(ValueError, match=f"no folder {tmp_path / 'imagenet' / 'val'}"):
        load_dataset("imagenet", data_dir=tmp_path)
    (tmp_path / "imagenet" / "val").mkdir()
    with pytest.raises(ValueError, match="no usable images in") as info:
        load_dataset("imagenet", data_dir=tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / "imagenet" / "val" / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "imagenet" / "val" / "dog" / "0.png")
    with pytest.raises(ValueError, match="their names differ"):
        load_dataset("imagenet", data_dir=tmp_path)


def test_corrupt_images_are_named(tmp_path):
    root = write_tree(tmp_path)
    (root / "val" / "apple" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match="cannot read image .*val/apple/0.png"):
        load_image_folders(root, "tiny", TINY)
    (root / "val" / "apple" / "0.png").unlink()
    (root / "train" / "cat" / "3.png").write_bytes(b"")
    data = load_image_folders(root, "tiny", TINY)
    with pytest.raises(ValueError, match="cannot read image .*train/cat/3.png"):
        collect(data.train_batches(4, torch.Generator().manual_seed(0)))


def test_imagenet_smoke_writes_real_pngs_and_loads_them_through_image_folder(smoke_dir):
    d = load_dataset("imagenet-smoke", data_dir=smoke_dir)
    assert (d.n_train, d.n_test, d.num_classes, d.input_shape) == (1437, 360, 10, (3, 56, 56))
    assert d.train_folder.classes == [str(k) for k in range(10)]
    png = Path(d.train_folder.samples[0][0])
    assert png.suffix == ".png" and png.is_relative_to(smoke_dir / "imagenet-smoke" / "train")
    with Image.open(png) as image:
        assert image.size == (64, 64) and image.mode == "RGB"
    digits = load_dataset("digits")
    assert torch.equal(torch.tensor([label for _, label in d.test_folder.samples]).bincount(),
                       digits.y_test.argmax(1).bincount())  # fmt: skip
    x, y = next(d.train_batches(32, torch.Generator().manual_seed(0)))
    assert x.shape == (32, 3, 56, 56) and y.shape == (32, 10)
    low = (0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    high = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    per_channel = x.transpose(0, 1).reshape(3, -1)
    assert (per_channel.min(1).values >= low - 1e-6).all() and (
        per_channel.max(1).values <= high + 1e-6
    ).all()
    marker = smoke_dir / "imagenet-smoke" / ".complete"
    written = marker.stat().st_mtime_ns
    assert load_dataset("imagenet-smoke", data_dir=smoke_dir).n_train == 1437
    assert marker.stat().st_mtime_ns == written


def test_an_incomplete_smoke_tree_is_not_used(tmp_path):
    (tmp_path / "imagenet-smoke" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a complete imagenet-smoke tree"):
        load_dataset("imagenet-smoke", data_dir=tmp_path)


def test_the_trainer_runs_an_epoch_on_streamed_images(tiny):
    data = tiny.to("cpu", torch.float64)
    model = ConvNet(data.input_shape[0], data.num_outputs, 4, CONV_PRESETS["imagenet"], seed=0).double()
    rule = make_rule("bp", model, data.default_loss)
    trainer = Trainer(model, rule, torch.optim.SGD(model.parameters(), lr=0.5), data, 5, progress=False)
    (record,) = trainer.fit(1)
    assert np.isfinite(record.train_loss) and 0 <= record.test_acc <= 1

"""DATA_SHAPES describes each data set as its loader delivers it (MNIST, KMNIST and CIFAR-10 are
checked on real-format files in test_torchvision_sets)."""

from __future__ import annotations

import pytest

from widealign.data import DATA_SHAPES, DATASETS, load_dataset


def assert_matches(shape, data) -> None:
    assert shape.input_shape == tuple(data.input_shape)
    assert shape.num_outputs == data.num_outputs
    assert (shape.task, shape.default_loss) == (data.task, data.default_loss)


def test_every_data_set_has_a_shape():
    assert set(DATA_SHAPES) == set(DATASETS)


@pytest.mark.parametrize("name", ["digits", "add"])
def test_bundled_in_memory_sets_match_their_loaders_exactly(name):
    data, shape = load_dataset(name), DATA_SHAPES[name]
    assert_matches(shape, data)
    assert shape.target_shape == tuple(data.y_train.shape[1:])
    assert (shape.n_train, shape.n_test) == (data.n_train, data.n_test)


def test_imagenet_smoke_matches_its_png_tree(tmp_path):
    data, shape = load_dataset("imagenet-smoke", tmp_path), DATA_SHAPES["imagenet-smoke"]
    assert_matches(shape, data)
    assert (shape.n_train, shape.n_test) == (data.n_train, data.n_test)
    x, y = next(data.test_batches(4))
    assert tuple(x.shape[1:]) == shape.input_shape and tuple(y.shape[1:]) == shape.target_shape


def test_sizes_keep_the_first_n_and_switch_to_the_official_test_set():
    cifar = DATA_SHAPES["cifar10"]
    assert cifar.sizes() == (45_000, 5_000)
    assert cifar.sizes(train_size=450) == (450, 5_000)
    assert cifar.sizes(train_size=10**9, official_test=True) == (45_000, 10_000)
    assert DATA_SHAPES["digits"].sizes(official_test=True) == (1437, 360)

"""Tests for the offline sklearn_digits tfds dataset and its loading."""

import socket

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tf_memorization.data.datasets import sklearn_digits

NUM_EXAMPLES = 1797


@pytest.fixture(scope='module')
def digits():
  return load_digits()


def _expected_test_indices(labels):
  """Every fifth example of each class (ranks 4, 9, ...) in sklearn's order."""
  test = []
  for c in range(10):
    members = [i for i, label in enumerate(labels) if label == c]
    test += members[4::5]
  return sorted(test)


def test_split_is_a_stratified_partition(digits):
  """split_indices() partitions range(1797), every fifth of each class test."""
  train, test = sklearn_digits.split_indices()
  assert len(set(train) & set(test)) == 0
  assert sorted(np.concatenate([train, test])) == list(range(NUM_EXAMPLES))
  assert list(train) == sorted(train) and list(test) == sorted(test)
  assert list(test) == _expected_test_indices(digits.target)
  for c in range(10):
    # Ranks r < count with r % 5 == 4 are r = 5j + 4 for j < count / 5 - 0.8,
    # i.e. floor(count / 5) of them (count = 179 gives 35, not 36).
    count = int(np.sum(digits.target == c))
    assert np.sum(digits.target[test] == c) == count // 5
  assert len(train) == 1442 and len(test) == 355


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """sklearn_digits prepared into a fresh data_dir, with the network blocked."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import tf_memorization.data.datasets  # pylint: disable=g-import-not-at-top,unused-import

  def no_network(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args} {kwargs}')

  directory = str(tmp_path_factory.mktemp('tfds'))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(socket, 'create_connection', no_network)
    patch.setattr(socket.socket, 'connect', no_network)
    builder = tfds.builder('sklearn_digits', data_dir=directory)
    builder.download_and_prepare()
  return directory


def _read(data_dir, split):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder('sklearn_digits', data_dir=data_dir)
  ds = builder.as_dataset(split=split, shuffle_files=False)
  examples = list(tfds.as_numpy(ds.batch(4096)))
  assert len(examples) == 1
  return examples[0]


def test_tfds_build_counts_and_metadata(data_dir):
  """The prepared dataset has 1442 train and 355 test examples, 10 classes."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder('sklearn_digits', data_dir=data_dir)
  assert builder.is_prepared()
  assert builder.info.splits['train'].num_examples == 1442
  assert builder.info.splits['test'].num_examples == 355
  assert builder.info.features['label'].num_classes == 10


@pytest.mark.parametrize('split', ['train', 'test'])
def test_tfds_examples_match_sklearn(data_dir, digits, split):
  """Each example's image and label are sklearn's, scaled 0..16 -> 0..255."""
  batch = _read(data_dir, split)
  train, test = sklearn_digits.split_indices()
  expected_indices = train if split == 'train' else test
  index = batch['index']
  assert sorted(index) == list(expected_indices)
  assert batch['image'].dtype == np.uint8
  assert batch['image'].shape == (len(expected_indices), 8, 8, 1)
  scaled = np.round(digits.images[index] * 255.0 / 16.0)
  np.testing.assert_array_equal(batch['image'][..., 0], scaled)
  np.testing.assert_array_equal(batch['label'], digits.target[index])
  # Full intensity range used: 0 -> 0 and 16 -> 255.
  assert batch['image'].min() == 0 and batch['image'].max() == 255


def test_load_dataset(data_dir):
  """pipelines.load_dataset reads both splits in tfds order, with unique ids."""
  from tf_memorization.data import pipelines  # pylint: disable=g-import-not-at-top
  dataset = pipelines.load_dataset(name='sklearn_digits', data_dir=data_dir)
  assert dataset.name == 'sklearn_digits'
  assert dataset.num_classes == 10
  assert dataset.image_shape == (8, 8, 1)
  assert len(dataset.train) == 1442 and len(dataset.test) == 355
  ids = np.concatenate([dataset.train.ids, dataset.test.ids])
  assert len(set(ids)) == len(ids) == NUM_EXAMPLES
  for split in ('train', 'test'):
    loaded = getattr(dataset, split)
    batch = _read(data_dir, split)
    assert loaded.images.dtype == np.uint8
    assert loaded.labels.dtype == np.int64
    np.testing.assert_array_equal(loaded.images, batch['image'])
    np.testing.assert_array_equal(loaded.labels, batch['label'])
  assert dataset.describe() == {
      'name': 'sklearn_digits', 'version': '1.0.0', 'num_classes': 10,
      'num_train': 1442, 'num_test': 355, 'image_shape': [8, 8, 1]}

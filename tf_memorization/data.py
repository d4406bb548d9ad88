"""Datasets through tensorflow-datasets, preprocessing, and subset pipelines.

A dataset is loaded once per process into memory (uint8 images, int labels and
each example's tfds id, in tfds's deterministic order). A trial's training
pipeline gathers the subset's indices batch by batch, so selecting a subset
costs nothing per epoch (a `Dataset.filter` over the whole set would read and
drop 30% of it every epoch). ImageNet does not fit in memory: it streams from
its tfrecords with the subset chosen by a hash-table lookup on the example
index before any JPEG is decoded (`StreamingDataset`).
"""

import dataclasses
import socket

import gin
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import tf_memorization.datasets  # pylint: disable=unused-import  (registers builders)


class DataNotPreparedError(RuntimeError):
  """The dataset is not in data_dir and cannot be downloaded here."""


# Per-channel mean and std of the training sets, on the 0..255 scale.
_CIFAR10_MEAN = (125.3, 123.0, 113.9)
_CIFAR10_STD = (63.0, 62.1, 66.7)
_CIFAR100_MEAN = (129.3, 124.1, 112.4)
_CIFAR100_STD = (68.2, 65.4, 70.4)
_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)

# name -> (mean, std, default augmentation)
DATASET_DEFAULTS = {
    'cifar10': (_CIFAR10_MEAN, _CIFAR10_STD, 'crop_flip'),
    'cifar100': (_CIFAR100_MEAN, _CIFAR100_STD, 'crop_flip'),
    'mnist': ((33.3,), (78.6,), 'none'),
    'sklearn_digits': ((0.0,), (255.0,), 'none'),
    'imagenet2012': (_IMAGENET_MEAN, _IMAGENET_STD, 'random_resized_crop'),
}
AUGMENTATIONS = ('none', 'crop', 'flip', 'crop_flip', 'random_resized_crop')
# Datasets too large to hold in memory: they stream (see StreamingDataset).
STREAMING_DATASETS = ('imagenet2012',)
_MANUAL_DOWNLOAD = ('imagenet2012',)


@dataclasses.dataclass
class Split:
  """One split in memory, in tfds's deterministic order."""
  images: np.ndarray  # uint8 [N, H, W, C]
  labels: np.ndarray  # int64 [N]
  ids: np.ndarray     # unicode [N]: tfds id (or original index) of each example

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass
class Dataset:
  """A dataset in memory: train and test splits and what describes them."""
  name: str
  version: str
  num_classes: int
  train: Split
  test: Split

  @property
  def image_shape(self):
    return tuple(self.train.images.shape[1:])

  def describe(self):
    """The fields that identify the data (part of every record's fingerprint)."""
    return {'name': self.name, 'version': self.version,
            'num_classes': int(self.num_classes),
            'num_train': len(self.train), 'num_test': len(self.test),
            'image_shape': list(self.image_shape)}


def _network_reachable(host='storage.googleapis.com', port=443, timeout=3.0):
  try:
    with socket.create_connection((host, port), timeout=timeout):
      return True
  except OSError:
    return False


_ORIGINAL_DOWNLOAD_AND_PREPARE = tfds.core.DatasetBuilder.download_and_prepare


def _prepare_instructions(name, data_dir):
  where = data_dir or '~/tensorflow_datasets'
  if name in _MANUAL_DOWNLOAD:
    return (f'{name} needs a manual download: put ILSVRC2012_img_train.tar and '
            f'ILSVRC2012_img_val.tar in {where}/downloads/manual/ and run '
            f'`tfds build {name} --data_dir={where}` once, then pass '
            f'--data_dir={where}.')
  return (f'On a machine with network run `tfds build {name} '
          f'--data_dir=DIR`, copy DIR here and pass --data_dir=DIR (or bind '
          f'load_dataset.data_dir). The demo dataset `sklearn_digits` needs '
          f'no network.')


def prepare_builder(name, data_dir=None, download=True):
  """Returns a prepared tfds builder, or raises DataNotPreparedError quickly."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DataNotPreparedError(
        f'Unknown dataset {name!r}: bind load_dataset.name to a tfds dataset '
        f'(cifar10, cifar100, mnist, imagenet2012, sklearn_digits).') from e
  if builder.is_prepared():
    return builder
  mocked = (type(builder).download_and_prepare
            is not _ORIGINAL_DOWNLOAD_AND_PREPARE)  # e.g. tfds.testing.mock_data
  needs_network = name != 'sklearn_digits' and not mocked
  if name in _MANUAL_DOWNLOAD and not mocked:
    raise DataNotPreparedError(
        f'Dataset {name} is not prepared in {data_dir or "the default dir"}. '
        + _prepare_instructions(name, data_dir))
  if needs_network and (not download or not _network_reachable()):
    reason = ('downloads are off (load_dataset.download=False)' if not download
              else 'this machine has no network')
    raise DataNotPreparedError(
        f'Dataset {name} is not prepared in {data_dir or "the default dir"} '
        f'and {reason}. ' + _prepare_instructions(name, data_dir))
  builder.download_and_prepare()
  return builder


def _read_split(builder, split):
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          read_config=tfds.ReadConfig(add_tfds_id=True))
  images, labels, ids = [], [], []
  for batch in tfds.as_numpy(ds.batch(8192)):
    images.append(batch['image'])
    labels.append(batch['label'])
    ids.append(batch['tfds_id'])
  if not labels:
    raise DataNotPreparedError(f'Split {split!r} of {builder.name} is empty.')
  return Split(images=np.concatenate(images).astype(np.uint8),
               labels=np.concatenate(labels).astype(np.int64),
               ids=np.concatenate(ids).astype(str))


@gin.configurable
def load_dataset(name=gin.REQUIRED, data_dir=None, download=True,
                 train_split='train', test_split='test'):
  """Loads a tfds dataset into memory.

  Args:
    name: tfds name: cifar10, cifar100, mnist, sklearn_digits (offline) or
      imagenet2012 (streams; see `StreamingDataset`).
    data_dir: tfds data dir (None: tfds's default).
    download: whether to download when the data is not prepared.
    train_split: tfds split of the training set S.
    test_split: tfds split the influence is measured on.

  Returns:
    A `Dataset`.
  """
  builder = prepare_builder(name, data_dir, download)
  features = builder.info.features
  return Dataset(name=name, version=str(builder.info.version),
                 num_classes=int(features['label'].num_classes),
                 train=_read_split(builder, train_split),
                 test=_read_split(builder, test_split))


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """Normalisation and training augmentation (gin: `Preprocessing.augment`).

  Attributes:
    augment: one of AUGMENTATIONS, or 'auto' for the dataset's standard one
      (random crop with 4-pixel padding + horizontal flip for CIFAR).
    crop_padding: pixels of zero padding before the random crop.
    image_size: side of the model's input for streaming datasets (ImageNet).
  """
  augment: str = 'auto'
  crop_padding: int = 4
  image_size: int = 224

  def resolve(self, dataset_name):
    mean, std, default_augment = DATASET_DEFAULTS.get(
        dataset_name, ((0.0,), (255.0,), 'none'))
    augment = default_augment if self.augment == 'auto' else self.augment
    if augment not in AUGMENTATIONS:
      raise ValueError(f'Preprocessing.augment must be "auto" or one of '
                       f'{AUGMENTATIONS}, got {self.augment!r}.')
    return np.asarray(mean, np.float32), np.asarray(std, np.float32), augment


def normalize(images, mean, std):
  return (tf.cast(images, tf.float32) - mean) / std


def random_crop_flip(images, seed, padding, crop, flip):
  """Batched stateless augmentation: pad-and-crop and/or horizontal flip.

  Args:
    images: float [B, H, W, C].
    seed: int [2] stateless seed, distinct for every batch of a trial.
    padding: zero padding on each side before cropping back to H x W.
    crop: whether to crop.
    flip: whether to flip half the images left-right.
  """
  shape = tf.shape(images)
  batch, height, width = shape[0], shape[1], shape[2]
  seeds = tf.random.experimental.stateless_split(seed, 3)
  if crop and padding > 0:
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding],
                             [0, 0]])
    dy = tf.random.stateless_uniform([batch], seeds[0], 0, 2 * padding + 1,
                                     dtype=tf.int32)
    dx = tf.random.stateless_uniform([batch], seeds[1], 0, 2 * padding + 1,
                                     dtype=tf.int32)
    rows = dy[:, None] + tf.range(height)[None, :]
    cols = dx[:, None] + tf.range(width)[None, :]
    images = tf.gather(padded, rows, axis=1, batch_dims=1)
    images = tf.gather(images, cols, axis=2, batch_dims=1)
  if flip:
    do_flip = tf.random.stateless_uniform([batch], seeds[2]) < 0.5
    images = tf.where(do_flip[:, None, None, None],
                      tf.reverse(images, axis=[2]), images)
  return images


class InMemoryPipeline:
  """tf.data pipelines over a `Dataset` held in memory.

  The images live in one constant that every pipeline of the process shares;
  a trial's pipeline only carries its subset's indices.
  """

  def __init__(self, dataset, preprocessing=None):
    preprocessing = preprocessing or Preprocessing()
    self.dataset = dataset
    self.mean, self.std, self.augment = preprocessing.resolve(dataset.name)
    self.crop_padding = preprocessing.crop_padding
    with tf.device('/cpu:0'):
      self._train_images = tf.constant(dataset.train.images)
      self._train_labels = tf.constant(dataset.train.labels, tf.int32)
      self._test_images = tf.constant(dataset.test.images)
      self._test_labels = tf.constant(dataset.test.labels, tf.int32)

  def _one_hot(self, labels):
    return tf.one_hot(labels, self.dataset.num_classes)

  def train(self, indices, batch_size, seed):
    """The subset's endless training stream, reshuffled every pass.

    Batches run across epoch boundaries, and each
    batch gets its own stateless augmentation seed, so a trial is a function
    of `seed` alone.
    """
    images, labels = self._train_images, self._train_labels
    mean, std = self.mean, self.std
    crop = self.augment in ('crop', 'crop_flip')
    flip = self.augment in ('flip', 'crop_flip')
    padding = self.crop_padding

    def load(batch_indices, batch_seed):
      x = normalize(tf.gather(images, batch_indices), mean, std)
      if crop or flip:
        x = random_crop_flip(x, batch_seed, padding, crop, flip)
      return x, self._one_hot(tf.gather(labels, batch_indices))

    indices = np.asarray(indices, np.int64)
    ds = tf.data.Dataset.from_tensor_slices(indices)
    ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat().batch(batch_size)  # the caller stops after its steps
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)

  def evaluation(self, split, batch_size):
    """The whole split in order, without augmentation: (images, one-hot)."""
    images, labels = ((self._train_images, self._train_labels)
                      if split == 'train' else
                      (self._test_images, self._test_labels))
    mean, std = self.mean, self.std
    n = int(images.shape[0])

    def load(batch_indices):
      x = normalize(tf.gather(images, batch_indices), mean, std)
      return x, self._one_hot(tf.gather(labels, batch_indices))

    ds = tf.data.Dataset.range(n).batch(batch_size)
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True).prefetch(tf.data.AUTOTUNE)

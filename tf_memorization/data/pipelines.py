"""Datasets through tensorflow-datasets, preprocessing, and subset pipelines.

A dataset is loaded once per process into memory (uint8 images, int labels and
each example's tfds id, in tfds's deterministic order). A trial's training
pipeline gathers the subset's indices batch by batch, so selecting a subset
costs nothing per epoch (a `Dataset.filter` over the whole set would read and
drop 30% of it every epoch). ImageNet does not fit in memory: it streams from
its tfrecords with the subset chosen by a lookup of each record's tfds id
before any JPEG is decoded (`StreamingPipeline`).
"""

import dataclasses
import os

import gin
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_memorization.core import errors
from tf_memorization.data import tfds_data


DataNotPreparedError = errors.DataNotPreparedError
prepare_builder = tfds_data.prepare_builder


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


@dataclasses.dataclass
class Split:
  """One split in tfds's deterministic order (images None when streaming)."""
  images: np.ndarray  # uint8 [N, H, W, C], or None for a streaming dataset
  labels: np.ndarray  # int64 [N]
  ids: np.ndarray     # unicode [N]: tfds id (or original index) of each example
  tfds_split: str = None  # the tfds split name it was read from
  # A source that streams from files (folders.image_folder): each example's
  # file, read by the dataset's `streaming_pipeline` and by `read_images`.
  files: np.ndarray = None
  # unicode [N]: each example's id in its source's own order or by its file
  # ('train_16399' for CIFAR, a file name for ImageNet); '' where unknown.
  # The compare binary joins published scores by it.
  source_ids: np.ndarray = None

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
  builder: object = None  # the tfds builder, for streaming datasets
  class_names: tuple = None  # the label names, where the source has them
  # (mean, std) per channel on the stored scale, for a dataset that is not
  # in DATASET_DEFAULTS (the sources compute it from their training split).
  normalization: tuple = None
  # The shape one example reaches the model with, for a source that streams
  # from files (fixed by its resize binding).
  example_shape: tuple = None
  # For a source that streams from files: streaming_pipeline(dataset,
  # preprocessing) builds its pipeline (make_pipeline calls it), and
  # read_images(split, indices) returns uint8 images of those examples.
  streaming_pipeline: object = None
  read_images: object = None

  @property
  def streaming(self):
    return self.train.images is None

  @property
  def image_shape(self):
    """Stored example shape ((None, None, C) for a streaming tfds dataset)."""
    if self.example_shape is not None:
      return tuple(self.example_shape)
    if self.streaming:
      return tuple(self.builder.info.features['image'].shape)
    return tuple(self.train.images.shape[1:])

  def images_of(self, split, indices):
    """uint8 images of examples `indices` of split 'train' or 'test' (a
    dict index -> [H, W, C]), for a dataset held in memory or one that
    streams from files; None for a streaming tfds dataset."""
    part = self.train if split == 'train' else self.test
    if part.images is not None:
      return {int(i): part.images[int(i)] for i in indices}
    if self.read_images is not None:
      return self.read_images(split, indices)
    return None

  def describe(self):
    """The fields that identify the data (part of every record's fingerprint)."""
    return {'name': self.name, 'version': self.version,
            'num_classes': int(self.num_classes),
            'num_train': len(self.train), 'num_test': len(self.test),
            'image_shape': list(self.image_shape)}


def _split(builder, split, with_images):
  images, labels, ids, sources = tfds_data.read_split(builder, split,
                                                      with_images)
  return Split(images=images, labels=labels, ids=ids, tfds_split=split,
               source_ids=sources)


@gin.configurable
def load_dataset(name=None, data_dir=None, download=True,
                 train_split='train', test_split='test', streaming='auto',
                 source=None):
  """Loads a dataset: a tfds builder's, or a source's (folders, arrays).

  Args:
    name: tfds name: cifar10, cifar100, mnist, sklearn_digits (offline),
      imagenet2012, or any builder registered in the process (a user's own,
      through a gin `import`).
    data_dir: tfds data dir (None: tfds's default).
    download: whether to download when the data is not prepared.
    train_split: tfds split of the training set S.
    test_split: tfds split the influence is measured on.
    streaming: True to stream images from the tfrecords (`StreamingPipeline`)
      instead of holding them in memory; 'auto': only for STREAMING_DATASETS.
    source: instead of a tfds name, a configurable that returns a `Dataset`:
      @image_folder (folders.py) or @arrays (arrays.py); their own bindings
      say where the files are.

  Returns:
    A `Dataset`.
  """
  if source is not None:
    if name is not None:
      raise errors.ConfigError(
          f'load_dataset.name ({name!r}) and load_dataset.source '
          f'({getattr(source, "__name__", source)!r}) are both bound: bind '
          'one of them.')
    if not callable(source):
      raise errors.ConfigError(
          'load_dataset.source must be a source configurable such as '
          f'@image_folder or @arrays, got {source!r}.')
    dataset = source()
    if not isinstance(dataset, Dataset):
      raise errors.ConfigError(
          f'load_dataset.source {getattr(source, "__name__", source)!r} '
          f'returned {type(dataset).__name__}, not a data.Dataset.')
    return dataset
  if name is None:
    raise errors.ConfigError(
        'No dataset: bind load_dataset.name (a tfds name) or '
        'load_dataset.source (@image_folder, @arrays).')
  builder = tfds_data.prepare_builder(name, data_dir, download)
  if streaming == 'auto':
    streaming = name in STREAMING_DATASETS
  features = builder.info.features
  names = getattr(features['label'], 'names', None)
  return Dataset(name=name, version=str(builder.info.version),
                 num_classes=int(features['label'].num_classes),
                 train=_split(builder, train_split, not streaming),
                 test=_split(builder, test_split, not streaming),
                 builder=builder, class_names=tuple(names) if names else None)


@gin.configurable
def label_noise(dataset, fraction=0.0, seed=0):
  """Flips the labels of a seeded fraction of the training examples.

  Each chosen example gets a different class, uniformly among the others.
  The validation study asks how well memorization ranks these first.

  Args:
    dataset: a `Dataset`.
    fraction: share of training examples whose label is flipped.
    seed: which examples and which new labels.

  Returns:
    (dataset with the noisy training labels, sorted indices of the flipped
    examples); the dataset itself and an empty array when fraction is 0.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f'label_noise.fraction must be in [0, 1), got {fraction}.')
  if fraction == 0.0:
    return dataset, np.zeros(0, np.int64)
  if dataset.streaming:
    raise ValueError('label_noise needs a dataset held in memory; '
                     f'{dataset.name} streams. Bind load_dataset.streaming = '
                     'False or drop label_noise.fraction.')
  n, num_classes = len(dataset.train), dataset.num_classes
  rng = np.random.default_rng([seed, 0x1AB3])
  count = int(np.floor(fraction * n + 0.5))
  flipped = np.sort(rng.choice(n, size=count, replace=False))
  labels = dataset.train.labels.copy()
  labels[flipped] = (labels[flipped]
                     + rng.integers(1, num_classes, size=count)) % num_classes
  noisy = dataclasses.replace(dataset,
                              train=dataclasses.replace(dataset.train,
                                                        labels=labels))
  return noisy, flipped


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """Normalisation and training augmentation (gin: `Preprocessing.augment`).

  Attributes:
    augment: one of AUGMENTATIONS, or 'auto' for the dataset's standard one
      (random crop with 4-pixel padding + horizontal flip for CIFAR).
    crop_padding: pixels of zero padding before the random crop.
    image_size: side of the model's input for streaming datasets (ImageNet).
    center_crop_fraction: for streaming datasets, evaluation images are the
      central square of this fraction of the shorter side, resized.
    standardize: subtract the dataset's per-channel mean and divide by its
      std (DATASET_DEFAULTS, or the source's own statistics); False feeds
      the stored values as float32 (0..255 for images), for a model that
      scales its own input (models.pretrained applies its backbone's).
  """
  augment: str = 'auto'
  crop_padding: int = 4
  image_size: int = 224
  center_crop_fraction: float = 0.875
  standardize: bool = True

  def resolve(self, dataset_name, normalization=None):
    """(mean, std, augment) for dataset `dataset_name`.

    Args:
      dataset_name: the dataset's name (its DATASET_DEFAULTS entry, if any).
      normalization: (mean, std) of a dataset that has no entry there (the
        sources compute theirs); else the 0..255 scale is mapped to 0..1.
    """
    mean, std, default_augment = DATASET_DEFAULTS.get(
        dataset_name, ((0.0,), (255.0,), 'none'))
    if dataset_name not in DATASET_DEFAULTS and normalization is not None:
      mean, std = normalization
    if not self.standardize:  # the model scales its own input
      mean, std = (0.0,), (1.0,)
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


# A trial's in-memory pipeline does cheap gathers; it runs with fixed
# parallelism and tf.data's autotuning off, because tearing down an autotuned
# iterator at the end of each trial waited ~2.4 s for its model thread in
# about half the trials (measured on the demo: 5.4 s instead of 3.0 s).
_MAP_PARALLELISM = min(8, os.cpu_count() or 1)
_PREFETCH = 4


def _stream_keys(seed):
  """Two int64 keys for a trial's stateless shuffle and augmentation seeds."""
  keys = np.random.default_rng([int(seed), 0x5EED]).integers(0, 2**62, 2)
  return tf.constant(keys[0], tf.int64), tf.constant(keys[1], tf.int64)


def _no_autotune():
  options = tf.data.Options()
  options.autotune.enabled = False
  return options


class _Pipeline:
  """What both pipelines share: the dataset, normalisation, augmentation."""

  def __init__(self, dataset, preprocessing=None):
    self.preprocessing = preprocessing or Preprocessing()
    self.dataset = dataset
    self.mean, self.std, self.augment = self.preprocessing.resolve(
        dataset.name, dataset.normalization)

  def _one_hot(self, labels):
    return tf.one_hot(labels, self.dataset.num_classes)


class InMemoryPipeline(_Pipeline):
  """tf.data pipelines over a `Dataset` held in memory.

  The images live in one constant that every pipeline of the process shares;
  a trial's pipeline only carries its subset's indices.
  """

  def __init__(self, dataset, preprocessing=None):
    super().__init__(dataset, preprocessing)
    preprocessing = self.preprocessing
    self.crop_padding = preprocessing.crop_padding
    self.image_shape = dataset.image_shape
    with tf.device('/cpu:0'):
      self._train_images = tf.constant(dataset.train.images)
      self._train_labels = tf.constant(dataset.train.labels, tf.int32)
      self._test_images = tf.constant(dataset.test.images)
      self._test_labels = tf.constant(dataset.test.labels, tf.int32)

  def train_batch(self, batch_indices, batch_seed):
    """One training batch: gathered, normalised, augmented; one-hot labels.

    Also called inside the trainer's compiled step (in-graph input), so the
    two ways of feeding a trial compute the same batches.
    """
    crop = self.augment in ('crop', 'crop_flip')
    flip = self.augment in ('flip', 'crop_flip')
    x = normalize(tf.gather(self._train_images, batch_indices), self.mean,
                  self.std)
    if crop or flip:
      x = random_crop_flip(x, batch_seed, self.crop_padding, crop, flip)
    return x, self._one_hot(tf.gather(self._train_labels, batch_indices))

  @staticmethod
  def index_stream(indices, seed, num_batches, batch_size):
    """The first `num_batches` batches of `train`'s index stream, [num, B].

    Pass p of the subset is stateless_shuffle(indices, (key, p)); the passes
    are concatenated and cut into batches, as in `train`.
    """
    shuffle_key, _ = _stream_keys(seed)
    indices = tf.constant(np.asarray(indices, np.int64))
    needed = num_batches * batch_size
    passes = -(-needed // int(indices.shape[0]))
    stream = tf.concat([
        tf.random.experimental.stateless_shuffle(
            indices, tf.stack([shuffle_key, tf.constant(p, tf.int64)]))
        for p in range(passes)], axis=0)
    return tf.reshape(stream[:needed], [num_batches, batch_size])

  @staticmethod
  def augment_key(seed):
    """Batch b of a trial is augmented with the stateless seed (key, b)."""
    return _stream_keys(seed)[1]

  def train(self, indices, batch_size, seed, with_indices=False):
    """The subset's endless training stream, reshuffled every pass.

    Batches run across epoch boundaries, and each
    batch gets its own stateless augmentation seed, so a trial is a function
    of `seed` alone. With `with_indices`, each batch also carries its
    examples' indices (for the trainer's learning-dynamics proxies).
    """
    load = self.train_batch
    if with_indices:
      load = lambda rows, batch_seed: (*self.train_batch(rows, batch_seed),
                                       rows)
    # Stateless: epoch e's order is a function of (seed, e), batch b's
    # augmentation of (seed, b); nothing depends on TF's global seed.
    shuffle_key, augment_key = _stream_keys(seed)
    indices = tf.constant(np.asarray(indices, np.int64))
    ds = tf.data.Dataset.counter().map(
        lambda epoch: tf.random.experimental.stateless_shuffle(
            indices, tf.stack([shuffle_key, epoch])))
    ds = ds.unbatch().batch(batch_size)  # the caller stops after its steps
    seeds = tf.data.Dataset.counter().map(
        lambda step: tf.stack([augment_key, step]))
    ds = tf.data.Dataset.zip(ds, seeds)
    ds = ds.map(load, num_parallel_calls=_MAP_PARALLELISM, deterministic=True)
    return ds.prefetch(_PREFETCH).with_options(_no_autotune())

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


def _image_shape(image_bytes, jpeg):
  if jpeg:
    return tf.io.extract_jpeg_shape(image_bytes)
  return tf.shape(tf.io.decode_image(image_bytes, expand_animations=False))


def _decode_window(image_bytes, window, jpeg, channels):
  """Decodes only the window [y, x, height, width] (JPEG) or decodes and crops."""
  if jpeg:
    return tf.io.decode_and_crop_jpeg(image_bytes, window, channels=channels)
  image = tf.io.decode_image(image_bytes, channels=channels,
                             expand_animations=False)
  return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2],
                                       window[3])


def _inception_crop(image_bytes, seed, size, jpeg, channels):
  """Random-resized crop (8%-100% area, 3/4-4/3 aspect), then resize."""
  shape = _image_shape(image_bytes, jpeg)
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([0, 0, 4], tf.float32), seed=seed,
      area_range=(0.08, 1.0), aspect_ratio_range=(0.75, 1.33),
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
  return tf.image.resize(_decode_window(image_bytes, window, jpeg, channels),
                         [size, size])


def _center_crop(image_bytes, size, crop_fraction, jpeg, channels):
  """The central square of `crop_fraction` of the shorter side, resized."""
  shape = _image_shape(image_bytes, jpeg)
  height, width = shape[0], shape[1]
  side = tf.cast(crop_fraction * tf.cast(tf.minimum(height, width),
                                         tf.float32), tf.int32)
  window = tf.stack([(height - side) // 2, (width - side) // 2, side, side])
  return tf.image.resize(_decode_window(image_bytes, window, jpeg, channels),
                         [size, size])


class StreamingPipeline(_Pipeline):
  """tf.data pipelines that stream JPEGs from a prepared tfds dataset.

  A trial's subset is chosen by looking up each record's tfds id in a table
  of the trial's ids before the image is decoded, so skipped examples cost
  only their read. Shapes come out as (image_size, image_size, 3).
  """

  def __init__(self, dataset, preprocessing=None):
    super().__init__(dataset, preprocessing)
    preprocessing = self.preprocessing
    self.image_size = preprocessing.image_size
    self.crop_fraction = preprocessing.center_crop_fraction
    feature = dataset.builder.info.features['image']
    self._channels = int(feature.shape[-1] or 3)
    self.image_shape = (self.image_size, self.image_size, self._channels)
    self._jpeg = getattr(feature, 'encoding_format', None) == 'jpeg'
    ids = tf.constant(dataset.train.ids)
    self._train_index = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            ids, tf.range(len(dataset.train), dtype=tf.int64)), -1)

  def _records(self, split, shuffle_seed=None):
    read_config = tfds.ReadConfig(add_tfds_id=True, shuffle_seed=shuffle_seed,
                                  interleave_cycle_length=16)
    return self.dataset.builder.as_dataset(
        split=split, shuffle_files=shuffle_seed is not None,
        read_config=read_config,
        decoders={'image': tfds.decode.SkipDecoding()})

  def train(self, indices, batch_size, seed, with_indices=False):
    """The subset's endless training stream (shuffled, augmented); with
    `with_indices` each batch also carries its examples' indices."""
    in_subset = np.zeros(len(self.dataset.train), bool)
    in_subset[np.asarray(indices)] = True
    in_subset = tf.constant(in_subset)
    table, size, jpeg = self._train_index, self.image_size, self._jpeg
    mean, std, augment = self.mean, self.std, self.augment
    crop_fraction, channels = self.crop_fraction, self._channels

    def keep(example):
      index = table.lookup(example['tfds_id'])
      return tf.logical_and(index >= 0,
                            tf.gather(in_subset, tf.maximum(index, 0)))

    def load(example, example_seed):
      seeds = tf.random.experimental.stateless_split(example_seed, 2)
      if augment == 'random_resized_crop':
        image = _inception_crop(example['image'], seeds[0], size, jpeg,
                                channels)
      else:
        image = _center_crop(example['image'], size, crop_fraction, jpeg,
                             channels)
      if augment in ('random_resized_crop', 'flip', 'crop_flip'):
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
      image = (image - mean) / std
      if with_indices:
        return (image, self._one_hot(example['label']),
                table.lookup(example['tfds_id']))
      return image, self._one_hot(example['label'])

    ds = self._records(self.dataset.train.tfds_split, shuffle_seed=seed)
    ds = ds.filter(keep).repeat()
    ds = ds.shuffle(16 * batch_size, seed=seed, reshuffle_each_iteration=True)
    _, augment_key = _stream_keys(seed)
    ds = tf.data.Dataset.zip(ds, tf.data.Dataset.counter().map(
        lambda i: tf.stack([augment_key, i])))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

  def evaluation(self, split, batch_size):
    """The whole split in tfds's order (the order of its labels), no augment."""
    tfds_split = (self.dataset.train if split == 'train'
                  else self.dataset.test).tfds_split
    size, mean, std, jpeg = self.image_size, self.mean, self.std, self._jpeg
    crop_fraction, channels = self.crop_fraction, self._channels

    def load(example):
      image = (_center_crop(example['image'], size, crop_fraction, jpeg,
                            channels) - mean) / std
      return image, self._one_hot(example['label'])

    ds = self._records(tfds_split).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_pipeline(dataset, preprocessing=None):
  """The pipeline for `dataset`: in memory, streaming from files (a source's
  own), or streaming from tfrecords."""
  if dataset.streaming_pipeline is not None:
    return dataset.streaming_pipeline(dataset, preprocessing or Preprocessing())
  if dataset.streaming:
    return StreamingPipeline(dataset, preprocessing)
  return InMemoryPipeline(dataset, preprocessing)

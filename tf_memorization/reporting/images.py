"""The images of the examples the report shows, read from tfds by id.

The workdir's config (its `load_dataset` bindings) says where the images are:
in-memory datasets are read whole and indexed; streaming ones (ImageNet) read
only the examples shown, chosen by tfds id, as 64x64 thumbnails. An image
that cannot be read here (no dataset, not prepared, other ids than the
trials') leaves a note instead of it, not an error.

The only report module that imports tf_memorization.data.pipelines and
tensorflow_datasets, inside the functions that need them, so that importing
the report stays light (no data pipeline, no training stack); parse_config is
here for the same reason: `load_dataset` is registered by importing data.
"""

import inspect
import re
import time

import gin
import numpy as np

from tf_memorization.core import config
from tf_memorization.core import files
from tf_memorization.workdir import imported

THUMBNAIL_SIZE = 64      # side of a streaming dataset's thumbnails


def _data():
  """tf_memorization.data.pipelines, imported on first use (with tensorflow and
  tensorflow_datasets); importing it registers gin's `load_dataset`, and
  the sources (`image_folder`, `arrays`) are registered with it."""
  from tf_memorization.data import arrays  # pylint: disable=g-import-not-at-top,unused-import
  from tf_memorization.data import pipelines  # pylint: disable=g-import-not-at-top
  from tf_memorization.data import folders  # pylint: disable=g-import-not-at-top,unused-import
  return pipelines


def parse_config(gin_files, gin_bindings):
  """Parses the workdir's config and `gin_bindings` for the `load_dataset`
  bindings, the only ones the report reads: the configurables of training
  are not registered here, so their bindings are skipped. Returns {path:
  text} of the files parsed (config.parse_gin)."""
  _data()  # registers load_dataset
  return config.parse_gin(gin_files, gin_bindings, skip_unknown=True)


def load_dataset_kwargs():
  """load_dataset's arguments under the parsed gin config."""
  load_dataset = _data().load_dataset
  signature = inspect.signature(load_dataset)
  kwargs = {name: p.default for name, p in signature.parameters.items()}
  kwargs.update(gin.get_bindings(load_dataset))
  return kwargs


def thumbnail(image, size):
  """The central square of `image` (uint8 [H, W, C]) resized to size x size."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  height, width = image.shape[:2]
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  image = image[top:top + side, left:left + side]
  if side == size:
    return np.ascontiguousarray(image)
  channels = image.shape[2]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((size, size), Image.BICUBIC), np.uint8)
  return out.reshape(size, size, channels)


def read_examples(builder, split, indices, ids, size=THUMBNAIL_SIZE, log=None):
  """Thumbnails of a few examples of a tfds split, read by tfds id.

  Only the shards holding the examples asked for are read, each up to its
  last such example (slices of the split, when `split` is a plain split
  name), and a filter on each record's tfds id keeps exactly them before any
  image is decoded, as pipelines.StreamingPipeline does; their images are
  decoded and cut to a central square of side `size`. (TFRecord shards are read
  sequentially, so for ImageNet this reads on the order of a few GB per
  hundred examples.)

  Args:
    builder: a prepared tfds builder.
    split: the tfds split the indices refer to (in tfds's order).
    indices: positions in the split.
    ids: the split's tfds ids (W/dataset.npz).
    size: thumbnail side.
    log: callable for a line when the split has to be scanned.

  Returns:
    {index: uint8 [size, size, C]}; examples not found are left out.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  indices = sorted({int(i) for i in indices})
  if not indices:
    return {}
  wanted = {str(ids[i]): i for i in indices}
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant(list(wanted)),
          tf.constant(list(wanted.values()), tf.int64)), -1)
  channels = int(builder.info.features['image'].shape[-1] or 0)
  sources = []
  if re.fullmatch(r'[\w-]+', split):
    # One slice per shard file (the part of the tfds id before '__'), from
    # its first to its last example asked for: each shard is read once.
    ranges = {}
    for i in indices:
      shard = str(ids[i]).rsplit('__', 1)[0] if '__' in str(ids[i]) else i
      low, high = ranges.get(shard, (i, i))
      ranges[shard] = (min(low, i), max(high, i))
    sources.append('+'.join(f'{split}[{low}:{high + 1}]'
                            for low, high in sorted(ranges.values())))
  sources.append(split)  # the whole split, if the slices missed some
  found = {}
  for number, source in enumerate(sources):
    if number and log:
      log(f'Report: scanning split {split} of {builder.name} for '
          f'{len(wanted) - len(found)} examples not found by position.')
    ds = builder.as_dataset(
        split=source, shuffle_files=False,
        read_config=tfds.ReadConfig(add_tfds_id=True),
        decoders={'image': tfds.decode.SkipDecoding()})
    ds = ds.filter(lambda ex: table.lookup(ex['tfds_id']) >= 0)
    for example in ds:
      index = wanted[example['tfds_id'].numpy().decode()]
      image = tf.io.decode_image(example['image'], channels=channels,
                                 expand_animations=False).numpy()
      found[index] = thumbnail(image, size)
    if len(found) == len(wanted):
      break
  return found


def _pictures(dataset):
  """Whether the dataset's examples are images ([H, W, 1 or 3] uint8)."""
  shape = tuple(dataset.image_shape)
  if len(shape) != 3 or shape[-1] not in (1, 3):
    return False
  images = dataset.train.images
  return images is None or images.dtype == np.uint8


class Images:
  """The images of the examples the report shows (None where unavailable)."""

  def __init__(self, train=None, test=None, class_names=None, note=None):
    self._train, self._test = train or {}, test or {}
    self.class_names = class_names
    self.note = note

  @property
  def available(self):
    return bool(self._train or self._test)

  def train(self, i):
    return self._train.get(int(i))

  def test(self, j):
    return self._test.get(int(j))


def load_images(inputs, train_indices, test_indices, log):
  """Images of the chosen examples, from the dataset of the gin config.

  Args:
    inputs: the estimates.Estimates (its train_ids and test_ids).
    train_indices, test_indices: the examples shown.
    log: callable taking one line.

  Returns:
    Images (with a note saying why, when there are none).
  """
  start = time.perf_counter()
  kwargs = load_dataset_kwargs()
  name, source = kwargs.get('name'), kwargs.get('source')
  if not isinstance(name, str) and source is None:
    dataset = (getattr(inputs, 'summary', None) or {}).get('dataset')
    if isinstance(dataset, dict) and (
        dataset.get('version') == imported.DATA_VERSION):
      return Images(note='the trials were imported with labels and '
                    'predictions only, so no images are shown')
    return Images(note='the config names no dataset (load_dataset.name or '
                  'load_dataset.source), so no images are shown')
  pipelines = _data()
  if source is not None:
    name = getattr(source, '__name__', 'source')
  streaming = source is None and kwargs.get('streaming', 'auto')
  if streaming == 'auto':
    streaming = name in pipelines.STREAMING_DATASETS
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    if streaming:
      builder = pipelines.prepare_builder(name, kwargs.get('data_dir'),
                                          kwargs.get('download', True))
      log(f'Report: reading {len(train_indices) + len(test_indices)} '
          f'examples of {name} by tfds id.')
      train = read_examples(builder, kwargs.get('train_split', 'train'),
                            train_indices, inputs.train_ids, log=log)
      test = read_examples(builder, kwargs.get('test_split', 'test'),
                           test_indices, inputs.test_ids, log=log)
    else:
      dataset = pipelines.load_dataset()
      builder = dataset.builder
      for split, ids in ((dataset.train, inputs.train_ids),
                         (dataset.test, inputs.test_ids)):
        if len(split.ids) != len(ids) or not np.array_equal(split.ids, ids):
          return Images(note=f'the dataset {name} read now is not the one '
                        f'the trials ran on (its tfds ids differ from '
                        f'{files.DATASET_FILE}), so no images are shown')
      train = dataset.images_of('train', train_indices)
      test = dataset.images_of('test', test_indices)
      if train is None or test is None or not _pictures(dataset):
        return Images(note=f'the examples of {name} are not images, so none '
                      'are shown')
  except (pipelines.DataNotPreparedError, ValueError, TypeError, OSError,
          tf.errors.OpError) as e:
    message = ' '.join(str(e).split())
    log(f'Report: no images ({message}).')
    return Images(note=f'the images of {name} could not be read here '
                  f'({message})')
  names = None
  try:
    names = list(builder.info.features['label'].names)
  except (AttributeError, KeyError, TypeError):
    if not streaming and dataset.class_names:
      names = list(dataset.class_names)
  log(f'Report: read {len(train) + len(test)} images of {name} in '
      f'{time.perf_counter() - start:.1f}s.')
  return Images(train, test, names)

"""A folder of images as a dataset: `load_dataset.source = @image_folder`.

    load_dataset.source = @image_folder
    image_folder.root = '/data/pets'

The folder holds one sub-folder per class (`root/<class>/**/<image>`, nested
folders allowed); the classes are the sorted folder names and a label is the
index of its class in that order. Images are the files ending in .jpg .jpeg
.png .bmp .gif (any case); hidden files and folders (starting with '.'),
other files, and images outside a class folder are ignored. The test split
is root/test and the training split root/train when both exist
(split='folders'), else a stable hash of each file's path chooses it
(split='hash'), or a text file lists it (test_list).

Each example's id is its path relative to root ('train/cat/001.png' or
'cat/001.png'), so every score of the run joins back to its file. Images are
decoded with tf.io.decode_image, held in memory as uint8 arrays, or streamed
from their files (streaming=True, `FolderPipeline`) for folders too large for
memory: both compute the same pixels.

A folder with fewer than two classes is refused. Every image is checked
before training: one that does not decode (with `decoder`, as the pipelines
do) is never skipped, since n would change under every trial's mask; the
folder is refused with one error naming the first few, counting all, and
saying the fix (delete or repair them, or move them out of the folder).
Loading in memory is the check; streaming decodes every image once up front
and records by (path, size, mtime_ns) those that decode (`_check_decodes`),
so that later runs decode only new or changed files.
"""

import hashlib
import json
import os
import posixpath
import re
import stat
import sys

from absl import logging
import gin
import numpy as np
from PIL import Image
import tensorflow as tf
from tensorflow_datasets.core import constants as tfds_constants

from tf_memorization.core import config
from tf_memorization.core import errors
from tf_memorization.core import progress as progress_lib
from tf_memorization.core import storage
from tf_memorization.data import pipelines

IMAGE_EXTENSIONS = ('.bmp', '.gif', '.jpeg', '.jpg', '.png')
_IMAGES = f'files ending in {" ".join(IMAGE_EXTENSIONS)}'
SPLITS = ('auto', 'hash', 'folders')
# Formats tf.io.decode_image reads, as PIL names them (MPO: camera JPEGs).
_FORMATS = ('BMP', 'GIF', 'JPEG', 'MPO', 'PNG')
_GRAY_MODES = ('1', 'L', 'LA', 'I', 'I;16', 'I;16B', 'I;16L', 'F')
NORMALIZATION_SAMPLE = 512  # training images a streaming folder's stats use
_MIN_STD = 1e-3
_PARALLEL_READS = min(16, os.cpu_count() or 1)
_DECODE_BATCH = 256
_PREFETCH_BATCHES = 2
_NAMED_UNREADABLE = 5  # unreadable images an error names; it counts them all
_PROGRESS_SECONDS = 10
_CHECKS_FOLDER = 'tf_memorization/image_folder_checks'  # in tfds's data dir
_CHECKS_FORMAT = 'tf_memorization image_folder checks 1'
# What the in-memory pipeline uses, so that both compute the same streams.
# pylint: disable=protected-access
_Pipeline, _stream_keys, _no_autotune = (
    pipelines._Pipeline, pipelines._stream_keys, pipelines._no_autotune)
# pylint: enable=protected-access
# A folder's data is identified by the dataset's version (classes, ids, file
# sizes and the bindings that change pixels), not by where it lies; streaming
# reads the same pixels into the same batches (tested).
config.not_fingerprinted('image_folder.root', 'image_folder.streaming')


def hash_fraction(example_id):
  """The first 8 bytes of sha256(example_id) as a fraction in [0, 1)."""
  digest = hashlib.sha256(example_id.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64


def _is_image(name):
  return (not name.startswith('.') and
          os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS)


def _scan(root, top=''):
  """{class: sorted ids} of the images in the class folders of root/top."""
  folder = os.path.join(root, top) if top else root

  def unreadable(error):
    raise errors.UserError(
        f'Cannot list {error.filename} ({error.strerror}): make it readable '
        'or remove it from image_folder.root.')

  try:
    names = sorted(os.listdir(folder))
  except OSError as e:
    unreadable(e)
  found = {}
  for name in names:
    class_folder = os.path.join(folder, name)
    if name.startswith('.') or not os.path.isdir(class_folder):
      continue
    ids = []
    for path, folders, files in os.walk(class_folder, onerror=unreadable):
      folders[:] = [f for f in folders if not f.startswith('.')]
      ids.extend(os.path.relpath(os.path.join(path, f), root).replace(
          os.sep, '/') for f in files if _is_image(f))
    found[name] = sorted(ids)
  if not any(found.values()):
    raise errors.UserError(
        f'{folder} holds no images in class sub-folders (<class>/<image>, '
        f'{_IMAGES}): put each class\'s images in a sub-folder named after '
        'the class, or fix image_folder.root.')
  for name, ids in found.items():
    if not ids and top != 'test':
      raise errors.UserError(f'Class folder {folder}/{name} holds no images '
                             f'({_IMAGES}): add its images or remove it.')
  return found


def _read_test_list(path, root, known):
  """The set of ids a test list names, each checked against `known`."""
  if not os.path.isfile(path):
    raise errors.ConfigError(
        f'image_folder.test_list: {path} is not a file; bind the path of a '
        'text file listing the test images, one path relative to '
        'image_folder.root a line.')
  listed = set()
  example = min(known)
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, start=1):
      line = line.strip()
      if not line or line.startswith('#'):
        continue
      example_id = posixpath.normpath(line.replace('\\', '/'))
      if example_id not in known:
        raise errors.ConfigError(
            f'{path}:{number}: {line!r} is not an image of {root} (paths are '
            f'relative to image_folder.root, e.g. {example!r}): fix or '
            'remove the line.')
      listed.add(example_id)
  if not listed:
    raise errors.ConfigError(
        f'image_folder.test_list: {path} lists no images; list the test '
        'images, one path relative to image_folder.root a line.')
  return listed


def _splits(root, mode, test_fraction, test_list):
  """(classes, [(id, label)] of train, the same of test)."""
  if mode == 'folders':
    for top in ('train', 'test'):
      if not os.path.isdir(os.path.join(root, top)):
        raise errors.ConfigError(
            f'image_folder.split = \'folders\' needs {root}/train and '
            f'{root}/test (each with class sub-folders), and {root}/{top} is '
            'not a folder: add it, or bind image_folder.split = \'hash\'.')
    train, test = _scan(root, 'train'), _scan(root, 'test')
    classes = sorted(train)
    for name, ids in test.items():
      if ids and name not in train:
        raise errors.UserError(
            f'{root}/test/{name} is a class with no folder in {root}/train: '
            f'add training images of it in {root}/train/{name}, or remove '
            'the test folder.')
    test = {name: ids for name, ids in test.items() if ids}
  else:
    train = _scan(root)
    classes = sorted(train)
    if mode == 'list':
      known = {i for ids in train.values() for i in ids}
      listed = _read_test_list(test_list, root, known)
      in_test = listed.__contains__
    else:
      in_test = lambda i: hash_fraction(i) < test_fraction
    test = {name: [i for i in ids if in_test(i)]
            for name, ids in train.items()}
    train = {name: [i for i in ids if not in_test(i)]
             for name, ids in train.items()}
  if len(classes) < 2:  # trained, every memorization is 0 and AUC 0.5
    where = os.path.join(root, 'train') if mode == 'folders' else root
    raise errors.UserError(
        f'{where} holds one class folder ({classes[0]!r}): a classifier needs '
        f'at least two class sub-folders in {where}; add one per class.')
  for name in classes:
    if not train[name]:
      fix = {'hash': 'lower image_folder.test_fraction or add images',
             'list': f'list fewer of its images in {test_list}'}[mode]
      raise errors.UserError(
          f'Class {name!r} ({root}/{name}) has no training images: {fix}.')
  if not any(test.values()):  # only a hash split can come out empty
    raise errors.UserError(
        f'No image of {root} falls in the test split at '
        f'image_folder.test_fraction = {test_fraction:g}: raise it, add '
        'images, or bind image_folder.test_list.')
  label = {name: k for k, name in enumerate(classes)}

  def examples(found):
    return sorted((i, label[name]) for name, ids in found.items() for i in ids)

  return classes, examples(train), examples(test)


class _Unreadable(Exception):
  """An image file that cannot be read; its message says why."""


def _reason(error):
  """An error's message as one short line."""
  text = error.message if isinstance(error, tf.errors.OpError) else str(error)
  return (' '.join(re.sub(r'\{\{[^}]*\}\}|\[Op:.*', '', text).split())
          or type(error).__name__)[:120]


def _header(path):
  """(size in bytes, mtime_ns, height, width, grayscale) of an image from its
  header; _Unreadable unless it opens as one (a FIFO would block: refused)."""
  try:
    info = os.stat(path)
    if stat.S_ISREG(info.st_mode):
      with Image.open(path) as image:
        (width, height), mode, kind = image.size, image.mode, image.format
  except Exception as e:  # pylint: disable=broad-except
    raise _Unreadable(_reason(e)) from None
  if not stat.S_ISREG(info.st_mode):
    raise _Unreadable('not a regular file')
  if kind not in _FORMATS:
    raise errors.UserError(
        f'{path} is a {kind} file, not one of {", ".join(_FORMATS[:-1])}: '
        'convert it to PNG or JPEG, or delete it.')
  return info.st_size, info.st_mtime_ns, height, width, mode in _GRAY_MODES


def _resized(image, height, width):
  image = tf.image.resize(image, [height, width], antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def decoder(shape):
  """path -> uint8 [height, width, channels]: what both ways of reading a
  folder compute. Decoded by tf.io.decode_image (first frame of a GIF),
  resized (antialiased, rounded) where its size is not (height, width)."""
  height, width, channels = (int(v) for v in shape)

  def decode(contents, count):
    return tf.io.decode_image(contents, channels=count,
                              expand_animations=False)

  def load(path):
    contents = tf.io.read_file(path)
    if channels == 3:
      image = decode(contents, 3)
    else:  # BMP and GIF decode to 1 channel only through RGB
      rgb_only = tf.logical_or(tf.strings.substr(contents, 0, 2) == 'BM',
                               tf.strings.substr(contents, 0, 3) == 'GIF')
      image = tf.cond(rgb_only,
                      lambda: tf.image.rgb_to_grayscale(decode(contents, 3)),
                      lambda: decode(contents, 1))
    same = tf.reduce_all(tf.shape(image)[:2] == [height, width])
    image = tf.cond(same, lambda: image,
                    lambda: _resized(image, height, width))
    return tf.ensure_shape(image, (height, width, channels))

  return load


def _decoded(paths, shape):
  """uint8 images of `paths` in order, batch by batch."""
  ds = tf.data.Dataset.from_tensor_slices(np.asarray(paths, str)).map(
      decoder(shape), num_parallel_calls=_PARALLEL_READS, deterministic=True)
  for batch in ds.batch(_DECODE_BATCH).prefetch(1):
    yield batch.numpy()


def _undecodable(paths, shape, root):
  """[(path, reason)] of the `paths` that `decoder(shape)` fails on (decoded
  again for their reason), with a progress line every _PROGRESS_SECONDS."""
  load, decoded = decoder(shape), np.zeros(len(paths), bool)
  progress = progress_lib.Progress(len(paths), _PROGRESS_SECONDS)
  ds = tf.data.Dataset.from_tensor_slices(
      (np.arange(len(paths)), np.asarray(paths, str)))
  # reduce_max needs every pixel: the decode cannot be optimized away.
  ds = ds.map(lambda k, path: (k, tf.reduce_max(load(path))),
              num_parallel_calls=_PARALLEL_READS, deterministic=True)
  for indices, _ in ds.ignore_errors().batch(_DECODE_BATCH).prefetch(1):
    decoded[indices.numpy()] = True
    done = int(indices[-1]) + 1
    if progress.due(done) and progress.elapsed() >= _PROGRESS_SECONDS:
      print(f'Checking the images of {root}: {done}/{len(paths)} decoded, ETA '
            f'{progress.eta(done)}', file=sys.stderr, flush=True)
  failed = []
  for k in np.flatnonzero(~decoded):
    try:
      load(tf.constant(paths[k]))
    except tf.errors.OpError as e:
      failed.append((paths[k], _reason(e)))
  return failed


def _recorded(path, root, stats):
  """The ids of `stats` ({id: (size, mtime_ns)}) that `path` records as
  decoded with these very size and mtime_ns. Untrusted: a file missing, not
  regular, larger than a record of `stats` can be (an entry is at most 12
  bytes a character of its id, and 64), not JSON, or not as written: none."""
  limit = 4096 + sum(12 * len(i) + 64 for i in stats)
  try:
    if '://' not in path and not stat.S_ISREG(os.stat(path).st_mode):
      return set()  # a FIFO would block
    with tf.io.gfile.GFile(path, 'rb') as f:
      checks = storage.parse_json(f.read(limit + 1), path, max_bytes=limit)
  except (OSError, tf.errors.OpError, errors.RecordError):
    return set()
  if not (isinstance(checks, dict) and isinstance(checks.get('decoded'), dict)
          and [checks.get(k) for k in ('format', 'root', 'tensorflow')] ==
          [_CHECKS_FORMAT, root, tf.__version__]):
    return set()
  return {i for i, entry in checks['decoded'].items()
          if i in stats and isinstance(entry, list) and len(entry) == 2
          and all(type(v) is int for v in entry) and tuple(entry) == stats[i]}


def _check_decodes(root, stats, shape, unreadable=(), recorded=True):
  """Refuses `root` unless every image of `stats` ({id: (size, mtime_ns)})
  decodes, naming those that do not and the `unreadable` ([(path, reason)]).
  Skips the images recorded as decoded in <tfds data dir>/tf_memorization/
  (unless not `recorded`); records those that decode."""
  path = os.path.join(tfds_constants.get_default_data_dir(), _CHECKS_FOLDER,
                      hashlib.sha256(root.encode()).hexdigest()[:24] + '.json')
  known = _recorded(path, root, stats) if recorded else set()
  todo, failed = [i for i in sorted(stats) if i not in known], []
  if todo:
    failed = _undecodable([os.path.join(root, i) for i in todo], shape, root)
    failed_paths = {p for p, _ in failed}
    decoded = {i: list(v) for i, v in stats.items()
               if os.path.join(root, i) not in failed_paths}
    try:
      storage.atomic_write_text(path, json.dumps(
          {'format': _CHECKS_FORMAT, 'root': root, 'decoded': decoded,
           'tensorflow': tf.__version__}, sort_keys=True))
    except (OSError, tf.errors.OpError) as e:  # the next run decodes all
      logging.warning('Cannot record the checks of %s: %s', root, e)
  bad = sorted([*unreadable, *failed])
  if bad:
    named = '; '.join(f'{p} ({r})' for p, r in bad[:_NAMED_UNREADABLE])
    more, them = len(bad) - _NAMED_UNREADABLE, 'them' if bad[1:] else 'it'
    raise errors.UserError(
        f'{len(bad)} of the {len(stats) + len(unreadable)} images of {root} '
        f'cannot be decoded: {named}{f"; and {more} more" if more > 0 else ""}'
        ". image_folder checks every image before training and skips none (it"
        " would change the dataset that every trial's mask indexes): delete or"
        f' repair {them}, or move {them} out of the folder, then run again.')


def _normalization(batches, channels):
  """Per-channel (mean, std) of uint8 batches on the 0..255 scale."""
  count, total, squares = 0, np.zeros(channels), np.zeros(channels)
  for batch in batches:
    x = batch.reshape(-1, channels).astype(np.float64)
    count += len(x)
    total += x.sum(axis=0)
    squares += np.square(x).sum(axis=0)
  mean = total / count
  std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
  return (tuple(float(m) for m in mean),
          tuple(float(max(s, _MIN_STD)) for s in std))


class FolderPipeline(_Pipeline):
  """tf.data pipelines that read a streaming folder's image files.

  Only the split's paths are held; each batch's files are read, decoded and
  resized in a parallel map. A trial's stream is the one InMemoryPipeline
  computes: pass p of the subset is a stateless shuffle keyed by (seed, p),
  batch b is augmented with the stateless seed (seed, b).
  """

  def __init__(self, dataset, preprocessing=None):
    super().__init__(dataset, preprocessing)
    self.crop_padding = self.preprocessing.crop_padding
    self.image_shape = tuple(int(v) for v in dataset.example_shape)
    self._load = decoder(self.image_shape)
    self._files, self._labels = {}, {}
    with tf.device('/cpu:0'):
      for split, part in (('train', dataset.train), ('test', dataset.test)):
        self._files[split] = tf.constant(part.files)
        self._labels[split] = tf.constant(part.labels, tf.int32)

  def _read(self, split, ds):
    """Examples (uint8 image, label) of a dataset of indices into `split`."""
    files, labels, load = self._files[split], self._labels[split], self._load
    return ds.map(lambda i: (load(tf.gather(files, i)), tf.gather(labels, i)),
                  num_parallel_calls=_PARALLEL_READS, deterministic=True)

  def train(self, indices, batch_size, seed, with_indices=False):
    """The subset's endless training stream, reshuffled every pass.

    With `with_indices`, each batch also carries its examples' indices (the
    trainer's learning-dynamics proxies are accumulated by them).
    """
    crop = self.augment in ('crop', 'crop_flip')
    flip = self.augment in ('flip', 'crop_flip')
    mean, std, padding = self.mean, self.std, self.crop_padding
    shuffle_key, augment_key = _stream_keys(seed)
    indices = tf.constant(np.asarray(indices, np.int64))
    ds = tf.data.Dataset.counter().map(
        lambda epoch: tf.random.experimental.stateless_shuffle(
            indices, tf.stack([shuffle_key, epoch])))
    ds = ds.unbatch()
    ds = tf.data.Dataset.zip(self._read('train', ds), ds).batch(batch_size)
    seeds = tf.data.Dataset.counter().map(
        lambda step: tf.stack([augment_key, step]))

    def finish(batch, batch_seed):
      (images, labels), rows = batch
      x = pipelines.normalize(images, mean, std)
      if crop or flip:
        x = pipelines.random_crop_flip(x, batch_seed, padding, crop, flip)
      if with_indices:
        return x, self._one_hot(labels), rows
      return x, self._one_hot(labels)

    ds = tf.data.Dataset.zip(ds, seeds).map(finish)
    return ds.prefetch(_PREFETCH_BATCHES).with_options(_no_autotune())

  def evaluation(self, split, batch_size):
    """The whole split in order, without augmentation: (images, one-hot)."""
    mean, std = self.mean, self.std
    n = int(self._labels[split].shape[0])
    ds = self._read(split, tf.data.Dataset.range(n)).batch(batch_size)
    ds = ds.map(lambda x, y: (pipelines.normalize(x, mean, std),
                              self._one_hot(y)))
    return ds.prefetch(_PREFETCH_BATCHES).with_options(_no_autotune())


def _image_size(value):
  name = 'image_folder.image_size'
  if value is None:
    return None
  if isinstance(value, (list, tuple)):
    if len(value) != 2:
      raise errors.ConfigError(
          f'{name} must be one side or (height, width), got {value!r}.')
    return tuple(errors.integer(f'{name}[{i}]', v, minimum=1)
                 for i, v in enumerate(value))
  side = errors.integer(name, value, minimum=1)
  return side, side


@gin.configurable
def image_folder(root=None, split='auto', test_fraction=0.2, test_list=None,
                 image_size=None, channels=None, streaming=False, name=None):
  """A folder of images in class sub-folders, as a `pipelines.Dataset`.

  Args:
    root: the folder (required): root/<class>/**/<image>, or root/train/...
      and root/test/... .
    split: 'auto': 'folders' when root holds train/ and test/, else 'hash';
      'folders': root/train and root/test are the splits; 'hash': an image
      is a test example iff the first 8 bytes of sha256 of its id, as a
      fraction in [0, 1), are below test_fraction. Adding or removing files
      moves no other file between the splits.
    test_fraction: the share of images in the test split under 'hash'.
    test_list: instead of a split, a text file of the test images' paths
      relative to root ('cat/001.png'), one a line ('#' comments and blank
      lines ignored); every other image is a training one.
    image_size: None: every image must have the same size; a side or
      (height, width): every image is resized to it (antialiased).
    channels: 1 or 3; None: 1 if every image is grayscale, else 3.
    streaming: read the files batch by batch while training (`FolderPipeline`)
      instead of decoding every image into memory first; every image is
      still decoded once before training (see the module docstring).
    name: the dataset's name (default 'image_folder').

  Returns:
    A `pipelines.Dataset` whose ids are the images' paths relative to root,
    sorted, and whose normalization is the training images' per-channel
    mean and std (of a seeded sample of NORMALIZATION_SAMPLE when streaming).
  """
  if root is None:
    raise errors.ConfigError(
        'image_folder.root is not bound: bind it to the folder of images, '
        "e.g. image_folder.root = '/data/pets'.")
  root = errors.string('image_folder.root', root)
  errors.choice('image_folder.split', split, SPLITS)
  test_fraction = errors.number('image_folder.test_fraction', test_fraction,
                                above=0, below=1)
  test_list = errors.string('image_folder.test_list', test_list,
                            allow_none=True)
  size = _image_size(image_size)
  if channels is not None:
    errors.choice('image_folder.channels',
                  errors.integer('image_folder.channels', channels), (1, 3))
  errors.boolean('image_folder.streaming', streaming)
  name = errors.string('image_folder.name', name, allow_none=True)
  if not os.path.isdir(root):
    raise errors.ConfigError(
        f'image_folder.root: {root} is not a folder ('
        + ('it is a file' if os.path.exists(root) else 'it does not exist')
        + '); bind the folder whose sub-folders hold the images of each '
        'class.')
  root = os.path.abspath(root)
  if test_list is not None:
    if split == 'folders':
      raise errors.ConfigError(
          "image_folder.test_list and image_folder.split = 'folders' both "
          'choose the test set: bind one of them.')
    mode = 'list'
  elif split == 'auto':
    mode = 'folders' if all(os.path.isdir(os.path.join(root, s))
                            for s in ('train', 'test')) else 'hash'
  else:
    mode = split
  classes, train, test = _splits(root, mode, test_fraction, test_list)

  # The version: a digest of the classes, the bindings that change pixels,
  # and each image's split, id and size in bytes.
  digest = hashlib.sha256(json.dumps(
      [classes, list(size or ()), mode]).encode())
  first, gray = None, True
  stats, unreadable = {}, []  # {id: (size, mtime_ns)}; [(path, reason)]
  for kind, examples in (('train', train), ('test', test)):
    for example_id, _ in examples:
      path = os.path.join(root, example_id)
      try:
        nbytes, mtime_ns, height, width, is_gray = _header(path)
      except _Unreadable as e:
        unreadable.append((path, str(e)))
        continue
      stats[example_id] = (nbytes, mtime_ns)
      gray = gray and is_gray
      digest.update(f'{kind}\0{example_id}\0{stats[example_id][0]}\n'
                    .encode())
      if first is None:
        first = (path, height, width)
      elif size is None and (height, width) != first[1:]:
        raise errors.ConfigError(
            f'{first[0]} is {first[1]}x{first[2]} pixels but {path} is '
            f'{height}x{width}: bind image_folder.image_size (e.g. '
            f'{first[1]} or ({first[1]}, {first[2]})) to resize every image,'
            ' or give them the same size.')
  if first is None:  # every image is unreadable
    _check_decodes(root, stats, None, unreadable)
  channels = channels or (1 if gray else 3)
  shape = (size or first[1:]) + (channels,)
  digest.update(f'channels {channels}'.encode())
  if streaming or unreadable:  # streaming: not in the middle of a trial
    _check_decodes(root, stats, shape, unreadable)

  def decoded(paths):
    try:
      yield from _decoded(paths, shape)
    except tf.errors.OpError:  # a file not checked (or changed since)
      _check_decodes(root, stats, shape, recorded=False)
      raise

  def split_of(examples, kind):
    return pipelines.Split(
        images=None, labels=np.array([l for _, l in examples], np.int64),
        ids=np.array([i for i, _ in examples], str), tfds_split=kind,
        source_ids=np.array([i for i, _ in examples], str),
        files=np.array([os.path.join(root, i) for i, _ in examples], str))

  train_split, test_split = split_of(train, 'train'), split_of(test, 'test')
  dataset = pipelines.Dataset(
      name=name or 'image_folder', version=digest.hexdigest()[:12],
      num_classes=len(classes), train=train_split, test=test_split,
      class_names=tuple(classes))
  if streaming:
    n = len(train_split)
    sample = np.sort(np.random.default_rng(0).choice(
        n, min(n, NORMALIZATION_SAMPLE), replace=False))
    dataset.normalization = _normalization(
        decoded(train_split.files[sample]), channels)
    dataset.example_shape = shape
    dataset.streaming_pipeline = FolderPipeline
    load = decoder(shape)

    def read_images(part, indices):
      files = (train_split if part == 'train' else test_split).files
      return {int(i): load(tf.constant(files[int(i)])).numpy()
              for i in indices}

    dataset.read_images = read_images
  else:
    for part in (train_split, test_split):
      part.images = np.empty((len(part),) + shape, np.uint8)
      for k, batch in enumerate(decoded(part.files)):
        part.images[k * _DECODE_BATCH:(k + 1) * _DECODE_BATCH] = batch
      part.files = None
    dataset.normalization = _normalization(
        (train_split.images[k:k + _DECODE_BATCH]
         for k in range(0, len(train_split), _DECODE_BATCH)), channels)
  logging.info('image_folder %s: %d classes, %d train / %d test images of '
               'shape %s (%s split, streaming %s).', root, len(classes),
               len(train), len(test), shape, mode, streaming)
  return dataset

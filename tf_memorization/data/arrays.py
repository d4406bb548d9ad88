"""Datasets from numpy arrays in .npz files: the `arrays` source.

    load_dataset.source = @arrays
    arrays.paths = '/data/mine.npz'    # or a list of files (shards)

Each file holds x_train, y_train, x_test, y_test and optionally ids_train,
ids_test (strings or integers, unique within a split) and class_names (1-D
strings). Several files are concatenated key by key along axis 0 in the
order given (class_names, not per example, must be the same in each).

x is uint8 images [N, H, W, C] or [N, H, W] (a channel axis is added), kept
as uint8; or any numeric fixed-size features [N, D] or [N, ...], stored as
float32 (tabular data, with models.mlp). y is integer class indices 0..K-1.
The per-channel (last axis) mean and std of x_train become the dataset's
normalization; its version is a digest of the arrays, so changed data is
another dataset (and another config fingerprint), wherever the files lie.

Files are read with allow_pickle=False and only when they are regular files;
whatever is wrong with them is one UserError (ConfigError for a binding)
naming the file and key, or the binding, and the fix.
"""

import hashlib
import json
import os
import zipfile

import gin
import numpy as np
import tensorflow as tf

from tf_memorization.core import config
from tf_memorization.core import errors
from tf_memorization.core import storage
from tf_memorization.data import pipelines

REQUIRED_KEYS = ('x_train', 'y_train', 'x_test', 'y_test')
OPTIONAL_KEYS = ('ids_train', 'ids_test', 'class_names')
SPLITS = ('train', 'test')
_HINT = ('Write it again with np.savez(path, x_train=..., y_train=..., '
         'x_test=..., y_test=...).')
# A feature whose training std is below this fraction of its scale
# (max(|mean|, 1)) is constant there: its std is taken as 1.
_CONSTANT = 1e-6

# Where the files lie does not change what a trial computes (the version
# digests their contents), nor do the names of the classes.
config.not_fingerprinted('arrays.paths', 'arrays.class_names')


def _fail(where, message):
  return errors.UserError(f'{where}: {message}')


def _shape(array):
  """'[N, H, W]': an array's shape past axis 0."""
  return '[' + ', '.join(['N'] + [str(d) for d in array.shape[1:]]) + ']'


def _read(path):
  """{key: array} of one .npz file, its keys checked."""
  if not tf.io.gfile.exists(path):
    raise errors.ConfigError(
        f'arrays.paths names {path}, which does not exist: bind arrays.paths '
        'to your .npz file (or a list of them).')
  if tf.io.gfile.isdir(path):
    raise errors.ConfigError(
        f'arrays.paths names {path}, a folder: name the .npz files in it '
        '(a list for several).')
  try:
    stream = (storage.open_regular(path) if '://' not in path
              else tf.io.gfile.GFile(path, 'rb'))
  except errors.RecordError as e:  # a FIFO or device: never read
    raise errors.ConfigError(f'arrays.paths names {path}, which is not a '
                             'regular file: name an .npz file.') from e
  except PermissionError as e:
    raise _fail(path, f'cannot be read ({e.strerror}): make it '
                'readable.') from e
  with stream:
    if not zipfile.is_zipfile(stream):
      raise _fail(path, f'is not an .npz file (or is truncated). {_HINT}')
    stream.seek(0)
    try:
      npz = np.load(stream, allow_pickle=False)
      keys = list(npz.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
      raise _fail(path, f'is not a valid .npz file ({e}). {_HINT}') from e
    unknown = sorted(set(keys) - set(REQUIRED_KEYS + OPTIONAL_KEYS))
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if missing or unknown:
      problem = (f'lacks {", ".join(missing)}' if missing else
                 f'holds unknown keys {", ".join(unknown)}')
      raise _fail(path, f'{problem} (it holds {", ".join(sorted(keys))}; '
                  f'needed: {", ".join(REQUIRED_KEYS)}, optional: '
                  f'{", ".join(OPTIONAL_KEYS)}). {_HINT}')
    found = {}
    for key in keys:
      try:
        found[key] = npz[key]
      except ValueError as e:
        if 'allow_pickle' in str(e):
          raise _fail(path, f'{key} holds Python objects (dtype object), '
                      'which are never read (allow_pickle=False): save '
                      'strings as np.asarray(values, str) and numbers as a '
                      'numeric array.') from e
        raise _fail(path, f'{key} is not a valid array ({e}). {_HINT}') from e
      except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise _fail(path, f'{key} cannot be read ({e}). {_HINT}') from e
      if not isinstance(found[key], np.ndarray):  # a member that is no .npy
        raise _fail(path, f'{key} is not a valid array (not .npy data). '
                    f'{_HINT}')
  return found


def _check_file(path, contents):
  """Shapes and kinds of one file's arrays (each split's lengths agree)."""
  for split in SPLITS:
    x, y = contents[f'x_{split}'], contents[f'y_{split}']
    if x.ndim < 2 or x.dtype.kind not in 'biuf':
      raise _fail(path, f'x_{split} is {x.dtype} {list(x.shape)}: it must be '
                  'numbers, one example per row ([N, H, W, C] uint8 images '
                  'or [N, D] features).')
    if y.ndim != 1:
      fix = (f'y_{split}.argmax(axis=1) if one-hot' if y.ndim == 2 else
             f'y_{split}.reshape(-1)')
      raise _fail(path, f'y_{split} has shape {list(y.shape)}: labels must '
                  f'be 1-D class indices (save {fix}).')
    if y.dtype.kind not in 'iuf':
      raise _fail(path, f'y_{split} is {y.dtype}: labels must be integer '
                  'class indices 0..K-1 (save them as np.int64).')
    ids = contents.get(f'ids_{split}')
    for key, array in ((f'y_{split}', y), (f'ids_{split}', ids)):
      if array is not None and len(array) != len(x):
        raise _fail(path, f'x_{split} has {len(x)} examples but {key} has '
                    f'{len(array)}: save one entry per example.')
    if ids is not None and (ids.ndim != 1 or ids.dtype.kind not in 'USiu'):
      raise _fail(path, f'ids_{split} is {ids.dtype} {list(ids.shape)}: ids '
                  'must be 1-D strings or integers.')
  names = contents.get('class_names')
  if names is not None and (names.ndim != 1 or names.dtype.kind not in 'US'):
    raise _fail(path, f'class_names is {names.dtype} {list(names.shape)}: '
                'save the names as a 1-D array of strings.')


def _combine(paths, files):
  """Each key concatenated over the files; (arrays, sources) where
  sources[split] lists (path, first index, count) for the messages."""
  first, reference = paths[0], files[0]
  for path, contents in zip(paths[1:], files[1:]):
    if set(contents) != set(reference):
      raise _fail(path, f'holds {", ".join(sorted(contents))} but {first} '
                  f'holds {", ".join(sorted(reference))}: shards must hold '
                  'the same keys.')
    for key, array in contents.items():
      ours = reference[key]
      if key == 'class_names':
        if not np.array_equal(array, ours):
          raise _fail(path, f'class_names differ from those of {first}: '
                      'every shard must hold the same class_names.')
      elif array.shape[1:] != ours.shape[1:] or (
          array.dtype.kind != ours.dtype.kind):
        raise _fail(path, f'{key} is {array.dtype} {_shape(array)} but in '
                    f'{first} it is {ours.dtype} {_shape(ours)}: shards must '
                    'agree in shape past axis 0 and in dtype.')
  combined = {key: (array if len(files) == 1 else
                    np.concatenate([f[key] for f in files]))
              for key, array in reference.items() if key != 'class_names'}
  if 'class_names' in reference:
    combined['class_names'] = reference['class_names']
  sources = {}
  for split in SPLITS:
    starts = np.cumsum([0] + [len(f[f'y_{split}']) for f in files])
    sources[split] = [(p, int(s), len(f[f'y_{split}']))
                      for p, s, f in zip(paths, starts, files)]
  return combined, sources


def _at(sources, key, index):
  """'file: key[i]' of example `index` of the concatenated arrays."""
  for path, start, count in sources:
    if start <= index < start + count:
      return f'{path}: {key}[{index - start}]'
  return f'{key}[{index}]'


def _features(x, key, sources):
  """uint8 images as they are ([N, H, W] gets a channel axis); anything
  else as float32, every value finite."""
  if x.dtype == np.uint8:
    return x[..., None] if x.ndim == 3 else x
  with np.errstate(over='ignore'):  # beyond float32: inf, refused below
    converted = x.astype(np.float32)
  if x.dtype.kind == 'f':
    finite = np.isfinite(converted).reshape(len(x), -1).all(axis=1)
    if not finite.all():
      i = int(np.argmin(finite))
      value = x[i].reshape(-1)[np.argmin(np.isfinite(converted[i]).ravel())]
      raise errors.UserError(
          f'{_at(sources, key, i)} holds {value} (NaN, infinite or beyond '
          'float32): every feature must be a finite number; impute or drop '
          'such examples.')
  return converted


def _check_integers(y, key, sources):
  """Float labels must hold integers."""
  if y.dtype.kind == 'f':
    bad = ~(np.isfinite(y) & (y == np.round(y)))
    if bad.any():
      i = int(np.argmax(bad))
      raise errors.UserError(
          f'{_at(sources, key, i)} = {y[i].item()!r} is not an integer class '
          'index: labels must be integers 0..K-1 (save them as np.int64).')


def _check_range(y, key, sources, num_classes, inferred):
  """y as int64, every label in [0, num_classes)."""
  outside = (y < 0) | (y >= num_classes)
  if outside.any():
    i = int(np.argmax(outside))
    bound = (f'max label + 1 = {num_classes}, arrays.num_classes being '
             'unbound' if inferred else f'arrays.num_classes = {num_classes}')
    raise errors.UserError(
        f'{_at(sources, key, i)} = {y[i]} is outside the classes [0, '
        f'{num_classes}) ({bound}): relabel to 0..K-1, or bind '
        'arrays.num_classes to the number of classes.')
  return y.astype(np.int64)


def _text(array, where):
  """A str array of strings, bytes (UTF-8) or integers."""
  if array.dtype.kind == 'S':
    try:
      return np.char.decode(array, 'utf-8')
    except UnicodeDecodeError as e:
      raise errors.UserError(f'{where} is not UTF-8 text ({e}): save it '
                             'as str.') from e
  return array.astype(str)


def _labels(combined, sources, num_classes, where):
  """({split: int64 labels}, num_classes), inferred when None."""
  for split in SPLITS:
    _check_integers(combined[f'y_{split}'], f'y_{split}', sources[split])
  inferred = num_classes is None
  if inferred:
    num_classes = 1 + int(max(combined['y_train'].max(),
                              combined['y_test'].max()))
    if num_classes >= 2**31:
      raise _fail(where, f'the largest label is {num_classes - 1}: labels '
                  'must be class indices 0..K-1 (relabel them).')
  labels = {split: _check_range(combined[f'y_{split}'], f'y_{split}',
                                sources[split], num_classes, inferred)
            for split in SPLITS}
  if num_classes < 2:
    raise _fail(where, 'every label is 0: a classifier needs at least two '
                'classes (bind arrays.num_classes if some classes have no '
                'example here).')
  return labels, num_classes


def _ids(given, split, n, sources):
  """The given ids as str (non-empty, unique), or f'{split}/{i}'."""
  key = f'ids_{split}'
  if given is None:
    return np.asarray([f'{split}/{i}' for i in range(n)], dtype=str)
  ids = _text(given, f'{sources[0][0]}: {key}')
  empty = ids == ''
  if empty.any():
    raise errors.UserError(f'{_at(sources, key, int(np.argmax(empty)))} is '
                           'an empty id: every example needs a non-empty id.')
  order = np.argsort(ids, kind='stable')
  same = np.flatnonzero(ids[order][1:] == ids[order][:-1])
  if same.size:
    i, j = int(order[same[0]]), int(order[same[0] + 1])
    raise errors.UserError(
        f'{_at(sources, key, j)} = {str(ids[j])!r}, the same id as '
        f'{_at(sources, key, i)}: ids must be unique within a split.')
  return ids


def _normalization(x):
  """(mean, std) per last-axis channel of x, over all its other axes.

  In chunks of rows (bounded memory); uint8 images through a histogram of
  each channel's 256 values, exactly and fast.
  """
  flat = x.reshape(-1, x.shape[-1])
  step = max(1, 2**22 // flat.shape[1])
  chunks = [flat[s:s + step] for s in range(0, len(flat), step)]
  if x.dtype == np.uint8:
    counts = sum(np.stack([np.bincount(c[:, k], minlength=256)
                           for k in range(c.shape[1])]) for c in chunks)
    values = np.arange(256.0)
    mean = counts @ values / len(flat)
    squares = (counts * np.square(values - mean[:, None])).sum(axis=1)
  else:
    mean = sum(c.sum(axis=0, dtype=np.float64) for c in chunks) / len(flat)
    squares = sum(np.square(c.astype(np.float64) - mean).sum(axis=0)
                  for c in chunks)
  std = np.sqrt(squares / len(flat))
  std = np.where(std <= _CONSTANT * np.maximum(np.abs(mean), 1.0), 1.0, std)
  return tuple(mean.tolist()), tuple(std.tolist())


def _version(splits):
  """12 hex digits of a sha256 over every split's x, y and ids."""
  digest = hashlib.sha256()
  for split in splits:
    for array in (split.images, split.labels):
      array = np.ascontiguousarray(array)
      digest.update(f'{array.dtype.str}{array.shape}'.encode())
      digest.update(array.data)
    digest.update(json.dumps(split.ids.tolist()).encode())
  return digest.hexdigest()[:12]


def _paths(paths):
  if paths is None:
    raise errors.ConfigError(
        "arrays.paths is not bound: bind it to your .npz file (arrays.paths "
        "= '/data/mine.npz') or a list of files, concatenated in order.")
  if isinstance(paths, (str, os.PathLike)):
    paths = [os.fspath(paths)]
  paths = errors.sequence('arrays.paths', paths, errors.string,
                          allow_empty=False)
  for i, path in enumerate(paths):
    if path in paths[:i]:
      raise errors.ConfigError(f'arrays.paths names {path} twice: name each '
                               'file once.')
  return paths


@gin.configurable
def arrays(paths=None, num_classes=None, class_names=None, name=None):
  """A dataset held in memory, read from .npz files (see the module doc).

  Args:
    paths: an .npz file, or a list of files whose arrays are concatenated
      in order (shards). Required.
    num_classes: the number of classes (default: max label + 1 over both
      splits).
    class_names: num_classes names of the classes (default: the files'
      class_names, if any).
    name: the dataset's name (default 'arrays'). A name in
      pipelines.DATASET_DEFAULTS takes that dataset's normalization and
      augmentation instead of this data's own statistics.

  Returns:
    A pipelines.Dataset.
  """
  paths = _paths(paths)
  num_classes = errors.integer('arrays.num_classes', num_classes, minimum=2,
                               maximum=2**31 - 1, allow_none=True)
  if class_names is not None:
    class_names = errors.sequence('arrays.class_names', class_names,
                                  errors.string)
  name = errors.string('arrays.name', name, allow_none=True) or 'arrays'
  files = [_read(path) for path in paths]
  for path, contents in zip(paths, files):
    _check_file(path, contents)
  combined, sources = _combine(paths, files)
  where = ', '.join(paths)
  x = {}
  for split in SPLITS:
    if not len(combined[f'y_{split}']):
      raise _fail(where, f'the {split} split is empty: save at least one '
                  f'example in x_{split} and y_{split}.')
    x[split] = _features(combined[f'x_{split}'], f'x_{split}',
                         sources[split])
  if x['train'].shape[1:] != x['test'].shape[1:] or (
      x['train'].dtype != x['test'].dtype):
    raise _fail(where, f'x_train is {x["train"].dtype} {_shape(x["train"])} '
                f'but x_test is {x["test"].dtype} {_shape(x["test"])}: save '
                'both splits with the same example shape and dtype.')
  inferred = num_classes is None
  labels, num_classes = _labels(combined, sources, num_classes, where)
  splits = []
  for split in SPLITS:
    ids = _ids(combined.get(f'ids_{split}'), split, len(labels[split]),
               sources[split])
    # The user's ids (or positions) are the examples' ids in their source.
    splits.append(pipelines.Split(images=x[split], labels=labels[split],
                                  ids=ids, source_ids=ids))
  kind, origin = errors.ConfigError, 'arrays.class_names'
  if class_names is None and 'class_names' in combined:
    kind, origin = errors.UserError, f'class_names of {paths[0]}'
    class_names = tuple(str(n) for n in _text(combined['class_names'],
                                              origin))
  if class_names is not None and len(class_names) != num_classes:
    raise kind(
        f'{origin} has {len(class_names)} names but there are {num_classes} '
        f'classes ({"max label + 1" if inferred else "arrays.num_classes"}):'
        ' give one name per class, or bind arrays.num_classes = '
        f'{len(class_names)} if some classes have no example here.')
  return pipelines.Dataset(
      name=name, version=_version(splits), num_classes=num_classes,
      train=splits[0], test=splits[1],
      class_names=tuple(class_names) if class_names is not None else None,
      normalization=_normalization(x['train']))

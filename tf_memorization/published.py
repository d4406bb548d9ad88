"""The released scores of Feldman & Zhang (2020), in their own schema.

    read(path)                 the memorization/influence file, checked
    read_pairs(path, file)     its high-influence pairs file, checked
    class_influence(...)       our influence on a class's block of pairs
    matrix_pairs(file, ...)    the pairs of its matrices at thresholds
    write(path, ...)           our estimates in the same schema (--export)

Which of a workdir's examples each position of a file is (the orders, the
label check) is published_join.py's.

The release (https://pluskid.github.io/influence-memorization/):

    memorization/influence file (e.g. cifar100_infl_matrix.npz)
      tr_mem               float [n]       memorization of each train example
      tr_labels            int [n]
      tt_labels            int [n_test]
      tr_classidx_K        int             the train examples of class K
      tt_classidx_K        int             the test examples of class K
      infl_matrix_classK   float [len(tr_classidx_K), len(tt_classidx_K)]
                           influence of each on each, per class K
      tr_filenames, tt_filenames   str [n], [n_test] (ImageNet's files)
    pairs file (e.g. cifar100_high_infl_pairs_infl0.15_mem0.25.npz)
      tr_idx, tt_idx       int [p]         one entry per high-influence pair
      infl, mem            float [p]       (infl >= 0.15, mem >= 0.25, same
                                           label)

Every index of the CIFAR release is a position in the source's ORIGINAL
order (the CIFAR python pickle's), which is not tfds's: published_join.py
says how such a position meets one of our examples.

A file is untrusted input: it is read with allow_pickle=False, and any key,
shape, length or index that does not fit is one PublishedFileError (a
UserError: the binaries print one line, exit status 2) naming the file, what
is wrong and the fix.
"""

import dataclasses
import io
import json
import re
import zipfile

import numpy as np
import tensorflow as tf

from tf_memorization import errors
from tf_memorization import scores
from tf_memorization import storage

MEMORIZATION_KEYS = ('tr_mem', 'tr_labels')
PAIRS_KEYS = ('tr_idx', 'tt_idx', 'infl', 'mem')
_CLASS_KEYS = (('tr_classidx_', re.compile(r'^tr_classidx_(\d+)$')),
               ('tt_classidx_', re.compile(r'^tt_classidx_(\d+)$')),
               ('infl_matrix_class', re.compile(r'^infl_matrix_class(\d+)$')))
_RESAVE = ('d = dict(np.load(F, allow_pickle=True)); np.savez(OUT, **{k: '
           'v.astype(str) if v.dtype == object else v for k, v in '
           'd.items()})')


class PublishedFileError(errors.UserError):
  """A released (or exported) file that cannot be used as it is."""


@dataclasses.dataclass
class Released:
  """A memorization/influence file of the release, every value checked.

  Attributes:
    path: where it was read.
    memorization: float64 [n] (tr_mem).
    train_labels: int64 [n]; test_labels: int64 [n_test], or None when the
      file has no tt_labels (memorization only).
    classes: {K: (train positions, test positions, float matrix)}, empty
      when the file holds no influence matrices.
    train_filenames, test_filenames: str arrays, or None.
    metadata: the JSON object our --export stores ('order', ...), or None.
  """
  path: str
  memorization: np.ndarray
  train_labels: np.ndarray
  test_labels: np.ndarray = None
  classes: dict = dataclasses.field(default_factory=dict)
  train_filenames: np.ndarray = None
  test_filenames: np.ndarray = None
  metadata: dict = None

  @property
  def num_train(self):
    return len(self.train_labels)

  @property
  def num_test(self):
    return None if self.test_labels is None else len(self.test_labels)


@dataclasses.dataclass
class Pairs:
  """A pairs file: file positions of each pair, its influence and the
  memorization of its training example."""
  path: str
  train: np.ndarray
  test: np.ndarray
  influence: np.ndarray
  memorization: np.ndarray


# --------------------------------------------------------------------------
# Reading


def _load(path, flag):
  """The arrays of the .npz file `path` (allow_pickle=False)."""
  if not path:
    raise PublishedFileError(f'{flag} is empty: give the path of an .npz '
                             'file.')
  try:
    payload = storage.read_bytes(path, 'Give the .npz file itself.')
  except (OSError, tf.errors.OpError) as e:
    raise PublishedFileError(f'{flag}={path} cannot be read '
                             f'({type(e).__name__}: {e}): give the path of '
                             'an .npz file.') from e
  try:
    zipfile.ZipFile(io.BytesIO(payload)).close()  # not np.load's pickle guess
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
      return {name: npz[name] for name in npz.files}
  except ValueError as e:
    if 'pickle' in str(e):
      raise PublishedFileError(
          f'{path} holds object arrays, which load only as pickles (and a '
          'pickle can run code): nothing of it is used. Re-save it without '
          f'object arrays, only if you trust it (in Python: {_RESAVE}), and '
          'pass the new file.') from e
    error = e
  except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
    error = e
  raise PublishedFileError(
      f'{flag}={path} is not a readable .npz file ({type(error).__name__}: '
      f'{error}): pass a file of the release (np.savez format), e.g. '
      'cifar100_infl_matrix.npz.') from error


def _named(path, arrays, key, kind, ndim=1):
  """arrays[key], checked to be an `ndim`-d array of `kind` ('int', 'real'
  or 'str'); str arrays come back as unicode."""
  value = arrays[key]
  kinds = {'int': 'iu', 'real': 'iuf', 'str': 'US'}[kind]
  if value.ndim != ndim or value.dtype.kind not in kinds:
    words = {'int': 'integers', 'real': 'numbers', 'str': 'strings'}[kind]
    raise PublishedFileError(
        f'{path}: {key} is {value.dtype} of shape {value.shape}, not a '
        f'{ndim}-d array of {words}: the file is damaged or not of the '
        'release\'s schema.')
  if value.dtype.kind == 'S':
    value = np.char.decode(value, 'utf-8', 'replace')
  return value


def _check_range(path, key, indices, size, of):
  bad = np.flatnonzero((indices < 0) | (indices >= size))
  if len(bad):
    raise PublishedFileError(
        f'{path}: {key} holds the index {int(indices[bad[0]])} ({len(bad)} of '
        f'its {len(indices)} are outside 0..{size - 1}, the {size} {of}): '
        'the file is damaged, or its keys come from different files.')


def _missing(path, missing, what, why=''):
  raise PublishedFileError(
      f'{path} lacks {missing}{why}: not a {what} of the release\'s schema. '
      'Pass '
      'the memorization/influence file (tr_mem, tr_labels, tt_labels, and '
      'per class K tr_classidx_K, tt_classidx_K, infl_matrix_classK) as '
      '--published and the pairs file (tr_idx, tt_idx, infl, mem) as '
      '--published_pairs.')


def _class_matrices(path, arrays, num_train, num_test):
  """{K: (train positions, test positions, matrix)} of the file."""
  found = []
  for prefix, pattern in _CLASS_KEYS:
    found.append({int(m.group(1)): key for key in arrays
                  for m in [pattern.match(key)] if m})
  every = set().union(*found)
  if not every:
    return {}
  missing = sorted((k, prefix) for (prefix, _), keys in zip(_CLASS_KEYS, found)
                   for k in every - set(keys))
  if missing:
    _missing(path, [f'{prefix}{k}' for k, prefix in missing][:10],
             'memorization/influence file', ' (each class K needs all three '
             'of tr_classidx_K, tt_classidx_K, infl_matrix_classK)')
  if num_test is None:
    _missing(path, ['tt_labels'], 'memorization/influence file',
             ' (its influence matrices need the test labels)')
  classes = {}
  for k in sorted(every):
    train_key, test_key, matrix_key = (f[k] for f in found)
    train = _named(path, arrays, train_key, 'int').astype(np.int64)
    test = _named(path, arrays, test_key, 'int').astype(np.int64)
    matrix = _named(path, arrays, matrix_key, 'real', ndim=2)
    if matrix.shape != (len(train), len(test)):
      raise PublishedFileError(
          f'{path}: {matrix_key} is of shape {matrix.shape}, but '
          f'{train_key} has {len(train)} and {test_key} {len(test)} entries '
          f'(it must be [{len(train)}, {len(test)}]): the file is damaged, '
          'or its keys come from different files.')
    _check_range(path, train_key, train, num_train, 'training examples of '
                 'tr_labels')
    _check_range(path, test_key, test, num_test, 'test examples of tt_labels')
    classes[k] = (train, test, matrix)
  return classes


def read(path, flag='--published'):
  """The memorization/influence file `path`, checked: a Released."""
  arrays = _load(path, flag)
  missing = [key for key in MEMORIZATION_KEYS if key not in arrays]
  if missing:
    if all(key in arrays for key in ('tr_idx', 'tt_idx')):
      raise PublishedFileError(
          f'{path} is a pairs file (tr_idx, tt_idx; it lacks {missing}): '
          'pass it as --published_pairs, and the memorization/influence file '
          '(e.g. cifar100_infl_matrix.npz) as --published.')
    _missing(path, missing, 'memorization/influence file')
  memorization = _named(path, arrays, 'tr_mem', 'real').astype(np.float64)
  train_labels = _named(path, arrays, 'tr_labels', 'int').astype(np.int64)
  if len(memorization) != len(train_labels):
    raise PublishedFileError(
        f'{path}: tr_mem has {len(memorization)} entries but tr_labels '
        f'{len(train_labels)}; they must have one per training example: the '
        'file is damaged, or its keys come from different files.')
  test_labels = None
  if 'tt_labels' in arrays:
    test_labels = _named(path, arrays, 'tt_labels', 'int').astype(np.int64)
  released = Released(path, memorization, train_labels, test_labels)
  released.classes = _class_matrices(path, arrays, released.num_train,
                                     released.num_test)
  for key, split, size in (('tr_filenames', 'tr_labels', released.num_train),
                           ('tt_filenames', 'tt_labels', released.num_test)):
    if key not in arrays:
      continue
    if size is None:
      _missing(path, ['tt_labels'], 'memorization/influence file',
               ' (its tt_filenames need them)')
    names = _named(path, arrays, key, 'str')
    if len(names) != size:
      raise PublishedFileError(
          f'{path}: {key} has {len(names)} entries but {split} {size}; they '
          'must have one per example: the file is damaged, or its keys come '
          'from different files.')
    setattr(released, 'train_filenames' if key[1] == 'r' else
            'test_filenames', names)
  if 'metadata' in arrays and arrays['metadata'].dtype.kind == 'U':
    try:
      metadata = json.loads(str(arrays['metadata']))
    except ValueError:
      metadata = None  # not our export's: nothing of it is used
    released.metadata = metadata if isinstance(metadata, dict) else None
  return released


def read_pairs(path, released, flag='--published_pairs'):
  """The pairs file `path`, checked against the memorization file's sizes."""
  arrays = _load(path, flag)
  missing = [key for key in PAIRS_KEYS if key not in arrays]
  if missing:
    _missing(path, missing, 'pairs file')
  if released.num_test is None:
    _missing(released.path, ['tt_labels'], 'memorization/influence file',
             ' (the pairs of --published_pairs index its test examples)')
  train = _named(path, arrays, 'tr_idx', 'int').astype(np.int64)
  test = _named(path, arrays, 'tt_idx', 'int').astype(np.int64)
  influence = _named(path, arrays, 'infl', 'real').astype(np.float64)
  memorization = _named(path, arrays, 'mem', 'real').astype(np.float64)
  lengths = {key: len(a) for key, a in zip(PAIRS_KEYS, (train, test, influence,
                                                        memorization))}
  if len(set(lengths.values())) != 1:
    raise PublishedFileError(
        f'{path}: tr_idx, tt_idx, infl and mem must have one entry per pair, '
        f'but have {lengths}: the file is damaged, or its keys come from '
        'different files.')
  _check_range(path, 'tr_idx', train, released.num_train,
               f'training examples of {released.path}')
  _check_range(path, 'tt_idx', test, released.num_test,
               f'test examples of {released.path}')
  return Pairs(path, train, test, influence, memorization)


# --------------------------------------------------------------------------
# Our influence on a class's block, and the pairs of a file


def class_influence(masks, test_values, train_indices, test_indices,
                    block_size=2048):
  """Influence of the training examples I on the test examples J, blocked.

      infl[a, b] = mean_{t: M[t, I_a]=1} T[t, J_b]
                 - mean_{t: M[t, I_a]=0} T[t, J_b]

  For 0/1 correctness the in-trial sums are one float32 product of 0/1
  values, M[:, I]ᵀ T[:, J] (exact integers below 2^24 trials), and the means
  are taken in float64, so every entry is the exact difference rounded once
  to float32: equal influences stay equal (ties matter to a Spearman over
  the release's matrices). Soft scores use scores.influence_weights' W,
  infl = W[:, I]ᵀ T[:, J]. Only [|I|, |J|] is held (a class's block, never
  n x n_test), `block_size` rows of I per product.

  Args:
    masks: bool [k, n].
    test_values: [k, n_test] bool correctness (or soft scores in [0, 1]).
    train_indices, test_indices: int arrays I and J.
    block_size: rows of I per product.

  Returns:
    float32 [|I|, |J|]; NaN rows for examples in no trial or in all.
  """
  train_indices = np.asarray(train_indices, np.int64)
  values = test_values[:, np.asarray(test_indices, np.int64)]
  exact = values.dtype == bool and masks.shape[0] < 2 ** 24
  values = np.asarray(values, np.float32)
  total = values.sum(axis=0, dtype=np.float64)  # per test example
  out = np.empty((len(train_indices), values.shape[1]), np.float32)
  for start in range(0, len(train_indices), block_size):
    rows = train_indices[start:start + block_size]
    block_masks = masks[:, rows]
    if exact:
      k_in = block_masks.sum(axis=0).astype(np.float64)[:, None]
      k_out = masks.shape[0] - k_in
      inside = (block_masks.astype(np.float32).T @ values).astype(np.float64)
      with np.errstate(invalid='ignore', divide='ignore'):
        block = inside / k_in - (total - inside) / k_out
      defined = (k_in[:, 0] > 0) & (k_out[:, 0] > 0)
    else:
      weights, defined = scores.influence_weights(block_masks)
      block = weights.T @ values
    block[~defined] = np.nan
    out[start:start + len(rows)] = block
  return out


def matrix_pairs(released, influence_threshold, memorization_threshold,
                 same_label=True):
  """(train, test) file positions of the pairs of its per-class matrices
  with infl >= influence_threshold whose training example has tr_mem >=
  memorization_threshold (and, same_label, equal labels): what its pairs
  file holds at those thresholds."""
  trains, tests = [], []
  for train, test, matrix in released.classes.values():
    rows, cols = np.nonzero(np.asarray(matrix) >= influence_threshold)
    rows, cols = train[rows], test[cols]
    keep = released.memorization[rows] >= memorization_threshold
    if same_label:
      keep &= released.train_labels[rows] == released.test_labels[cols]
    trains.append(rows[keep])
    tests.append(cols[keep])
  return scores.concat_indices(trains), scores.concat_indices(tests)


# --------------------------------------------------------------------------
# Our estimates in the release's schema


def pairs_path(path):
  """Where --export=PATH writes its pairs: PATH without .npz + _pairs.npz."""
  stem = path[:-len('.npz')] if path.endswith('.npz') else path
  return f'{stem}_pairs.npz'


def write(path, arrays, pairs):
  """Writes the export `arrays` to `path` and `pairs` (tr_idx, tt_idx,
  infl, mem) to pairs_path(path), each atomically."""
  storage.atomic_replace(path, storage.npz_bytes(arrays))
  storage.atomic_replace(pairs_path(path), storage.npz_bytes(pairs))
  return path, pairs_path(path)


"""The released scores of Feldman & Zhang (2020), in their own schema.

    read(path)                 the memorization/influence file, checked
    read_pairs(path, file)     its high-influence pairs file, checked
    class_influence(...)       our influence on a class's block of pairs
    matrix_pairs(file, ...)    the pairs of its matrices at thresholds
    write(path, ...)           our estimates in the same schema (--export)

Which of a workdir's examples each position of a file is (the orders, the
label check) is join.py's.

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
order (the CIFAR python pickle's), which is not tfds's: join.py
says how such a position meets one of our examples.

A file is untrusted input. Any key, shape, length, index or value that does
not fit is one PublishedFileError (a UserError: the binaries print one line,
exit status 2, and write nothing) naming the file, the key and the fix:

  * Read once: its bytes are read once (storage.read_bytes) and every check
    and every array uses those bytes; the path is not opened again.
  * No pickles: an object member is refused, never unpickled.
  * Bounded before decompressing (a 1 MB np.savez_compressed file can hold
    a GiB of zeros): only the schema's members are read (any other is never
    decompressed); each one's .npy header (at most 10,000 bytes, numpy's
    own limit: npz_reader.py) is read first, its shape and dtype must
    agree with its size in the zip directory, and it is refused, naming its
    declared size, when larger than the run allows (Limits): tr_labels and
    tt_labels at most max(the workdir's count, MAX_EXAMPLES) entries (a
    file may hold more examples than a workdir of a subset of its data);
    tr_mem and the file names one per example of those, names of at most
    MAX_NAME_CHARS; tr_classidx_K (tt_classidx_K) at most the file's train
    (test) examples of label K, infl_matrix_classK exactly
    [len(tr_classidx_K), len(tt_classidx_K)], all matrices together at most
    max(Σ_K our train x test examples of label K, MAX_INFLUENCE_ENTRIES);
    a pairs file at most as many pairs as that, and as n x n_test. Data is
    then decompressed only up to that size (stored or deflated members
    only): a zip directory that lies cannot make it more.
  * Values: memorization (tr_mem, mem) and influence (infl_matrix_classK,
    infl) are differences of two accuracies, so any outside [-1, 1]
    (infinities included) is refused. NaN is refused too, saying how many
    (a released file has a number for every example and pair; a NaN would
    sort, rank and tie as if it were one): the one exception is a file our
    --export wrote (metadata 'written_by' is EXPORT_WRITER), where NaN
    means its workdir had no estimate; comparison.py then compares over the
    finite entries and says over how many. A pairs file may hold no NaN.
"""

import dataclasses
import re
import zipfile

import numpy as np
import tensorflow as tf

from tf_memorization.core import errors
from tf_memorization.core import npz_reader
from tf_memorization.core import storage
from tf_memorization.stats import scores

MEMORIZATION_KEYS = ('tr_mem', 'tr_labels')
PAIRS_KEYS = ('tr_idx', 'tt_idx', 'infl', 'mem')
_CLASS_KEYS = (('tr_classidx_', re.compile(r'^tr_classidx_(\d+)$')),
               ('tt_classidx_', re.compile(r'^tt_classidx_(\d+)$')),
               ('infl_matrix_class', re.compile(r'^infl_matrix_class(\d+)$')))
_RESAVE = ('d = dict(np.load(F, allow_pickle=True)); np.savez(OUT, **{k: '
           'v.astype(str) if v.dtype == object else v for k, v in '
           'd.items()})')
RELEASE_URL = 'https://pluskid.github.io/influence-memorization/'
# What compare --export writes in its metadata: such a file may hold NaN.
EXPORT_WRITER = 'python -m tf_memorization.compare --export'

# The most a file may make the binary hold (module docstring), whatever the
# workdir: room for the largest release, ImageNet's (1,281,167 train and
# 50,000 test examples; 1,000 classes of ~1,281 x 50 influence entries,
# ~64M), beyond which only a workdir of more examples admits more.
MAX_EXAMPLES = 2_000_000
MAX_INFLUENCE_ENTRIES = 100_000_000
MAX_NAME_CHARS = 256
MAX_METADATA_CHARS = 65_536


class PublishedFileError(errors.UserError):
  """A released (or exported) file that cannot be used as it is."""


@dataclasses.dataclass(frozen=True)
class Limits:
  """The largest arrays a file may make this run hold (module docstring).

  Attributes:
    train, test: the most examples a file's tr_labels (tt_labels) may hold.
    influence_entries: the most entries of all its matrices together (and
      the most pairs of a pairs file).
  """
  train: int = MAX_EXAMPLES
  test: int = MAX_EXAMPLES
  influence_entries: int = MAX_INFLUENCE_ENTRIES

  @classmethod
  def for_run(cls, train_labels, test_labels):
    """Limits of a workdir of these (clean) labels."""
    train_labels = np.asarray(train_labels, np.int64)
    test_labels = np.asarray(test_labels, np.int64)
    classes = int(max(train_labels.max(initial=-1),
                      test_labels.max(initial=-1))) + 1
    ours = int(np.dot(np.bincount(train_labels, minlength=classes),
                      np.bincount(test_labels, minlength=classes)))
    return cls(max(len(train_labels), MAX_EXAMPLES),
               max(len(test_labels), MAX_EXAMPLES),
               max(ours, MAX_INFLUENCE_ENTRIES))


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
  """An npz_reader.Archive of the .npz file `path`, read once."""
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
    # A zip: not np.load's pickle guess.
    return npz_reader.Archive(
        path, payload, PublishedFileError,
        hint=f'Download it again ({RELEASE_URL}).',
        unsupported_hint='Re-save the file with np.savez.')
  except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
    raise PublishedFileError(
        f'{flag}={path} is not a readable .npz file ({type(e).__name__}: '
        f'{e}): pass a file of the release (np.savez format), e.g. '
        'cifar100_infl_matrix.npz.') from e


def _declared(archive, key, kind, ndim=1):
  """archive's header of `key`, checked to be an `ndim`-d array of `kind`
  ('int', 'real' or 'str') before anything of it is decompressed."""
  header = archive.header(key)
  if header.dtype.hasobject:
    raise PublishedFileError(
        f'{archive.path} holds object arrays ({key}), which load only as '
        'pickles (and a pickle can run code): nothing of it is used. '
        'Re-save it without object arrays, only if you trust it (in '
        f'Python: {_RESAVE}), and pass the new file.')
  kinds = {'int': 'iu', 'real': 'iuf', 'str': 'US'}[kind]
  if len(header.shape) != ndim or header.dtype.kind not in kinds:
    words = {'int': 'integers', 'real': 'numbers', 'str': 'strings'}[kind]
    raise PublishedFileError(
        f'{archive.path}: {key} is {header.dtype} of shape {header.shape}, '
        f'not a {ndim}-d array of {words}: the file is damaged or not of the '
        'release\'s schema.')
  if kind == 'real' and header.dtype.itemsize > 8:
    raise PublishedFileError(
        f'{archive.path}: {key} is {header.dtype}, not a float of at most 64 '
        'bits: the file is damaged or not of the release\'s schema.')
  return header


def _too_large(archive, key, allowed):
  raise PublishedFileError(
      f'{archive.path}: {key} declares {archive.header(key).describe()}, more '
      f'than {allowed}: refused before decompressing it (the file is damaged '
      'or not of the release, e.g. made to exhaust memory); download it '
      f'again ({RELEASE_URL}).')


def _bounded(archive, key, kind, most, allowed, ndim=1):
  """_declared, refused when it declares more than `most` entries."""
  header = _declared(archive, key, kind, ndim)
  if header.count > most:
    _too_large(archive, key, allowed)
  return header


def _values(archive, key):
  """Member `key`; str arrays come back as unicode."""
  value = archive.array(key)
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


def _check_scores(path, key, values, what, allow_nan=False):
  """Refuses NaN (unless allow_nan) and anything outside [-1, 1] among
  `values` of `what` ('memorization' or 'influence')."""
  nan = np.isnan(values)
  count = int(np.count_nonzero(nan))
  if count and not allow_nan:
    raise PublishedFileError(
        f'{path}: {key} is NaN in {count} of its {values.size} entries, but '
        f'a released file has a number in each ({what} is a difference of '
        'two accuracies; a NaN would rank and tie as if it were one): the '
        'file is damaged or not of the release; download it again '
        f'({RELEASE_URL}).')
  outside = ~nan & ((values < -1) | (values > 1))  # infinities too
  if outside.any():
    raise PublishedFileError(
        f'{path}: {key} holds {float(values[outside][0])} '
        f'({int(np.count_nonzero(outside))} of its {values.size} entries are '
        f'outside [-1, 1]), but {what} is a difference of two accuracies: '
        'the file is damaged or not of the release; download it again '
        f'({RELEASE_URL}).')


def _missing(path, missing, what, why=''):
  raise PublishedFileError(
      f'{path} lacks {missing}{why}: not a {what} of the release\'s schema. '
      'Pass '
      'the memorization/influence file (tr_mem, tr_labels, tt_labels, and '
      'per class K tr_classidx_K, tt_classidx_K, infl_matrix_classK) as '
      '--published and the pairs file (tr_idx, tt_idx, infl, mem) as '
      '--published_pairs.')


def _class_matrices(archive, train_labels, test_labels, limits, allow_nan):
  """{K: (train positions, test positions, matrix)} of the file, every
  size checked (module docstring) before any matrix is decompressed."""
  path = archive.path
  found = []
  for prefix, pattern in _CLASS_KEYS:
    found.append({int(m.group(1)): key for key in archive.keys()
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
  if test_labels is None:
    _missing(path, ['tt_labels'], 'memorization/influence file',
             ' (its influence matrices need the test labels)')
  counts = []  # {label: examples} of each split
  for labels in (train_labels, test_labels):
    values, numbers = np.unique(labels, return_counts=True)
    counts.append(dict(zip(values.tolist(), numbers.tolist())))
  entries = 0
  for k in sorted(every):
    train_key, test_key, matrix_key = (f[k] for f in found)
    sizes = []
    for key, split, count, labels_key in zip(
        (train_key, test_key), ('training', 'test'),
        (c.get(k, 0) for c in counts), ('tr_labels', 'tt_labels')):
      sizes.append(_bounded(archive, key, 'int', count,
                            f'the {count} {split} examples of label {k} in '
                            f'{labels_key}').count)
    shape = _declared(archive, matrix_key, 'real', ndim=2).shape
    if shape != tuple(sizes):
      raise PublishedFileError(
          f'{path}: {matrix_key} is of shape {shape}, but '
          f'{train_key} has {sizes[0]} and {test_key} {sizes[1]} entries '
          f'(it must be [{sizes[0]}, {sizes[1]}]): the file is damaged, '
          'or its keys come from different files.')
    entries += sizes[0] * sizes[1]
    if entries > limits.influence_entries:
      _too_large(archive, matrix_key,
                 f'the {limits.influence_entries} influence entries all '
                 'matrices together may hold here (released.py: Limits)')
  classes = {}
  for k in sorted(every):
    train_key, test_key, matrix_key = (f[k] for f in found)
    train = _values(archive, train_key).astype(np.int64)
    test = _values(archive, test_key).astype(np.int64)
    _check_range(path, train_key, train, len(train_labels),
                 'training examples of tr_labels')
    _check_range(path, test_key, test, len(test_labels),
                 'test examples of tt_labels')
    matrix = _values(archive, matrix_key)
    _check_scores(path, matrix_key, matrix, 'influence', allow_nan)
    classes[k] = (train, test, matrix)
  return classes


def _metadata(archive):
  """The JSON object our --export stores, or None (nothing of another
  'metadata' member is used, or decompressed)."""
  if 'metadata' not in archive:
    return None
  header = archive.header('metadata')
  if header.dtype.kind != 'U' or header.shape:
    return None
  if header.dtype.itemsize // 4 > MAX_METADATA_CHARS:
    _too_large(archive, 'metadata', f'{MAX_METADATA_CHARS} characters')
  try:
    metadata = storage.parse_json(str(_values(archive, 'metadata')[()]),
                                  archive.path)
  except errors.RecordError:
    return None  # not our export's: nothing of it is used
  return metadata if isinstance(metadata, dict) else None


def read(path, flag='--published', limits=None):
  """The memorization/influence file `path`, checked: a Released.

  Args:
    path: the .npz file (read once).
    flag: the flag that named it, for the messages.
    limits: the sizes it may declare (default Limits(): a workdir of at
      most MAX_EXAMPLES examples; comparison.py passes Limits.for_run).
  """
  limits = limits or Limits()
  archive = _load(path, flag)
  missing = [key for key in MEMORIZATION_KEYS if key not in archive]
  if missing:
    if all(key in archive for key in ('tr_idx', 'tt_idx')):
      raise PublishedFileError(
          f'{path} is a pairs file (tr_idx, tt_idx; it lacks {missing}): '
          'pass it as --published_pairs, and the memorization/influence file '
          '(e.g. cifar100_infl_matrix.npz) as --published.')
    _missing(path, missing, 'memorization/influence file')
  metadata = _metadata(archive)
  exported = (metadata or {}).get('written_by') == EXPORT_WRITER
  n = _bounded(archive, 'tr_labels', 'int', limits.train,
               f'the {limits.train} examples a file may hold here '
               '(released.py: Limits)').count
  declared = _bounded(archive, 'tr_mem', 'real', n, f'the {n} entries of '
                      'tr_labels, one per training example').count
  if declared != n:
    raise PublishedFileError(
        f'{path}: tr_mem has {declared} entries but tr_labels {n}; they '
        'must have one per training example: the file is damaged, or its '
        'keys come from different files.')
  n_test = None
  if 'tt_labels' in archive:
    n_test = _bounded(archive, 'tt_labels', 'int', limits.test,
                      f'the {limits.test} examples a file may hold here '
                      '(released.py: Limits)').count
  names = {}
  for key, split, size in (('tr_filenames', 'tr_labels', n),
                           ('tt_filenames', 'tt_labels', n_test)):
    if key not in archive:
      continue
    if size is None:
      _missing(path, ['tt_labels'], 'memorization/influence file',
               ' (its tt_filenames need them)')
    header = _declared(archive, key, 'str')
    if header.count != size:
      raise PublishedFileError(
          f'{path}: {key} has {header.count} entries but {split} {size}; '
          'they must have one per example: the file is damaged, or its keys '
          'come from different files.')
    chars = header.dtype.itemsize // (4 if header.dtype.kind == 'U' else 1)
    if chars > MAX_NAME_CHARS:
      _too_large(archive, key, f'{size} names of at most {MAX_NAME_CHARS} '
                 'characters')
    names[key] = header
  train_labels = _values(archive, 'tr_labels').astype(np.int64)
  memorization = _values(archive, 'tr_mem').astype(np.float64)
  _check_scores(path, 'tr_mem', memorization, 'memorization', exported)
  test_labels = (None if n_test is None else
                 _values(archive, 'tt_labels').astype(np.int64))
  released = Released(path, memorization, train_labels, test_labels,
                      metadata=metadata)
  released.classes = _class_matrices(archive, train_labels, test_labels,
                                     limits, exported)
  for key in names:
    setattr(released, 'train_filenames' if key[1] == 'r' else
            'test_filenames', _values(archive, key))
  return released


def read_pairs(path, released, flag='--published_pairs', limits=None):
  """The pairs file `path`, checked against the memorization file's sizes
  (and `limits`, as read's)."""
  limits = limits or Limits()
  archive = _load(path, flag)
  missing = [key for key in PAIRS_KEYS if key not in archive]
  if missing:
    _missing(path, missing, 'pairs file')
  if released.num_test is None:
    _missing(released.path, ['tt_labels'], 'memorization/influence file',
             ' (the pairs of --published_pairs index its test examples)')
  lengths = {key: _declared(archive, key, kind).count
             for key, kind in zip(PAIRS_KEYS, ('int', 'int', 'real', 'real'))}
  if len(set(lengths.values())) != 1:
    raise PublishedFileError(
        f'{path}: tr_idx, tt_idx, infl and mem must have one entry per pair, '
        f'but have {lengths}: the file is damaged, or its keys come from '
        'different files.')
  most = min(limits.influence_entries,
             released.num_train * released.num_test)
  if lengths['tr_idx'] > most:
    _too_large(archive, 'tr_idx', f'the {most} pairs a file may hold here '
               f'(the (train, test) pairs of {released.path}, at most '
               f'{limits.influence_entries}: released.py: Limits)')
  train, test, influence, memorization = (
      _values(archive, key).astype(np.int64 if key.endswith('_idx') else
                                   np.float64) for key in PAIRS_KEYS)
  _check_range(path, 'tr_idx', train, released.num_train,
               f'training examples of {released.path}')
  _check_range(path, 'tt_idx', test, released.num_test,
               f'test examples of {released.path}')
  _check_scores(path, 'infl', influence, 'influence')
  _check_scores(path, 'mem', memorization, 'memorization')
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


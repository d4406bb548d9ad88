"""Which of a workdir's examples each position of a released file is.

    join(file, dataset, order)  the Join of a released_lib.Released to our
                                examples (W/dataset.npz), labels checked
    known_source_ids(dataset, split), source_integers(ids)
                                our examples' source ids, their integers
    export_order(dataset)       the order --export writes in
    is_filename(ids)            whether source ids are file names

released.py reads and checks the files (the release's schema); this module
only meets their positions with our examples.

Every index of the CIFAR release is a position in the source's ORIGINAL
order (the CIFAR python pickle's), which is not tfds's. W/dataset.npz keeps
each example's source id (train_source_ids: 'train_16399' for CIFAR, whose
integer is that original index; a file name for ImageNet), so a position p
of a file meets one of our examples by one of these orders:

    source     our example whose source id ends in the integer p
    filename   our example whose source id (or tfds id) is tr_filenames[p]
               (compared by base name)
    position   our example p (a file --export wrote from a workdir without
               source ids, or one in tfds order)
    auto       filename when the file has file names; else the order our
               own export recorded in its metadata; else source when every
               source id ends in an integer; else position.

A join that does not fit (an order this workdir lacks the source ids for,
repeated indices or file names, our examples missing from a file that should
hold them) is one released_lib.PublishedFileError naming the file and the fix.
After the join the file's labels must equal our clean labels (train:
original_train_labels, before any label noise; test: test_labels), which
catches a file in another order or of other data.
"""

import dataclasses
import re

import numpy as np

from tf_memorization.core import errors
from tf_memorization.published import released as released_lib

ORDERS = ('auto', 'source', 'position', 'filename')
_TRAILING_INTEGER = re.compile(r'(\d+)$')


@dataclasses.dataclass
class Side:
  """How one split of a file meets our examples.

  Attributes:
    ours: int64 [n_file], our example at each file position (-1: none).
    position: int64 [n_ours], the file position of each of ours (-1: none).
  """
  ours: np.ndarray
  position: np.ndarray

  @property
  def joined(self):
    """File positions that are one of our examples, ascending."""
    return np.flatnonzero(self.ours >= 0)


@dataclasses.dataclass
class Join:
  order: str
  train: Side
  test: Side = None   # None when the file has no test labels
  notes: list = dataclasses.field(default_factory=list)


def known_source_ids(arrays, split):
  """W/dataset.npz's `split` source ids, or None when it has none (a
  workdir of an earlier version, or data that names none: all '')."""
  ids = arrays.get(f'{split}_source_ids')
  if ids is None or not len(ids) or not np.char.str_len(
      np.asarray(ids).astype(str)).any():
    return None
  return np.asarray(ids).astype(str)


def source_integers(source_ids):
  """int64 [n] of the trailing integer of each source id, or None unless
  every id ends in one ('train_16399' -> 16399, '123' -> 123)."""
  if source_ids is None:
    return None
  out = np.empty(len(source_ids), np.int64)
  for i, name in enumerate(np.asarray(source_ids).astype(str).tolist()):
    match = _TRAILING_INTEGER.search(name)
    if not match:
      return None
    out[i] = int(match.group(1))
  return out


def _source_side(path, source_ids, size, split):
  """Side of order 'source': position p is our example whose source id ends
  in p."""
  if source_ids is None:
    raise released_lib.PublishedFileError(
        f'--order=source needs each example\'s source id, but this '
        f'workdir\'s dataset.npz has no {split}_source_ids (it was written '
        'by an earlier version, or its data names none; the train binary '
        'now writes them into a new --workdir). Use --order=position only '
        f'if {path} is in this workdir\'s (tfds) order.')
  integers = source_integers(source_ids)
  if integers is None:
    bad = [s for s in np.asarray(source_ids).astype(str).tolist()
           if not _TRAILING_INTEGER.search(s)]
    raise released_lib.PublishedFileError(
        f'--order=source needs every {split} source id to end in the '
        f'example\'s original index, but {len(bad)} of this workdir\'s '
        f'{len(source_ids)} do not (e.g. {bad[0]!r}): use --order=filename '
        f'for file names, or --order=position if {path} is in this '
        'workdir\'s order.')
  values, counts = np.unique(integers, return_counts=True)
  if (counts > 1).any():
    raise released_lib.PublishedFileError(
        f'--order=source: {int((counts > 1).sum())} original indices occur '
        f'more than once among this workdir\'s {split} source ids (e.g. '
        f'{int(values[counts > 1][0])}), so they are no order of the source: '
        f'use --order=position if {path} is in this workdir\'s order.')
  return _side(integers, size)


def _side(file_positions, size):
  """The Side of our examples at `file_positions` (-1, or >= size: none)."""
  position = np.where((file_positions >= 0) & (file_positions < size),
                      file_positions, -1)
  ours = np.full(size, -1, np.int64)
  inside = np.flatnonzero(position >= 0)
  ours[position[inside]] = inside
  return Side(ours, position.astype(np.int64))


def _base_name(name):
  return name.replace('\\', '/').rsplit('/', 1)[-1]


def _filename_side(path, names, key, candidates, split):
  """Side of order 'filename': file names against our ids (by base name)."""
  if names is None:
    raise released_lib.PublishedFileError(
        f'--order=filename needs {key} in {path}, which has none: use '
        '--order=source or position.')
  bases = [_base_name(n) for n in names.tolist()]
  lookup = {name: p for p, name in enumerate(bases)}
  if len(lookup) != len(bases):
    raise released_lib.PublishedFileError(
        f'{path}: {key} holds {len(bases) - len(lookup)} repeated file '
        'names, so they identify no example: the file is damaged.')
  best = None
  for ids in candidates:  # our source ids first, then the tfds ids
    if ids is None:
      continue
    found = np.array([lookup.get(_base_name(i), -1)
                      for i in np.asarray(ids).astype(str).tolist()], np.int64)
    if best is None or (found >= 0).sum() > (best >= 0).sum():
      best = found
  matched = best[best >= 0]
  if len(np.unique(matched)) != len(matched):
    raise released_lib.PublishedFileError(
        f'{path}: several of this workdir\'s {split} examples have the same '
        f'file name in {key}: file names identify no example here; use '
        '--order=source or position.')
  return _side(best, len(bases))


def _auto(released, arrays):
  """The order --order=auto chooses (module docstring)."""
  if released.train_filenames is not None:
    return 'filename'  # names identify examples in any order
  exported = (released.metadata or {}).get('order')
  ints = all(source_integers(known_source_ids(arrays, s)) is not None
             for s in ('train', 'test'))
  if exported == 'source' and ints or exported == 'position':
    return exported
  return 'source' if ints else 'position'


def _fix(order, arrays, released):
  exported = (released.metadata or {}).get('order')
  if exported in ORDERS and exported != order:
    return (f'its metadata says our --export wrote it in {exported} order: '
            f'use --order={exported} (or auto)')
  if order == 'source':
    return ('the file is not in the source\'s original order (use '
            '--order=position if it is in this workdir\'s tfds order, e.g. '
            'exported from a workdir without source ids), or it is of '
            'another dataset')
  if order == 'position':
    has = known_source_ids(arrays, 'train') is not None
    return ('the file is not in this workdir\'s order: the released CIFAR '
            'files are in the original order, which --order=source joins '
            + ('(this workdir has the source ids it needs)' if has else
               '(it needs source ids, which this workdir\'s dataset.npz, '
               'written by an earlier version, lacks: the train binary '
               'writes them into a new --workdir)')
            + '; or the file is of another dataset')
  return ('its file names are ours but its labels are not: it numbers the '
          'classes otherwise, or it is of another dataset')


def _check_side(path, side, split, n_ours, size, order):
  """Refuses a join that leaves our examples out of a file that should hold
  them; a note when the file covers only some of ours."""
  joined = len(side.joined)
  if n_ours <= size and joined < n_ours:
    missing = np.flatnonzero(side.position < 0)
    raise released_lib.PublishedFileError(
        f'{path}: {n_ours - joined} of this workdir\'s {n_ours} {split} '
        f'examples (e.g. #{int(missing[0])}) are none of the file\'s {size} '
        f'under --order={order}: the file is of other data, or choose '
        'another --order (source, position, filename).')
  if not joined:
    raise released_lib.PublishedFileError(
        f'{path}: none of its {size} {split} examples is one of this '
        f'workdir\'s {n_ours} under --order={order}: the file is of other '
        'data, or choose another --order.')
  if joined < n_ours:
    return (f'{path} covers {joined} of this workdir\'s {n_ours} {split} '
            'examples: compared on those')
  if n_ours < size:
    return (f'this workdir holds {n_ours} of the file\'s {size} {split} '
            'examples (a subset): compared on those')
  return None


def _check_labels(released, side, key, file_labels, our_labels, order,
                  arrays, which):
  path = released.path
  joined = side.joined
  bad = int(np.count_nonzero(file_labels[joined]
                             != our_labels[side.ours[joined]]))
  if bad:
    raise released_lib.PublishedFileError(
        f'{path}: {bad} of its {len(joined)} {key} disagree with this '
        f'workdir\'s {which} labels under --order={order}: '
        f'{_fix(order, arrays, released)}.')


def join(released, arrays, order='auto'):
  """Which of our examples each position of `released` is, labels checked.

  Args:
    released: a released_lib.Released.
    arrays: W/dataset.npz's arrays (records.read_dataset_file).
    order: one of ORDERS (module docstring).

  Returns:
    A Join (its order resolved, notes on partial coverage).
  """
  errors.choice('--order', order, ORDERS)
  if order == 'auto':
    order = _auto(released, arrays)
  path = released.path
  result = Join(order, None)
  splits = [('train', released.num_train, released.train_filenames,
             'tr_filenames', released.train_labels, 'tr_labels',
             arrays['original_train_labels'], 'clean train')]
  if released.test_labels is not None:
    splits.append(('test', released.num_test, released.test_filenames,
                   'tt_filenames', released.test_labels, 'tt_labels',
                   arrays['test_labels'], 'test'))
  for (split, size, names, names_key, file_labels, labels_key, our_labels,
       which) in splits:
    n_ours = len(our_labels)
    source_ids = known_source_ids(arrays, split)
    if order == 'source':
      side = _source_side(path, source_ids, size, split)
    elif order == 'filename':
      side = _filename_side(path, names, names_key,
                            (source_ids, arrays[f'{split}_ids']), split)
    else:
      side = _side(np.arange(n_ours, dtype=np.int64), size)
    note = _check_side(path, side, split, n_ours, size, order)
    if note:
      result.notes.append(note)
    _check_labels(released, side, labels_key, file_labels, our_labels, order,
                  arrays, which)
    setattr(result, split, side)
  return result


# --------------------------------------------------------------------------
# The order of our export


def export_order(arrays):
  """('source', train, test) when every source id of both splits ends in an
  integer and they are a permutation of 0..n-1: position p of the export is
  our example train[p] (test[p]), as in the released files; otherwise
  ('position', identity, identity)."""
  sides = []
  for split in ('train', 'test'):
    n = len(arrays[f'{split}_labels'])
    integers = source_integers(known_source_ids(arrays, split))
    if integers is None or not np.array_equal(np.sort(integers),
                                              np.arange(n)):
      return ('position', np.arange(len(arrays['train_labels'])),
              np.arange(len(arrays['test_labels'])))
    sides.append(np.argsort(integers))
  return ('source', *sides)


def is_filename(source_ids):
  """Whether source ids are file names (ImageNet's 'n01440764_10026.JPEG')."""
  if source_ids is None or not len(source_ids):
    return False
  names = np.asarray(source_ids).astype(str)
  return bool((np.char.rfind(names, '.') > 0).all())

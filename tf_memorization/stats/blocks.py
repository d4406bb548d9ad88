"""Which parts of the n x n_test influence matrix are computed, block by block.

    scope 'all'          every (training, test) pair: blocks of `block_size`
                         consecutive training examples against every test
                         example (n · n_test entries, n · k · n_test work).
    scope 'same_label'   only the pairs of a training and a test example of
                         the same label, the only pairs the paper reads (its
                         pairs are same-label and its released matrices are
                         per class): for each class c, blocks of its training
                         examples I_c against its test examples J_c. Over C
                         balanced classes that is n · n_test / C entries and
                         n · k · n_test / C work (ImageNet: 1,000 times
                         less). A class without test examples has nothing to
                         compute; its training examples get no top-k entry and
                         no largest influence (NaN).

`blocks` yields each block as (take, index, cols): `take` indexes the
training columns of a [k, n] array (a slice for consecutive examples, so no
copy), `index` their training indices, `cols` the test indices (None: all).

`Reducer` keeps what users read of the blocks: the top-k training examples of
each test example (within its class under 'same_label'), each training
example's largest influence on a test example it is compared with, and
optionally the dense matrix (scope 'all' only).
"""

import numpy as np

SCOPES = ('same_label', 'all')


def class_members(train_labels, test_labels):
  """[(class, its training indices, its test indices)], each ascending, for
  every class with training examples."""
  train_labels = np.asarray(train_labels)
  test_labels = np.asarray(test_labels)
  train_order = np.argsort(train_labels, kind='stable')
  test_order = np.argsort(test_labels, kind='stable')
  classes, train_starts = np.unique(train_labels[train_order],
                                    return_index=True)
  train_bounds = np.r_[train_starts, len(train_order)]
  test_sorted = test_labels[test_order]
  lo = np.searchsorted(test_sorted, classes, side='left')
  hi = np.searchsorted(test_sorted, classes, side='right')
  return [(c, train_order[train_bounds[i]:train_bounds[i + 1]],
           test_order[lo[i]:hi[i]]) for i, c in enumerate(classes.tolist())]


def blocks(train_labels, test_labels, block_size, scope):
  """Yields (take, index, cols) for every block to compute (module
  docstring), training examples in ascending order within a block."""
  if scope not in SCOPES:
    raise ValueError(f'influence scope {scope!r}: choose from {SCOPES}.')
  n = len(train_labels)
  if scope == 'all':
    for start in range(0, n, block_size):
      stop = min(start + block_size, n)
      yield slice(start, stop), np.arange(start, stop), None
    return
  for _, rows, cols in class_members(train_labels, test_labels):
    if not len(cols):
      continue
    for start in range(0, len(rows), block_size):
      part = rows[start:start + block_size]
      yield part, part, cols


def num_entries(train_labels, test_labels, scope):
  """How many (training, test) entries the scope computes."""
  if scope == 'all':
    return len(train_labels) * len(test_labels)
  return sum(len(rows) * len(cols)
             for _, rows, cols in class_members(train_labels, test_labels))


def nonzero_2d(condition):
  """np.nonzero of a C-contiguous 2-D bool array, in the same (row-major)
  order; via the flat indices, several times faster on a sparse block."""
  flat = np.flatnonzero(condition)
  if not condition.shape[1]:
    return flat, flat
  return np.divmod(flat, condition.shape[1])


def merge_topk(best_val, best_idx, block, index, topk):
  """Merges a block [b, m] into the running top-k of its m test examples.

  Args:
    best_val, best_idx: [m, topk] the running top-k of the block's test
      examples (updated in place).
    block: float32 [b, m].
    index: int [b], the training index of each row.
    topk: entries kept per test example.

  Only entries that beat their test example's current k-th best are looked
  at (a sparse set after the first blocks), so merging costs about one
  comparison pass over the block.
  """
  beats = block > np.ascontiguousarray(best_val[:, -1])[None, :]
  if not np.isfinite(best_val[:, -1]).all():
    # Early blocks: (almost) every entry is a candidate; partition densely.
    kk = min(topk, block.shape[0])
    rows = np.argpartition(-block, kk - 1, axis=0)[:kk]
    cols = np.broadcast_to(np.arange(block.shape[1]), rows.shape)
    rows, cols = rows.ravel(), cols.ravel()
    take = beats[rows, cols]
    rows, cols = rows[take], cols[take]
  else:
    rows, cols = nonzero_2d(beats)
  if not len(rows):
    return
  vals = block[rows, cols]
  order = np.lexsort((-vals, cols))            # by test example, best first
  rows, cols, vals = rows[order], cols[order], vals[order]
  group_starts = np.r_[0, np.flatnonzero(np.diff(cols)) + 1]
  group_sizes = np.diff(np.r_[group_starts, len(cols)])
  rank = np.arange(len(cols)) - np.repeat(group_starts, group_sizes)
  group = np.repeat(np.arange(len(group_starts)), group_sizes)
  keep = rank < topk
  touched = cols[group_starts]
  cand_val = np.full((len(touched), topk), -np.inf, np.float32)
  cand_idx = np.full((len(touched), topk), -1, np.int64)
  cand_val[group[keep], rank[keep]] = vals[keep]
  cand_idx[group[keep], rank[keep]] = np.asarray(index)[rows[keep]]
  all_val = np.concatenate([best_val[touched], cand_val], axis=1)
  all_idx = np.concatenate([best_idx[touched], cand_idx], axis=1)
  order = np.argsort(-all_val, axis=1, kind='stable')[:, :topk]
  best_val[touched] = np.take_along_axis(all_val, order, axis=1)
  best_idx[touched] = np.take_along_axis(all_idx, order, axis=1)


class Reducer:
  """What the full view keeps of each block: top-k per test example, each
  training example's largest influence, the dense matrix."""

  def __init__(self, n, n_test, topk, dense_path):
    self.topk = topk
    self.best_val = np.full((n_test, topk), -np.inf, np.float32)
    self.best_idx = np.full((n_test, topk), -1, np.int64)
    self.max_influence = np.full(n, np.nan, np.float32)
    self.dense = None
    if dense_path is not None:
      self.dense = np.lib.format.open_memmap(
          dense_path, mode='w+', dtype=np.float16, shape=(n, n_test))

  def add(self, block, take, index, cols, defined):
    """A block [len(index), m]: rows `take` / `index`, test columns `cols`
    (None: all), `defined` the rows with an estimate."""
    if not defined.all():
      block[~defined] = -np.inf  # never a top-k entry, a maximum or a pair
    if self.dense is not None:
      if cols is not None:
        raise ValueError('the dense influence matrix needs scope \'all\'.')
      self.dense[take] = np.where(defined[:, None], block, np.nan)
    if block.shape[1]:
      self.max_influence[take] = np.where(defined, block.max(axis=1), np.nan)
    if not self.topk:
      return
    if cols is None:
      merge_topk(self.best_val, self.best_idx, block, index, self.topk)
      return
    best_val, best_idx = self.best_val[cols], self.best_idx[cols]
    merge_topk(best_val, best_idx, block, index, self.topk)
    self.best_val[cols], self.best_idx[cols] = best_val, best_idx

  def finish(self):
    if self.dense is not None:
      self.dense.flush()
      self.dense = None
    finite = np.isfinite(self.best_val)
    self.best_idx[~finite] = -1
    self.best_val[~finite] = np.nan

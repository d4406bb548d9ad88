"""Bit-packed [k, n] bool matrices: masks and correctness at 1 bit a value.

At ImageNet's shape (k = 2,000 trials, n = 1.28M examples) a bool matrix is
2.6 GB; packed it is 320 MB, the size the records already store it in
(np.packbits of each trial's row, most significant bit first). `BitMatrix`
keeps the packed rows and hands out what the statistics read:

    m[t]              row t, bool [n]
    m[rows]           those rows, a BitMatrix (rows: slice, indices, bools)
    m[:, a:b]         columns a..b-1 of every row, bool [k, b - a]
    m[rows, cols]     cols an index array (or a slice): bool
    m.sum(axis=0)     in-trial counts per example (axis=1: per trial)
    np.asarray(m)     the whole bool matrix (small inputs only)

so code that reads masks a block of columns at a time (the estimator's
passes) works on either a bool array or a BitMatrix, and holds only the
block unpacked. `as_bool` passes a BitMatrix through and turns anything else
into a bool array.
"""

import numpy as np

# Columns unpacked at a time by the reductions (a block of k x this bools).
_COLUMNS = 1 << 16


class BitMatrix:
  """A bool [k, n] matrix held bit-packed along n (module docstring)."""

  ndim = 2
  dtype = np.dtype(bool)

  def __init__(self, packed, n):
    packed = np.asarray(packed, np.uint8)
    if packed.ndim != 2 or packed.shape[1] != (n + 7) // 8:
      raise ValueError(f'packed rows {packed.shape} do not hold {n} bits '
                       'each.')
    self.packed = packed
    self.n = int(n)

  @classmethod
  def empty(cls, k, n):
    return cls(np.zeros((k, (n + 7) // 8), np.uint8), n)

  @classmethod
  def from_bool(cls, values):
    values = np.asarray(values, bool)
    return cls(np.packbits(values, axis=1), values.shape[1])

  @property
  def shape(self):
    return (self.packed.shape[0], self.n)

  @property
  def size(self):
    return self.packed.shape[0] * self.n

  @property
  def nbytes(self):
    return self.packed.nbytes

  def __len__(self):
    return self.packed.shape[0]

  def _columns(self, packed, cols):
    """The bool columns `cols` (a slice or indices) of packed rows."""
    if isinstance(cols, slice):
      start, stop, step = cols.indices(self.n)
      if step != 1:
        return self._columns(packed, np.arange(start, stop, step))
      if stop <= start:
        return np.zeros(packed.shape[:-1] + (0,), bool)
      first, last = start // 8, (stop + 7) // 8
      bits = np.unpackbits(packed[..., first:last], axis=-1)
      offset = start - 8 * first
      return bits[..., offset:offset + stop - start].view(bool)
    cols = np.asarray(cols)
    if cols.dtype == bool:
      cols = np.flatnonzero(cols)
    cols = cols.astype(np.int64)
    if len(cols) and (cols.min() < -self.n or cols.max() >= self.n):
      raise IndexError(f'column index out of range for {self.n} columns.')
    cols = np.where(cols < 0, cols + self.n, cols)
    shift = (7 - (cols & 7)).astype(np.uint8)
    return ((packed[..., cols >> 3] >> shift) & 1).view(bool)

  def __getitem__(self, key):
    if isinstance(key, tuple):
      if len(key) != 2:
        raise IndexError(f'a BitMatrix takes [rows] or [rows, cols], not '
                         f'{len(key)} indices.')
      rows, cols = key
      return self._columns(self.packed[rows], cols)
    if isinstance(key, (int, np.integer)):
      return np.unpackbits(self.packed[key], count=self.n).view(bool)
    return BitMatrix(self.packed[key], self.n)

  def __array__(self, dtype=None, copy=None):
    del copy  # always a new array
    dense = np.unpackbits(self.packed, axis=1, count=self.n).view(bool)
    return dense if dtype is None else dense.astype(dtype)

  def astype(self, dtype):
    return np.asarray(self, dtype)

  def sum(self, axis=None, dtype=np.int64):
    """Counts of True: per column (axis=0), per row (axis=1), or all."""
    if axis == 1:
      return np.array([int(np.unpackbits(row, count=self.n).sum())
                       for row in self.packed], dtype)
    counts = np.zeros(self.n, np.int64)
    for start in range(0, self.n, _COLUMNS):
      block = self[:, start:start + _COLUMNS]
      counts[start:start + block.shape[1]] = np.count_nonzero(block, axis=0)
    if axis is None:
      return int(counts.sum())
    if axis != 0:
      raise ValueError(f'axis {axis}: a BitMatrix sums over 0, 1 or all.')
    return counts.astype(dtype)


def as_columns(values):
  """Anything read a block of columns at a time ([:, a:b]: a BitMatrix, a
  spill of the records) as it is; anything else as an array."""
  if isinstance(values, np.ndarray) or not (
      hasattr(values, 'shape') and hasattr(values, 'dtype')
      and hasattr(values, '__getitem__')):
    return np.asarray(values)
  return values


def as_bool(values):
  """A BitMatrix as it is; anything else as a bool array."""
  return values if isinstance(values, BitMatrix) else np.asarray(values,
                                                                 bool)


def column_counts(masks, correct, chunk=_COLUMNS):
  """(k_in, x_in, x_all) per column: in-trials, correct in-trials, correct
  trials, int64 [n], from bool arrays or BitMatrix, a block of columns at a
  time."""
  n = masks.shape[1]
  out = np.zeros((3, n), np.int64)
  for start in range(0, n, chunk):
    m = masks[:, start:start + chunk]
    v = correct[:, start:start + chunk]
    part = slice(start, start + m.shape[1])
    out[0, part] = np.count_nonzero(m, axis=0)
    out[1, part] = np.count_nonzero(m & v, axis=0)
    out[2, part] = np.count_nonzero(v, axis=0)
  return out[0], out[1], out[2]


def row_counts(masks, correct, rows=256):
  """(in-subset, correct in-subset, correct held-out) per row, int64 [k]."""
  k = masks.shape[0]
  out = np.zeros((3, k), np.int64)
  for start in range(0, k, rows):
    m = np.asarray(masks[start:start + rows], bool)
    v = np.asarray(correct[start:start + rows], bool)
    part = slice(start, start + len(m))
    out[0, part] = np.count_nonzero(m, axis=1)
    out[1, part] = np.count_nonzero(m & v, axis=1)
    out[2, part] = np.count_nonzero(~m & v, axis=1)
  return out[0], out[1], out[2]

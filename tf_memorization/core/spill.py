"""A [k, n] array written a row at a time, read a block of columns at a time.

The records arrive one trial (row) at a time; the per-example statistics
read all k trials of a block of examples (columns). At ImageNet's shape
(k = 2,000, n = 1.28M) one float16 field is 5.1 GB, which memory should not
hold. `ColumnSpill` writes each row into an anonymous temporary file (in
$TMPDIR, unlinked at once: nothing is left behind, even by a killed run),
laid out in column blocks of `width` examples, each block [k, width]
contiguous:

    offset(t, j) = block(j) · k · width · itemsize
                   + t · width_of_block · itemsize + (j mod width) · itemsize

so a block of columns is one read of k · width values and a row is n /
width short reads. Reading returns numpy arrays (never a memory map, so the
process holds only what it asked for); the last block read is kept, so a
pass over the columns in any chunk size reads each block once.

    spill[:, a:b]     bool/float [k, b - a]
    spill[rows]       [len(rows), n] (rows: slice, indices; an int: [n])
    spill[rows, a:b]  both
    np.asarray(spill) everything (small inputs only)
"""

import errno
import os
import tempfile

import numpy as np

from tf_memorization.core import errors

WIDTH = 8192
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class ColumnSpill:
  """A [k, n] array of `dtype` on a temporary file (module docstring)."""

  ndim = 2

  def __init__(self, k, n, dtype, width=WIDTH, what='values'):
    self.k_alloc, self.n = int(k), int(n)
    self.rows = 0  # rows written (the first `rows` rows exist)
    self.dtype = np.dtype(dtype)
    self.width = max(1, min(int(width), max(self.n, 1)))
    self.what = what
    try:
      self._file = tempfile.TemporaryFile(prefix='tf_memorization_spill_')
    except OSError as e:
      raise errors.UserError(
          f'Cannot make a temporary file in {tempfile.gettempdir()} for the '
          f'estimator\'s copy of the {what_size(self)} ({e.strerror}): set '
          'TMPDIR to a writable folder with room for it.') from e
    self._fd = self._file.fileno()
    self._cached = (None, None)

  # --- layout
  def _block(self, b):
    """(file offset, width) of column block b."""
    start = b * self.width
    width = min(self.width, self.n - start)
    return b * self.k_alloc * self.width * self.dtype.itemsize, width

  @property
  def num_blocks(self):
    return (self.n + self.width - 1) // self.width

  @property
  def shape(self):
    return (self.rows, self.n)

  @property
  def size(self):
    return self.rows * self.n

  def __len__(self):
    return self.rows

  # --- writing
  def append(self, values):
    """Writes the next row ([n] values, cast to the spill's dtype)."""
    if self.rows >= self.k_alloc:
      raise ValueError(f'the spill of {self.what} holds {self.k_alloc} rows.')
    row = np.ascontiguousarray(values, self.dtype)
    if row.shape != (self.n,):
      raise ValueError(f'a row of {self.what} needs shape ({self.n},), not '
                       f'{row.shape}.')
    item = self.dtype.itemsize
    try:
      for b in range(self.num_blocks):
        offset, width = self._block(b)
        start = b * self.width
        os.pwrite(self._fd, row[start:start + width].data,
                  offset + self.rows * width * item)
    except OSError as e:
      if e.errno not in _NO_SPACE:
        raise
      raise errors.NoSpaceError(
          f'No space left in {tempfile.gettempdir()} for the estimator\'s '
          f'temporary copy of the {what_size(self)}: set TMPDIR to a folder '
          'with more free space (the records are untouched), then run the '
          'command again.', e.errno) from e
    self.rows += 1
    self._cached = (None, None)

  # --- reading
  def _read_block(self, b):
    if self._cached[0] == b:
      return self._cached[1]
    offset, width = self._block(b)
    nbytes = self.rows * width * self.dtype.itemsize
    data = bytearray(nbytes)
    view = memoryview(data)
    done = 0
    while done < nbytes:
      got = os.preadv(self._fd, [view[done:]], offset + done)
      if got <= 0:
        raise OSError(f'the spill of {self.what} ended early.')
      done += got
    block = np.frombuffer(data, self.dtype).reshape(self.rows, width)
    self._cached = (b, block)
    return block

  def _read_rows(self, rows):
    rows = np.arange(self.rows)[rows]
    out = np.empty((len(rows), self.n), self.dtype)
    item = self.dtype.itemsize
    for b in range(self.num_blocks):
      offset, width = self._block(b)
      start = b * self.width
      for r, t in enumerate(rows.tolist()):
        out[r, start:start + width] = np.frombuffer(
            os.pread(self._fd, width * item, offset + t * width * item),
            self.dtype)
    return out

  def _read_columns(self, rows, cols):
    start, stop, step = cols.indices(self.n)
    if step != 1:
      raise IndexError('a ColumnSpill reads column slices of step 1.')
    parts = []
    for b in range(start // self.width, (max(stop, start + 1) - 1)
                   // self.width + 1):
      if stop <= start:
        break
      block = self._read_block(b)
      lo = max(start, b * self.width) - b * self.width
      hi = min(stop, (b + 1) * self.width) - b * self.width
      parts.append(block[rows, lo:hi])
    if not parts:
      return np.zeros((len(np.arange(self.rows)[rows]), 0), self.dtype)
    return parts[0].copy() if len(parts) == 1 else np.concatenate(parts,
                                                                  axis=1)

  def __getitem__(self, key):
    if isinstance(key, tuple):
      rows, cols = key
      if isinstance(cols, slice):
        return self._read_columns(rows, cols)
      return self._read_rows(rows)[:, cols]
    if isinstance(key, (int, np.integer)):
      return self._read_rows([key])[0]
    return self._read_rows(key)

  def __array__(self, dtype=None, copy=None):
    del copy
    dense = self[:, :]
    return dense if dtype is None else dense.astype(dtype)

  def astype(self, dtype):
    return np.asarray(self, dtype)

  def close(self):
    self._cached = (None, None)
    self._file.close()


def what_size(spill):
  gib = spill.k_alloc * spill.n * spill.dtype.itemsize / 2 ** 30
  return f'{spill.what} ({gib:.1f} GiB)'

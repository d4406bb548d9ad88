"""Rows of a .npy file read by offset: an array of any size, a few rows at
a time, without loading or mapping the whole file.

    rows = NpyRows(path, what='--train_logits')
    rows.shape, rows.dtype
    rows[a:b]          a fresh in-memory array of rows a..b-1

The file is read with plain positioned reads (no mmap): what a process
holds is the rows it asked for, so importing a 40 GB logits file keeps
the resident memory of one chunk, not of the pages it has passed over.
Only local regular files of numeric or boolean dtype in C order are read;
anything else (an object array, a pickle, a Fortran-ordered array, a
truncated file) is one UserError naming the file and the fix.
"""

import os

import numpy as np

from tf_memorization.core import errors
from tf_memorization.core import storage

_FIX = ('Save it with np.save(path, array) from a numeric numpy array (e.g. '
        'logits.astype(np.float16)).')


def _refuse(what, path, why, fix=_FIX):
  raise errors.UserError(f'{what}={path} {why}. {fix}')


class NpyRows:
  """A C-ordered .npy array read row block by row block (see the module)."""

  def __init__(self, path, what):
    self.path, self.what = path, what
    if not path:
      raise errors.UserError(f'{what} is required: a .npy file.')
    if not os.path.exists(path):
      _refuse(what, path, 'does not exist', 'Give the path of an existing '
              '.npy file.')
    try:
      with storage.open_regular(path) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
          shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
          shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        self.offset = f.tell()
        size = os.fstat(f.fileno()).st_size
    except errors.RecordError as e:
      raise errors.UserError(f'{what}: {e}') from e
    except (ValueError, OSError, EOFError) as e:
      _refuse(what, path, f'is not a .npy file ({type(e).__name__}: {e})')
    if dtype.hasobject or dtype.kind not in 'biuf' or dtype.fields:
      _refuse(what, path, f'holds a {dtype} array, not numbers (an object '
              'array is never read: it could run code)')
    if fortran and len(shape) > 1:
      _refuse(what, path, 'is stored in Fortran order', 'Save it with '
              'np.save(path, np.ascontiguousarray(array)).')
    self.shape, self.dtype = tuple(shape), dtype
    self.row_shape = self.shape[1:]
    self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * (
        dtype.itemsize)
    expected = self.offset + (self.shape[0] if self.shape else 1) * (
        self.row_bytes if self.shape else dtype.itemsize)
    if size < expected:
      _refuse(what, path, f'is truncated ({size:,} bytes, its header '
              f'promises {expected:,})', 'Write it again.')

  def __len__(self):
    return self.shape[0] if self.shape else 0

  def __getitem__(self, rows):
    if not isinstance(rows, slice) or rows.step not in (None, 1):
      raise TypeError('NpyRows reads contiguous row slices only.')
    start, stop, _ = rows.indices(len(self))
    return self._read(self.offset + start * self.row_bytes,
                      (max(0, stop - start),) + self.row_shape)

  def block(self, index, start, stop):
    """Rows start..stop-1 of entry `index` of a 3-D (or more) array, i.e.
    array[index, start:stop] (one trial's logits of some examples)."""
    row = self.row_bytes // self.shape[1]
    return self._read(self.offset + index * self.row_bytes + start * row,
                      (stop - start,) + self.shape[2:])

  def _read(self, offset, shape):
    """A fresh array of `shape` read from byte `offset` of the file."""
    out = np.empty(shape, self.dtype)
    with open(self.path, 'rb') as f:
      f.seek(offset)
      read = f.readinto(memoryview(out.reshape(-1).view(np.uint8)))
    if read != out.nbytes:
      _refuse(self.what, self.path, 'changed while it was read', 'Write it '
              'again, then import again.')
    return out

  def read_all(self):
    """The whole array (for the small ones: labels, a mask)."""
    if not self.shape:
      with open(self.path, 'rb') as f:
        f.seek(self.offset)
        return np.frombuffer(f.read(self.dtype.itemsize), self.dtype)[0]
    return self[:]

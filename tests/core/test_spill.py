"""core/spill.py: rows written in, blocks of columns read out, exactly."""

import errno
import os
import tempfile

import numpy as np
import pytest

from tf_memorization.core import errors
from tf_memorization.core import spill


def _filled(k, n, width, dtype=np.float16, rows=None, seed=0):
  rng = np.random.default_rng(seed)
  dense = rng.normal(0, 3, (k, n)).astype(dtype)
  store = spill.ColumnSpill(k, n, dtype, width=width, what='test values')
  for row in dense[:rows]:
    store.append(row)
  return dense[:rows], store


@pytest.mark.parametrize('width', [1, 3, 8, 50])
def test_what_is_read_is_what_was_written(width):
  dense, store = _filled(7, 23, width)
  try:
    assert store.shape == (7, 23) and store.dtype == np.float16
    np.testing.assert_array_equal(np.asarray(store), dense)
    for cols in (slice(0, 23), slice(2, 3), slice(5, 19), slice(22, None),
                 slice(4, 4)):
      np.testing.assert_array_equal(store[:, cols], dense[:, cols])
      np.testing.assert_array_equal(store[1:6:2, cols], dense[1:6:2, cols])
    for rows in (slice(0, 3), np.array([6, 0, 3]), [2]):
      np.testing.assert_array_equal(store[rows], dense[rows])
    np.testing.assert_array_equal(store[4], dense[4])
    np.testing.assert_array_equal(store[np.array([1, 5]), np.array([0, 22])],
                                  dense[np.array([1, 5])][:, [0, 22]])
    # A pass in any chunk size reads every value once and right.
    for chunk in (2, 5, 11):
      parts = [store[:, a:a + chunk] for a in range(0, 23, chunk)]
      np.testing.assert_array_equal(np.concatenate(parts, axis=1), dense)
  finally:
    store.close()


def test_fewer_rows_than_allocated_and_integer_fields():
  # Diverged trials skipped: 5 of 8 rows written; the spill is [5, n].
  dense, store = _filled(8, 10, 4, dtype=np.int32, rows=5, seed=2)
  try:
    assert store.shape == (5, 10)
    np.testing.assert_array_equal(store[:, 3:9], dense[:, 3:9])
    with pytest.raises(ValueError, match=r'shape \(10,\)'):
      store.append(np.zeros(9))
  finally:
    store.close()


def test_the_temporary_file_leaves_nothing_behind(tmp_path, monkeypatch):
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
  _, store = _filled(3, 40, 16)
  assert os.listdir(tmp_path) == []  # unlinked at once
  store.close()


def test_a_full_disk_is_one_error_naming_the_fix(monkeypatch):
  store = spill.ColumnSpill(2, 5, np.float16, what='train_logodds')

  def full(*args):
    del args
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(os, 'pwrite', full)
  with pytest.raises(errors.NoSpaceError) as raised:
    store.append(np.zeros(5))
  message = str(raised.value)
  assert 'train_logodds' in message and 'TMPDIR' in message
  assert store.shape == (0, 5)
  store.close()

"""workdir/estimates.cells: every column written as its values' cells (6
significant digits, '' where not finite), whichever path formats it."""

import numpy as np
import pytest

from tf_memorization.workdir import estimates


def _one_by_one(column):
  out = []
  for v in np.asarray(column).tolist():
    if isinstance(v, float):
      out.append(f'{v:.6g}' if np.isfinite(v) else '')
    else:
      out.append(str(v))
  return out


_RNG = np.random.default_rng(0)


@pytest.mark.parametrize('column', [
    _RNG.normal(size=5000),                                   # distinct
    _RNG.normal(size=5000).astype(np.float32),
    _RNG.normal(size=5000).astype(np.float16),
    np.where(_RNG.random(5000) < 0.2, np.nan,                 # few values
             _RNG.integers(0, 64, 5000) / 64),
    np.where(_RNG.random(5000) < 0.5, -np.inf, np.inf),
    np.array([np.nan] * 3000 + [1e-300, 5e-324, -0.0, 0.0, 123456789.0]),
    _RNG.integers(-5, 10**12, 5000),
    _RNG.integers(0, 3, 5000).astype(np.uint8),
    np.array([True, False] * 2000),
    [0.1, 2, float('nan')],                                   # a list
    np.zeros(0),
])
def test_cells_are_each_value_formatted(column):
  assert estimates.cells(column) == _one_by_one(column)


def test_repeated_values_read_back_as_written():
  values = np.repeat(np.array([1 / 3, 2 / 3, np.nan, 1.0]), 2000)
  written = estimates.as_written(estimates.cells(values))
  np.testing.assert_array_equal(
      written, np.repeat([0.333333, 0.666667, np.nan, 1.0], 2000))

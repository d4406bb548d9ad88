"""stats/ranks.py: average ranks along rows and the rank AUC, against
hand-computed cases and brute force. The correlations are tested where
their users are: pearson, spearman and cosine against brute force and
scipy in test_proxies.py, correlations by hand in test_scores.py."""

import itertools
import math

import numpy as np
import pytest

from tf_memorization.stats import ranks


def test_average_ranks_by_hand():
  np.testing.assert_array_equal(ranks.average_ranks([[2., 2.], [5., 1.]]),
                                [[1.5, 1.5], [2., 1.]])
  # NaNs sort last, each its own rank; the others rank among themselves.
  np.testing.assert_array_equal(ranks.average_ranks([np.nan, 0., np.nan]),
                                [2., 1., 3.])


def test_rows_rank_as_each_row_alone():
  rng = np.random.default_rng(0)
  values = rng.integers(0, 4, size=(7, 25)).astype(float)
  values[rng.random(values.shape) < 0.1] = np.nan
  rows = ranks.average_ranks(values)
  for row, got in zip(values, rows):
    np.testing.assert_array_equal(ranks.average_ranks(row), got)


def _brute_auc(values, positive, negative):
  """P(pos > neg) + P(pos = neg) / 2 over every pair."""
  pos = [v for v, p in zip(values, positive) if p]
  neg = [v for v, n in zip(values, negative) if n]
  if not pos or not neg:
    return math.nan
  wins = sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg))
  return wins / (len(pos) * len(neg))


def test_rank_auc_against_every_pair_with_ties_and_left_out_entries():
  rng = np.random.default_rng(1)
  values = rng.integers(0, 5, size=(6, 30)).astype(float)
  positive = rng.random(values.shape) < 0.4
  negative = ~positive & (rng.random(values.shape) < 0.8)
  values[~positive & ~negative] = np.nan  # in neither set: left out
  positive[0] = False  # a row without positives: NaN
  got = ranks.rank_auc(values, positive, negative)
  want = [_brute_auc(*row) for row in zip(values, positive, negative)]
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
  assert math.isnan(got[0])
  assert ranks.rank_auc([1., 2., 2., 3.], [False, True, False, True]) == (
      pytest.approx(0.875))


@pytest.mark.parametrize('k,m,seed', [(1, 5, 0), (2, 7, 1), (9, 300, 2),
                                      (64, 1000, 3), (2000, 40, 4)])
def test_column_auc_float16_is_rank_auc(k, m, seed):
  rng = np.random.default_rng(seed)
  values = rng.normal(0, 2, (k, m)).astype(np.float16)
  # Ties of every kind: few distinct values, 0.0 against -0.0, infinities,
  # the float16 extremes.
  few = rng.random((k, m)) < 0.3
  values[few] = rng.integers(-2, 3, few.sum()).astype(np.float16)
  values[rng.random((k, m)) < 0.05] = np.float16(-0.0)
  values[rng.random((k, m)) < 0.02] = np.inf
  values[rng.random((k, m)) < 0.02] = -np.inf
  values[rng.random((k, m)) < 0.02] = np.finfo(np.float16).max
  positive = rng.random((k, m)) < 0.7
  positive[:, :2] = [True, False]   # columns with no negative / positive
  got = ranks.column_auc_float16(values, positive)
  want = ranks.rank_auc(values.T.astype(np.float64), positive.T,
                        ~positive.T)
  np.testing.assert_array_equal(got, want)
  assert np.isnan(got[:2]).all()


def test_column_auc_float16_by_hand():
  # One example, 5 trials: members score 3, 1 and 1; the others 1 and 0.
  # Pairs (member > other): 3>1, 3>0, 1=1 (1/2), 1>0, 1=1 (1/2), 1>0 -> 5/6.
  values = np.array([[3], [1], [1], [1], [0]], np.float16)
  positive = np.array([[True], [True], [True], [False], [False]])
  assert ranks.column_auc_float16(values, positive)[0] == pytest.approx(5 / 6)

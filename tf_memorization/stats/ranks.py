"""Rank statistics, written once: average ranks, the rank (Mann–Whitney)
AUC, and the correlations between two score vectors.

    average_ranks(values)   1-based ranks along the last axis, ties sharing
                            the mean of their ranks (NaNs sort last, each
                            its own rank)
    rank_auc(values, positive, negative)
                            per row, P(a positive scores above a negative),
                            ties counting 1/2, from average ranks
    pearson, spearman, cosine
                            over the pairs finite on both sides; NaN with
                            fewer than MIN_PAIRS pairs or a constant side
    correlations(a, b)      (Pearson, Spearman) as scipy computes them: the
                            estimate's tables (memorization against
                            influence, convergence, split halves, the
                            experiments, the comparison with the released
                            scores) have always been written from scipy's
                            figures, and stay so bit for bit

LiRA's per-example AUC (membership.py), its per-trial AUC
(membership_eval.py), the proxies' correlations and the label-issue AUC
(proxies.py) use the numpy functions here, which handle 2-D arrays row by
row without a Python loop.
"""

import math

import numpy as np

# Fewer finite pairs than this: every correlation is NaN.
MIN_PAIRS = 3
# Values per block of column_auc_float16 (its temporaries stay in cache).
_AUC_VALUES = 1_000_000


def average_ranks(values):
  """1-based ranks along the last axis of `values` (1-D or 2-D), ties
  sharing the mean of their ranks.

  NaNs sort last, each unequal to every value (their ranks mean nothing;
  the others' ranks are among the non-NaN values).
  """
  values = np.asarray(values)
  order, twice = _sorted_ranks(values)
  ranks = np.empty(order.shape)
  np.put_along_axis(ranks, order, twice / 2.0, axis=1)
  return ranks.reshape(values.shape)


def _sorted_ranks(values):
  """(order, twice the 1-based average rank at each sorted position) of
  the rows of `values` (its last axis), both 2-D int64."""
  values = np.asarray(values, np.float64)
  rows = values.reshape(-1, values.shape[-1]) if values.ndim else (
      values.reshape(1, 1))
  order = np.argsort(rows, axis=1, kind='stable')
  return order, _twice_ranks(np.take_along_axis(rows, order, axis=1))


def _twice_ranks(ordered):
  """Twice the 1-based average rank at each position of rows sorted along
  axis 1 (a tie shares the mean of its first and last positions)."""
  m = ordered.shape[1]
  position = np.arange(m, dtype=np.int32 if m < 2**30 else np.int64)
  first = np.ones(ordered.shape, bool)
  first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
  last = np.ones(ordered.shape, bool)
  last[:, :-1] = first[:, 1:]
  start = np.maximum.accumulate(np.where(first, position, 0), axis=1)
  end = np.minimum.accumulate(np.where(last, position, m)[:, ::-1],
                              axis=1)[:, ::-1]
  return start.astype(np.int64) + end + 2


def rank_auc(values, positive, negative=None):
  """The Mann–Whitney AUC along the last axis: P(positive > negative) +
  ½ P(=), from average ranks.

  Args:
    values: float [..., m]; an entry in neither set must be NaN (it is left
      out).
    positive: bool, the shape of values.
    negative: bool, the shape of values (default: ~positive).

  Returns:
    float [...]: NaN where a row has no positive or no negative.
  """
  values = np.asarray(values, np.float64)
  positive = np.asarray(positive, bool)
  negative = ~positive if negative is None else np.asarray(negative, bool)
  # The positives' rank sum, gathered in sorted order (exact: integers).
  order, twice = _sorted_ranks(values)
  sorted_positive = np.take_along_axis(
      positive.reshape(order.shape), order, axis=1)
  rank_sum = (np.where(sorted_positive, twice, 0).sum(-1) / 2.0).reshape(
      positive.shape[:-1])
  return _auc(rank_sum, positive.sum(-1).astype(np.float64),
              negative.sum(-1).astype(np.float64))


def _auc(rank_sum, n_pos, n_neg):
  """The Mann–Whitney AUC from the positives' rank sum: NaN where a side is
  empty."""
  with np.errstate(invalid='ignore', divide='ignore'):
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
  return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def column_auc_float16(values, positive):
  """rank_auc(values.T, positive.T) of float16 values without NaN, per
  column of [k, m] arrays (the records' log-odds: trials x examples), by a
  faster route: each value's order-preserving 16-bit code and its side
  packed in one uint32 key, sorted per example (numpy's vectorised sort),
  ties found on the codes. The same figures, exactly (the rank sums are
  integers).

  Args:
    values: float16 [k, m], no NaN (infinities are ranked).
    positive: bool [k, m]; every other entry is a negative.

  Returns:
    float64 [m]: NaN where a column has no positive or no negative.
  """
  k, m = values.shape
  auc = np.full(m, np.nan)
  width = max(1, _AUC_VALUES // max(k, 1))
  for start in range(0, m, width):
    columns = slice(start, start + width)
    raw = np.ascontiguousarray(values[:, columns]).view(np.uint16)
    raw = np.where(raw == 0x8000, np.uint16(0), raw)  # -0.0 ties 0.0
    codes = np.where(raw & 0x8000, ~raw, raw | 0x8000).astype(np.uint32)
    member = np.asarray(positive[:, columns], bool)
    keys = np.ascontiguousarray(((codes << 1) | member).T)
    keys.sort(axis=1)
    # Twice each positive's 1-based average rank (ties on the codes),
    # summed exactly.
    twice = _twice_ranks(keys >> 1)
    rank_sum = np.where(keys & 1, twice, 0).sum(1, dtype=np.int64) / 2
    n_pos = member.sum(0).astype(np.float64)
    auc[columns] = _auc(rank_sum, n_pos, k - n_pos)
  return auc


def finite_pairs(x, y):
  """(x, y) as float64 vectors, kept where both are finite."""
  x = np.asarray(x, np.float64).ravel()
  y = np.asarray(y, np.float64).ravel()
  if x.shape != y.shape:
    raise ValueError(f'the two sides have {x.size} and {y.size} values.')
  ok = np.isfinite(x) & np.isfinite(y)
  return x[ok], y[ok]


def _defined(x, y):
  """At least MIN_PAIRS pairs and neither side constant."""
  return len(x) >= MIN_PAIRS and np.ptp(x) > 0 and np.ptp(y) > 0


def _pearson(x, y):
  x = x - x.mean()
  y = y - y.mean()
  r = float(np.dot(x, y) / math.sqrt(float(np.dot(x, x)) *
                                     float(np.dot(y, y))))
  return min(1.0, max(-1.0, r))


def pearson(x, y):
  """Pearson correlation over the pairs where both are finite (NaN with
  fewer than MIN_PAIRS pairs or a constant side)."""
  x, y = finite_pairs(x, y)
  return _pearson(x, y) if _defined(x, y) else float('nan')


def spearman(x, y):
  """Spearman correlation: the Pearson of the average ranks (ties share the
  mean of their ranks) over the pairs where both are finite (NaN with fewer
  than MIN_PAIRS pairs or a constant side)."""
  x, y = finite_pairs(x, y)
  if not _defined(x, y):
    return float('nan')
  return _pearson(average_ranks(x), average_ranks(y))


def cosine(x, y):
  """x·y / (|x| |y|) over the pairs where both are finite (NaN with fewer
  than MIN_PAIRS pairs or an all-zero side). Not centred: it depends on
  where each side's zero lies."""
  x, y = finite_pairs(x, y)
  norm = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
  if len(x) < MIN_PAIRS or norm == 0:
    return float('nan')
  return min(1.0, max(-1.0, float(np.dot(x, y)) / norm))


def correlations(a, b):
  """(Pearson, Spearman) over the entries finite in both, as scipy computes
  them (NaN with fewer than MIN_PAIRS entries or a constant side)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  a, b = finite_pairs(a, b)
  if not _defined(a, b):
    return float('nan'), float('nan')
  return (float(stats.pearsonr(a, b)[0]), float(stats.spearmanr(a, b)[0]))

"""Which estimates to believe: tests, false-discovery control and nulls.

Every score here is a difference of two means over disjoint sets of trials:
for a pair (i, j), the test example j's correctness over the k_in trials
that trained on i against the k_out trials that did not; for an example i,
its own correctness over the same split. For each we ask, one-sided,

    H0: p_in - p_out <= delta    against    H1: p_in - p_out > delta,

and select those whose H0 is rejected while the false discovery rate (the
expected fraction of selected items whose H0 is true) stays at a level q.

The tests (`difference_pvalues`):
- 0/1 values, delta = 0: Fisher's exact test, one-sided, conditional on the
  total number of successes x = x_in + x_out: p = P(X >= x_in) with X
  hypergeometric (k trials, x successes, k_in draws). Exact: valid (and
  conservative) for every p_in <= p_out and every k.
- 0/1 values, delta != 0: the Miettinen-Nurminen score test. The variance
  is taken at the maximum-likelihood (p_in, p_out) restricted to
  p_in - p_out = delta (Farrington-Manning's closed form), times N/(N-1),
  N = k_in + k_out; z is compared with the standard normal. Asymptotic: its
  size is close to nominal for moderate k (no exact test of a difference
  other than 0 is cheap enough for millions of pairs).
- soft values (probabilities): Welch's t test with Welch-Satterthwaite
  degrees of freedom, from the unbiased variances.

False-discovery control (`fdr_select`): Benjamini-Hochberg (valid when the
p-values are independent or positively regression dependent, PRDS) or
Benjamini-Yekutieli (valid under any dependence, at a cost of a factor
sum_{r<=m} 1/r in the threshold). Pairs that share a training example share
its split of the trials, and a trial that is better overall raises every
test example's correctness in it: the dependence is positive, which is the
case BH is known to hold for; BY is the choice that assumes nothing.

Only the p-values that can be selected need computing: BH never rejects a
p-value above q, and one-sided p-values of estimates at or below delta are
at least about 1/2, so callers pass the p-values of the estimates above
delta and the number of tests `m` in the family; the rest count as p = 1
(which can only shrink the selected set).
"""

import numpy as np

from tf_memorization.stats import bits

FDR_METHODS = ('bh', 'by')


def _fisher_greater(x_in, k_in, x_out, k_out):
  from scipy import stats  # pylint: disable=g-import-not-at-top
  total = k_in + k_out
  successes = x_in + x_out
  return stats.hypergeom.sf(x_in - 1, total, successes, k_in)


def restricted_mle(x_in, k_in, x_out, k_out, delta):
  """Maximum-likelihood (p_in, p_out) of two binomials subject to
  p_in - p_out = delta (Farrington & Manning 1990, closed form of the
  cubic's root in [max(0, delta), min(1, 1 + delta)])."""
  x_in, k_in = np.asarray(x_in, np.float64), np.asarray(k_in, np.float64)
  x_out, k_out = np.asarray(x_out, np.float64), np.asarray(k_out, np.float64)
  p1, p2 = x_in / k_in, x_out / k_out
  theta = k_out / k_in
  a = 1.0 + theta
  b = -(1.0 + theta + p1 + theta * p2 + delta * (theta + 2.0))
  c = delta * delta + delta * (2.0 * p1 + theta + 1.0) + p1 + theta * p2
  d = -p1 * delta * (1.0 + delta)
  v = b ** 3 / (3.0 * a) ** 3 - b * c / (6.0 * a * a) + d / (2.0 * a)
  u_sq = np.maximum(b * b / (3.0 * a) ** 2 - c / (3.0 * a), 0.0)
  u = np.where(v < 0, -1.0, 1.0) * np.sqrt(u_sq)
  with np.errstate(invalid='ignore', divide='ignore'):
    ratio = np.where(u != 0, v / np.where(u != 0, u, 1.0) ** 3, 0.0)
  w = (np.pi + np.arccos(np.clip(ratio, -1.0, 1.0))) / 3.0
  q1 = 2.0 * u * np.cos(w) - b / (3.0 * a)
  lo, hi = max(0.0, delta), min(1.0, 1.0 + delta)
  q1 = np.clip(q1, lo, hi)
  return q1, q1 - delta


def _score_greater(x_in, k_in, x_out, k_out, delta):
  from scipy import special  # pylint: disable=g-import-not-at-top
  q1, q2 = restricted_mle(x_in, k_in, x_out, k_out, delta)
  n = k_in + k_out
  var = (q1 * (1 - q1) / k_in + q2 * (1 - q2) / k_out) * n / (n - 1.0)
  diff = x_in / k_in - x_out / k_out - delta
  with np.errstate(invalid='ignore', divide='ignore'):
    z = diff / np.sqrt(var)
  # No variance left under H0 (the restricted fit sits on a boundary): the
  # data are then as far from H0 as they can be in the direction of diff.
  z = np.where(var > 0, z, np.where(diff > 0, np.inf, -np.inf))
  return special.ndtr(-z)


def difference_pvalues(x_in, k_in, x_out, k_out, delta=0.0):
  """One-sided p-values of H0: p_in - p_out <= delta for 0/1 values.

  Args:
    x_in, x_out: successes (correct predictions) in the in- and out-trials.
    k_in, k_out: the numbers of in- and out-trials (> 0).
    delta: the null's largest difference: 0 (no effect) or a threshold.

  Returns:
    float64 p-values (Fisher's exact test for delta = 0, the
    Miettinen-Nurminen score test otherwise; see the module docstring).
  """
  x_in, x_out = np.asarray(x_in, np.float64), np.asarray(x_out, np.float64)
  k_in, k_out = np.asarray(k_in, np.float64), np.asarray(k_out, np.float64)
  if np.any(k_in <= 0) or np.any(k_out <= 0):
    raise ValueError('every test needs k_in > 0 and k_out > 0.')
  if np.any((x_in < 0) | (x_in > k_in) | (x_out < 0) | (x_out > k_out)):
    raise ValueError('successes must lie in [0, trials].')
  if delta == 0:
    return np.clip(_fisher_greater(x_in, k_in, x_out, k_out), 0.0, 1.0)
  if not -1 < delta < 1:
    raise ValueError(f'delta {delta} must lie in (-1, 1).')
  return _score_greater(x_in, k_in, x_out, k_out, float(delta))


def welch_pvalues(mean_in, var_in, k_in, mean_out, var_out, k_out,
                  delta=0.0):
  """One-sided p-values of H0: mu_in - mu_out <= delta (Welch's t test).

  var_in, var_out are unbiased (ddof = 1) variances; a side with one value
  has no variance estimate and its test is not made (p = 1)."""
  from scipy import stats  # pylint: disable=g-import-not-at-top
  k_in, k_out = np.asarray(k_in, np.float64), np.asarray(k_out, np.float64)
  a, b = np.asarray(var_in) / k_in, np.asarray(var_out) / k_out
  se = np.sqrt(a + b)
  diff = np.asarray(mean_in) - np.asarray(mean_out) - delta
  with np.errstate(invalid='ignore', divide='ignore'):
    df = (a + b) ** 2 / (a * a / (k_in - 1) + b * b / (k_out - 1))
    t = diff / se
    p = stats.t.sf(t, df)
  p = np.where(se > 0, p, np.where(diff > 0, 0.0, 1.0))
  return np.where((k_in > 1) & (k_out > 1), p, 1.0)


def fdr_select(pvalues, num_tests=None, level=0.1, method='bh'):
  """Benjamini-Hochberg (or -Yekutieli) selection and adjusted p-values.

  With p_(1) <= ... <= p_(m) and c = 1 (BH) or sum_{r<=m} 1/r (BY), the
  hypotheses with the r* smallest p-values are selected, r* the largest r
  with p_(r) <= q r / (c m); the adjusted p-value (q-value) of p_(r) is
  min_{s >= r} min(1, c m p_(s) / s), so that q-value <= q means selected.

  Args:
    pvalues: float [p], the p-values computed (any order).
    num_tests: m, the size of the family (>= p): tests not passed count as
      p-value 1 (see the module docstring).
    level: q in (0, 1).
    method: 'bh' or 'by'.

  Returns:
    (selected bool [p], qvalues float64 [p]).
  """
  pvalues = np.asarray(pvalues, np.float64)
  p = len(pvalues)
  m = p if num_tests is None else int(num_tests)
  if m < p:
    raise ValueError(f'num_tests {m} is smaller than the {p} p-values.')
  if method not in FDR_METHODS:
    raise ValueError(f'method {method!r}: choose from {FDR_METHODS}.')
  if not 0 < level < 1:
    raise ValueError(f'level {level} must lie in (0, 1).')
  if not p:
    return np.zeros(0, bool), np.zeros(0)
  c = float(np.sum(1.0 / np.arange(1, m + 1))) if method == 'by' else 1.0
  order = np.argsort(pvalues, kind='stable')
  ranked = pvalues[order]
  ranks = np.arange(1, p + 1)
  adjusted = np.minimum(1.0, c * m * ranked / ranks)
  adjusted = np.minimum.accumulate(adjusted[::-1])[::-1]
  qvalues = np.empty(p)
  qvalues[order] = adjusted
  passing = np.flatnonzero(ranked <= level * ranks / (c * m))
  selected = np.zeros(p, bool)
  if len(passing):
    selected[order[:passing[-1] + 1]] = True
  return selected, qvalues


def derangement(k, seed):
  """A permutation of range(k) with no fixed point (k >= 2): a cyclic shift
  through a random order, so that no trial keeps its own predictions."""
  if k < 2:
    raise ValueError('a derangement needs at least 2 trials.')
  rng = np.random.default_rng([seed, 0x5EED])
  order = rng.permutation(k)
  shift = int(rng.integers(1, k))
  perm = np.empty(k, np.int64)
  perm[order] = order[(np.arange(k) + shift) % k]
  return perm


def memorization_tests(masks, correct, delta, level, method='bh'):
  """Per example, the test of H0: mem(i) <= delta and the FDR selection.

  Args:
    masks: bool [k, n]; correct: bool [k, n] (or bits.BitMatrix).
    delta: the null's largest memorization (0, or the threshold).
    level, method: as in fdr_select.

  Returns:
    dict of [n] arrays: estimate (the memorization, as
    scores.memorization), pvalue and qvalue (NaN where undefined), selected
    (bool); and 'num_tests' (defined examples).
  """
  masks = bits.as_bool(masks)
  correct = bits.as_bool(correct)
  k, n = masks.shape
  k_in, x_in, x_all = bits.column_counts(masks, correct)
  k_out = k - k_in
  x_out = x_all - x_in
  pvalue = np.full(n, np.nan)
  qvalue = np.full(n, np.nan)
  selected = np.zeros(n, bool)
  defined = (k_in > 0) & (k_out > 0)
  estimate = np.full(n, np.nan)
  estimate[defined] = (x_in[defined] / k_in[defined]
                       - x_out[defined] / k_out[defined])
  if defined.any():
    pvalue[defined] = difference_pvalues(x_in[defined], k_in[defined],
                                         x_out[defined], k_out[defined],
                                         delta)
    chosen, q = fdr_select(pvalue[defined], level=level, method=method)
    selected[defined], qvalue[defined] = chosen, q
  return {'estimate': estimate, 'pvalue': pvalue, 'qvalue': qvalue,
          'selected': selected,
          'num_tests': int(defined.sum())}

"""Tests of the tests, the false-discovery control, the views, the nulls and
the planner (selection.py, views.py, assessment.py, planner.py).

Exact cases are worked out by hand in the comments; the rest plant a ground
truth in synthetic records (no training: masks and correctness are drawn
with numpy) and check that it comes back. The Monte Carlo figures measured
when these tests were written are in the comments beside their assertions
(`pytest -s` prints them again).
"""

import math
import types

import numpy as np
import pytest
from scipy import stats

from tf_memorization.estimation.settings import Estimator
from tf_memorization.stats import assessment
from tf_memorization.stats import planner
from tf_memorization.stats import prior
from tf_memorization.stats import ranks
from tf_memorization.stats import scores
from tf_memorization.stats import selection
from tf_memorization.stats import views

LEVEL = 0.1


# ---------------------------------------------------------------------------
# Synthetic records.
# ---------------------------------------------------------------------------


def _records(masks, train_correct, test_correct, train_labels=None,
             test_labels=None):
  """What assess and Plan read of a loading.Records."""
  k, n = masks.shape
  n_test = test_correct.shape[1]
  metrics = {'setup_seconds': 1.0, 'train_seconds': 10.0,
             'predict_seconds': 1.0}
  return types.SimpleNamespace(
      masks=masks, train_correct=train_correct, test_correct=test_correct,
      train_labels=(np.zeros(n, np.int64) if train_labels is None
                    else train_labels),
      test_labels=(np.zeros(n_test, np.int64) if test_labels is None
                   else test_labels),
      metadata=[{'metrics': dict(metrics), 'seed': 0} for _ in range(k)],
      num_trials=k)


def _first(loaded, k):
  """The first k trials of synthetic records (loading.Records.first)."""
  return _records(loaded.masks[:k], loaded.train_correct[:k],
                  loaded.test_correct[:k], loaded.train_labels,
                  loaded.test_labels)


def _planted_pairs(seed, k=200, n=300, n_test=100, num_planted=30,
                   effect=0.5, r=0.7):
  """Masks M ~ Bernoulli(r); T[t, j] ~ Bernoulli(base_j) independent of M,
  except for `num_planted` distinct test examples j, each with one distinct
  planted training example i: T[t, j] ~ Bernoulli(base_j + effect (M[t, i]
  - 1/2)), so infl(i, j) = effect exactly and every other pair's true
  influence is 0 (the masks are independent). Returns (M, T, planted set).
  """
  rng = np.random.default_rng(seed)
  masks = rng.random((k, n)) < r
  base = rng.uniform(0.3, 0.7, n_test)
  test = rng.random((k, n_test)) < base
  cols = rng.choice(n_test, num_planted, replace=False)
  rows = rng.choice(n, num_planted, replace=False)
  for i, j in zip(rows, cols):
    test[:, j] = rng.random(k) < base[j] + effect * (masks[:, i] - 0.5)
  return masks, test, set(zip(rows.tolist(), cols.tolist()))


def _labelled_pairs(seed, k=200, n_test=100, strong=0.5, boundary=0.15,
                    r=0.7):
  """Test example j has label j, training examples 3j, 3j+1, 3j+2 label j
  (the same-label family: 3 n_test pairs). T[t, j] ~ Bernoulli(base_j +
  strong (M[t, 3j] - 1/2) + boundary (M[t, 3j+1] - 1/2)): infl(3j, j) =
  strong, infl(3j+1, j) = boundary exactly, infl(3j+2, j) = 0."""
  rng = np.random.default_rng(seed)
  n = 3 * n_test
  masks = rng.random((k, n)) < r
  base = rng.uniform(0.35, 0.65, n_test)
  p = base + strong * (masks[:, 0::3] - 0.5) + boundary * (masks[:, 1::3]
                                                           - 0.5)
  test = rng.random((k, n_test)) < p
  return masks, test, np.repeat(np.arange(n_test), 3), np.arange(n_test)


def _noise_pairs(seed, k=200, n=300, n_test=100, r=0.7, trial_sd=0.1):
  """T independent of M; each trial has its own quality u_t ~ N(0, sd)
  added to every test example's accuracy (the positive dependence between
  test examples that real trials have)."""
  rng = np.random.default_rng(seed)
  masks = rng.random((k, n)) < r
  base = rng.uniform(0.3, 0.7, n_test)
  quality = rng.normal(0.0, trial_sd, (k, 1))
  test = rng.random((k, n_test)) < np.clip(base + quality, 0, 1)
  return masks, test


def _planted_memorization(seed, k=100, n=2000, num_planted=200,
                          effect=0.5, boundary=None, num_boundary=0,
                          r=0.7):
  """C[t, i] ~ Bernoulli(p_i) independent of M, except for planted
  examples: Bernoulli(p_i + effect (M[t, i] - 1/2)) (mem = effect), and
  `num_boundary` more with mem = boundary exactly. Returns (M, C, planted
  bool [n], boundary bool [n])."""
  rng = np.random.default_rng(seed)
  masks = rng.random((k, n)) < r
  base = rng.uniform(0.3, 0.7, n)
  mem = np.zeros(n)
  chosen = rng.choice(n, num_planted + num_boundary, replace=False)
  planted = np.zeros(n, bool)
  planted[chosen[:num_planted]] = True
  on_boundary = np.zeros(n, bool)
  on_boundary[chosen[num_planted:]] = True
  mem[planted] = effect
  if num_boundary:
    mem[on_boundary] = boundary
  correct = rng.random((k, n)) < base + mem * (masks - 0.5)
  return masks, correct, planted, on_boundary


def _fdp(selected, true):
  """False discovery proportion of a selected set (0 when empty)."""
  selected, true = set(selected), set(true)
  return len(selected - true) / max(len(selected), 1)


def _all_view(masks, memorization):
  return [views.Spec('all', np.arange(masks.shape[0]), memorization)]


# ---------------------------------------------------------------------------
# 1. The tests and the false-discovery control, exactly.
# ---------------------------------------------------------------------------


def test_fisher_by_hand():
  # k_in=3, k_out=2, x_in=3, x_out=0: 3 successes among 5 trials; under H0
  # the in-trials are 3 of the 5 drawn at random, and x_in >= 3 needs all 3
  # successes among them: C(3,3) C(2,0) / C(5,3) = 1/10.
  # k_in=2, k_out=2, x_in=2, x_out=1: 3 successes, 2 draws:
  #   P(X >= 2) = C(3,2) C(1,0) / C(4,2) = 3/6.
  # k_in=2, k_out=2, x_in=1, x_out=1: 2 successes, 2 draws:
  #   P(X >= 1) = 1 - C(2,0) C(2,2) / C(4,2) = 5/6.
  # k_in=4, k_out=3, x_in=0, x_out=3: P(X >= 0) = 1.
  p = selection.difference_pvalues([3, 2, 1, 0], [3, 2, 2, 4], [0, 1, 1, 3],
                                   [2, 2, 2, 3], 0.0)
  np.testing.assert_allclose(p, [0.1, 0.5, 5 / 6, 1.0], rtol=1e-12)


@pytest.mark.parametrize('x_in,k_in,x_out,k_out', [
    (7, 10, 3, 12), (0, 5, 5, 5), (10, 10, 0, 10), (3, 8, 6, 9),
    (140, 140, 20, 60), (50, 140, 30, 60), (1, 1, 0, 1), (12, 30, 12, 30)])
def test_fisher_equals_scipy_fisher_exact(x_in, k_in, x_out, k_out):
  table = [[x_in, k_in - x_in], [x_out, k_out - x_out]]
  expected = stats.fisher_exact(table, alternative='greater')[1]
  got = selection.difference_pvalues(x_in, k_in, x_out, k_out, 0.0)
  np.testing.assert_allclose(got, expected, rtol=1e-9)


def _brute_restricted_mle(x_in, k_in, x_out, k_out, delta, steps=400001):
  """argmax over a grid of p_out of the binomial log-likelihood with
  p_in = p_out + delta (both in [0, 1])."""
  p_out = np.linspace(max(0.0, -delta), min(1.0, 1.0 - delta), steps)
  p_in = p_out + delta

  def term(x, p):
    with np.errstate(divide='ignore', invalid='ignore'):
      return np.where(x > 0, x * np.log(p), 0.0) if x else 0.0

  loglik = (term(x_in, p_in) + term(k_in - x_in, 1 - p_in)
            + term(x_out, p_out) + term(k_out - x_out, 1 - p_out))
  loglik = np.where(np.isnan(loglik), -np.inf, loglik)
  best = int(np.argmax(loglik))
  return p_in[best], p_out[best], p_out[1] - p_out[0]


@pytest.mark.parametrize('x_in,k_in,x_out,k_out,delta', [
    (7, 10, 3, 12, 0.15),     # interior
    (3, 8, 6, 9, 0.1),        # estimate below delta
    (12, 20, 2, 15, 0.5),
    (1, 30, 29, 30, -0.5),    # negative delta
    (0, 5, 5, 5, 0.2),        # estimates at the boundaries of [0, 1]
    (10, 10, 0, 10, 0.15),
    (10, 10, 0, 10, -0.3),
    (5, 5, 5, 5, 0.3),        # the fit sits on p_in = 1
    (0, 5, 0, 5, 0.2),        # the fit sits on p_out = 0
    (0, 4, 0, 6, -0.2),       # ... on p_in = 0
    (4, 4, 6, 6, 0.2),        # ... on p_in = 1
    (100, 140, 25, 60, 0.15)])
def test_restricted_mle_is_the_constrained_maximum(x_in, k_in, x_out, k_out,
                                                   delta):
  q_in, q_out = selection.restricted_mle(x_in, k_in, x_out, k_out, delta)
  b_in, b_out, step = _brute_restricted_mle(x_in, k_in, x_out, k_out, delta)
  assert abs(float(q_in) - float(q_out) - delta) < 1e-12
  assert 0 <= float(q_out) <= 1 and 0 <= float(q_in) <= 1
  assert abs(float(q_out) - b_out) <= step
  assert abs(float(q_in) - b_in) <= step


def test_restricted_mle_is_elementwise():
  x_in, k_in = np.array([7, 0, 12]), np.array([10, 5, 20])
  x_out, k_out = np.array([3, 5, 2]), np.array([12, 5, 15])
  q_in, q_out = selection.restricted_mle(x_in, k_in, x_out, k_out, 0.2)
  for t in range(3):
    one = selection.restricted_mle(x_in[t], k_in[t], x_out[t], k_out[t], 0.2)
    np.testing.assert_allclose([q_in[t], q_out[t]], one, rtol=1e-12)


def test_score_test_by_hand():
  # x_in=10/10, x_out=0/10, delta=0.15: with equal k the restricted fit is
  # symmetric about 1/2: q_in = (1 + delta) / 2 = 0.575, q_out = 0.425
  # (checked by the brute force above). N = 20:
  #   var = (0.575 * 0.425 / 10 + 0.425 * 0.575 / 10) * 20 / 19
  #       = 0.048875 * 20 / 19 = 0.0514474
  #   z = (1 - 0 - 0.15) / sqrt(var) = 0.85 / 0.226820 = 3.74747
  var = (0.575 * 0.425 / 10 + 0.425 * 0.575 / 10) * 20 / 19
  z = 0.85 / math.sqrt(var)
  assert z == pytest.approx(3.74747, abs=1e-5)
  p = selection.difference_pvalues(10, 10, 0, 10, 0.15)
  assert float(p) == pytest.approx(stats.norm.sf(z), rel=1e-9)
  # x_in = x_out = 5/10, delta = 0.2: q_in = 0.6, q_out = 0.4;
  #   var = (0.24 / 10 + 0.24 / 10) * 20 / 19 = 0.0505263
  #   z = (0.5 - 0.5 - 0.2) / 0.224780 = -0.889757, p = Phi(0.889757)
  z = -0.2 / math.sqrt(0.048 * 20 / 19)
  assert z == pytest.approx(-0.889757, abs=1e-6)
  p = selection.difference_pvalues(5, 10, 5, 10, 0.2)
  assert float(p) == pytest.approx(stats.norm.cdf(0.889757), rel=1e-5)


def test_score_test_against_an_independent_computation():
  # z from the brute-force restricted fit, over random tables.
  rng = np.random.default_rng(0)
  for _ in range(12):
    k_in, k_out = int(rng.integers(5, 60)), int(rng.integers(5, 60))
    x_in, x_out = int(rng.integers(0, k_in + 1)), int(rng.integers(0,
                                                                   k_out + 1))
    delta = float(rng.choice([-0.3, 0.1, 0.15, 0.4]))
    b_in, b_out, _ = _brute_restricted_mle(x_in, k_in, x_out, k_out, delta,
                                           steps=200001)
    var = ((b_in * (1 - b_in) / k_in + b_out * (1 - b_out) / k_out)
           * (k_in + k_out) / (k_in + k_out - 1))
    z = (x_in / k_in - x_out / k_out - delta) / math.sqrt(var)
    got = float(selection.difference_pvalues(x_in, k_in, x_out, k_out,
                                             delta))
    assert got == pytest.approx(stats.norm.sf(z), abs=2e-4), (
        x_in, k_in, x_out, k_out, delta)


def test_score_test_size_at_the_boundary():
  # H0 true with equality: p_in - p_out = delta = 0.15. The score test is
  # asymptotic, and the lattice of 0/1 counts moves its size about nominal.
  # 20,000 tables per setting (Monte Carlo sd of a rate of 0.1: 0.002).
  # Measured rates / alpha: 0.93 - 1.17 at alpha = 0.05, 0.99 - 1.13 at 0.1
  # (worst: k_in = k_out = 60, p_out = 0.4, 0.1126 at 0.1; p_out = 0.8,
  # 0.0586 at 0.05). Not asserted: at k_in = 22, k_out = 10 (32 trials) and
  # p_out = 0.8 the rate at 0.1 is 0.16 (the docstring says moderate k).
  rng = np.random.default_rng(1)
  for p_out in (0.2, 0.4, 0.6, 0.8):
    for k_in, k_out in ((140, 60), (60, 60)):
      x_in = rng.binomial(k_in, p_out + 0.15, 20000)
      x_out = rng.binomial(k_out, p_out, 20000)
      p = selection.difference_pvalues(x_in, k_in, x_out, k_out, 0.15)
      for alpha in (0.05, 0.1):
        rate = float(np.mean(p <= alpha))
        assert 0.6 * alpha <= rate <= 1.25 * alpha, (p_out, k_in, alpha,
                                                     rate)


def test_difference_pvalues_rejects_bad_input():
  with pytest.raises(ValueError, match='k_in > 0'):
    selection.difference_pvalues(0, 0, 1, 3)
  with pytest.raises(ValueError, match='k_in > 0'):
    selection.difference_pvalues(0, 3, 0, 0, 0.1)
  with pytest.raises(ValueError, match='successes'):
    selection.difference_pvalues(4, 3, 1, 3)
  with pytest.raises(ValueError, match='successes'):
    selection.difference_pvalues(1, 3, -1, 3)
  with pytest.raises(ValueError, match='delta'):
    selection.difference_pvalues(1, 3, 1, 3, 1.0)


@pytest.mark.parametrize('delta', [0.0, 0.15, -0.1])
def test_welch_equals_scipy_ttest_ind(delta):
  rng = np.random.default_rng(2)
  for k_in, k_out in ((30, 12), (7, 40), (2, 2)):
    a = rng.normal(0.6, 0.2, k_in)
    b = rng.normal(0.5, 0.3, k_out)
    expected = stats.ttest_ind(a - delta, b, equal_var=False,
                               alternative='greater').pvalue
    got = selection.welch_pvalues(a.mean(), a.var(ddof=1), k_in, b.mean(),
                                  b.var(ddof=1), k_out, delta)
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_welch_degenerate_cases():
  # One value on a side: no variance estimate, no test (p = 1).
  p = selection.welch_pvalues([0.9, 0.9], [0.0, 0.01], [1, 5], [0.1, 0.1],
                              [0.01, 0.0], [5, 1])
  np.testing.assert_array_equal(p, [1.0, 1.0])
  # No variance on either side: decided by the sign of the difference.
  p = selection.welch_pvalues([0.9, 0.1], [0.0, 0.0], [5, 5], [0.1, 0.9],
                              [0.0, 0.0], [5, 5])
  np.testing.assert_array_equal(p, [0.0, 1.0])


def test_bh_by_hand():
  # p = .01 .02 .03 .5, m = 4, q = .1: the thresholds r q / m are
  # .025 .05 .075 .1, the first three pass, .5 does not.
  # q-values m p_(r) / r = .04 .04 .04 .5 (already increasing).
  p = [0.5, 0.02, 0.01, 0.03]                  # any order
  selected, q = selection.fdr_select(p, level=0.1)
  np.testing.assert_array_equal(selected, [False, True, True, True])
  np.testing.assert_allclose(q, [0.5, 0.04, 0.04, 0.04], rtol=1e-12)


def test_bh_steps_up_by_hand():
  # p = .04 .05 .09, m = 3: p_(1) = .04 > 1 * .1 / 3 alone, but
  # p_(3) = .09 <= .1, so all three are selected (the step-up).
  # q-values: 3 * .04 = .12, 3 * .05 / 2 = .075, .09 -> running minimum
  # from the top: .075 .075 .09.
  selected, q = selection.fdr_select([0.09, 0.04, 0.05], level=0.1)
  np.testing.assert_array_equal(selected, [True, True, True])
  np.testing.assert_allclose(q, [0.09, 0.075, 0.075], rtol=1e-12)


def test_bh_with_untested_hypotheses_by_hand():
  # p = .004 .03 .035 .5 passed, m = 10 (6 more tests, counted as p = 1).
  # Thresholds r * .1 / 10 = .01 .02 .03 .04: only p_(1) passes (.03 > .02,
  # .035 > .03, .5 > .04). q-values 10 p / r = .04 .15 .116667 1.25 -> 1;
  # running minimum from the top: .04 .116667 .116667 1.
  p = [0.004, 0.03, 0.035, 0.5]
  selected, q = selection.fdr_select(p, num_tests=10, level=0.1)
  np.testing.assert_array_equal(selected, [True, False, False, False])
  np.testing.assert_allclose(q, [0.04, 0.35 / 3, 0.35 / 3, 1.0], rtol=1e-12)
  # With m = 4 the same p-values select three: q = .016 .046667 .046667 .5.
  selected, q = selection.fdr_select(p, num_tests=4, level=0.1)
  np.testing.assert_array_equal(selected, [True, True, True, False])
  np.testing.assert_allclose(q, [0.016, 0.14 / 3, 0.14 / 3, 0.5],
                             rtol=1e-12)
  # Passing the six p = 1 explicitly is the same selection as num_tests=10.
  full, full_q = selection.fdr_select(p + [1.0] * 6, level=0.1)
  np.testing.assert_array_equal(full[:4], [True, False, False, False])
  np.testing.assert_allclose(full_q[:4], [0.04, 0.35 / 3, 0.35 / 3, 1.0],
                             rtol=1e-12)


def test_by_by_hand():
  # m = 4: c = 1 + 1/2 + 1/3 + 1/4 = 25/12. q-values c * (.04 .04 .04 .5)
  # = .083333 (three times) and 1.0417 -> 1. At q = .1 the first three are
  # selected (thresholds r * .1 / (c * 4) = .012 .024 .036); at q = .08 none.
  p = [0.01, 0.02, 0.03, 0.5]
  selected, q = selection.fdr_select(p, level=0.1, method='by')
  np.testing.assert_array_equal(selected, [True, True, True, False])
  np.testing.assert_allclose(q, [1 / 12, 1 / 12, 1 / 12, 1.0], rtol=1e-12)
  selected, _ = selection.fdr_select(p, level=0.08, method='by')
  assert not selected.any()
  selected, _ = selection.fdr_select(p, level=0.08, method='bh')
  assert selected.sum() == 3


def test_fdr_selected_is_qvalue_at_most_level():
  rng = np.random.default_rng(3)
  for method in selection.FDR_METHODS:
    for _ in range(20):
      p = np.concatenate([rng.uniform(0, 1, 200), rng.uniform(0, 0.002, 20)])
      m = 200 + 20 + int(rng.integers(0, 500))
      selected, q = selection.fdr_select(p, m, 0.1, method)
      np.testing.assert_array_equal(selected, q <= 0.1)
      assert np.all(q >= p) and np.all(q <= 1)


def test_fdr_select_rejects_bad_arguments():
  with pytest.raises(ValueError, match='smaller'):
    selection.fdr_select([0.1, 0.2], num_tests=1)
  with pytest.raises(ValueError, match='method'):
    selection.fdr_select([0.1], method='holm')
  for level in (0.0, 1.0, -0.1):
    with pytest.raises(ValueError, match='level'):
      selection.fdr_select([0.1], level=level)
  selected, q = selection.fdr_select([], num_tests=5)
  assert selected.shape == (0,) and q.shape == (0,)


def test_derangement():
  for k in (2, 3, 5, 17, 100):
    for seed in range(5):
      perm = selection.derangement(k, seed)
      np.testing.assert_array_equal(np.sort(perm), np.arange(k))
      assert not np.any(perm == np.arange(k))
      np.testing.assert_array_equal(perm, selection.derangement(k, seed))
  # Different seeds give different permutations (100! of them).
  assert len({tuple(selection.derangement(100, s)) for s in range(10)}) == 10
  with pytest.raises(ValueError, match='at least 2'):
    selection.derangement(1, 0)


# ---------------------------------------------------------------------------
# 2. Views: one pass equals scores.influence on each view's trials.
# ---------------------------------------------------------------------------


def _views_case(seed=4, k=37, n=150, n_test=40):
  """k not a multiple of 8, three labels, memorization values on both sides
  of the threshold, some pairs planted so that the raw sets are not only
  noise; planted (2j, j) for j < 10, in the family."""
  rng = np.random.default_rng(seed)
  masks = rng.random((k, n)) < 0.6
  test = rng.random((k, n_test)) < 0.5
  for j in range(10):
    test[:, j] = rng.random(k) < 0.5 + 0.6 * (masks[:, 2 * j] - 0.5)
  train_labels = rng.integers(0, 3, n)
  test_labels = rng.integers(0, 3, n_test)
  mem_values = rng.uniform(-0.2, 1.0, n)
  train_labels[0:20:2] = test_labels[:10]   # the planted pairs in the family
  mem_values[0:20:2] = 0.9
  return masks, test, train_labels, test_labels, mem_values


def _pairs(result):
  return dict(zip(zip(result.pair_train.tolist(), result.pair_test.tolist()),
                  result.pair_influence.tolist()))


def test_nested_rows():
  rows = views.nested_rows(37)
  np.testing.assert_array_equal(rows['k/8'], [0, 8, 16, 24, 32])
  np.testing.assert_array_equal(rows['k/4'], np.arange(0, 37, 4))
  np.testing.assert_array_equal(rows['k/2'], np.arange(0, 37, 2))
  np.testing.assert_array_equal(rows['odd'], np.arange(1, 37, 2))
  np.testing.assert_array_equal(rows['all'], np.arange(37))
  assert set(rows['k/8']) <= set(rows['k/4']) <= set(rows['k/2'])
  assert not set(rows['k/2']) & set(rows['odd'])


@pytest.mark.parametrize('block_size', [32, 2048])
def test_views_equal_scores_influence_on_their_trials(block_size):
  masks, test, train_labels, test_labels, mem_values = _views_case()
  k = masks.shape[0]
  rows = views.nested_rows(k)
  perm = selection.derangement(k, 7)
  specs = [views.Spec(name, r, mem_values) for name, r in rows.items()]
  specs.append(views.Spec('null0', np.arange(k), mem_values, perm))
  args = dict(topk=5, influence_threshold=0.15, memorization_threshold=0.25,
              same_label=True)
  infl, results = views.influence_views(masks, test, train_labels,
                                        test_labels, specs, delta=0.0,
                                        block_size=block_size, **args)
  expected = {name: scores.influence(masks[r], test[r], train_labels,
                                     test_labels, mem_values,
                                     block_size=block_size, **args)
              for name, r in rows.items()}
  expected['null0'] = scores.influence(masks, test[perm], train_labels,
                                       test_labels, mem_values,
                                       block_size=block_size, **args)
  for name, want in expected.items():
    got = results[name]
    assert got.num_trials == (k if name == 'null0' else len(rows[name]))
    assert got.raw_set() == set(_pairs(want)), name
    assert len(got.raw_set()) == len(got.raw_train)   # no pair twice
    got_values = dict(zip(zip(got.raw_train.tolist(), got.raw_test.tolist()),
                          got.raw_influence.tolist()))
    assert got_values == _pairs(want), name
    assert len(want.pair_train) > 0, name   # the comparison compares something
  # The full view's top-k and largest influences: the same values (float32
  # of two products computed in different orders: within 1e-6), and each
  # index holds the influence listed for it.
  want = expected['all']
  np.testing.assert_allclose(infl.topk_influence, want.topk_influence,
                             atol=2e-6)
  np.testing.assert_allclose(infl.max_influence, want.max_influence,
                             atol=2e-6)
  exact, _ = scores.pair_statistics(
      masks, test, infl.topk_indices.ravel(),
      np.repeat(np.arange(test.shape[1]), infl.topk_indices.shape[1]))
  np.testing.assert_allclose(exact, infl.topk_influence.ravel(), atol=2e-6)
  np.testing.assert_array_equal(infl.pair_train, results['all'].raw_train)


@pytest.mark.parametrize('delta', [0.0, 0.15, 0.2])
def test_views_tests_are_the_family_pairs_above_delta(delta):
  # Every view's tested pairs are the family's pairs whose (float64)
  # influence exceeds delta, with p-values (Fisher for delta = 0, the score
  # test otherwise) from their own counts and BH over the family size m.
  masks, test, train_labels, test_labels, mem_values = _views_case(seed=5)
  k, n = masks.shape
  rows = views.nested_rows(k)
  specs = [views.Spec(name, r, mem_values) for name, r in rows.items()]
  _, results = views.influence_views(masks, test, train_labels, test_labels,
                                     specs, delta=delta, level=LEVEL,
                                     block_size=64)
  n_test = test.shape[1]
  family_rows, family_cols = np.nonzero(
      (mem_values[:, None] >= 0.25)
      & (train_labels[:, None] == test_labels[None, :]))
  for name, r in rows.items():
    view = results[name]
    m_rows, t_rows = masks[r], test[r]
    stats_ = scores.pair_statistics(m_rows, t_rows, family_rows, family_cols,
                                    full=True)
    defined = (stats_['k_in'] > 0) & (stats_['k_out'] > 0)
    # (The pass keeps float32 estimates >= delta + 1e-4; no float64 one is
    # near that edge here.)
    margin = np.abs(stats_['estimate'] - delta - 1e-4)
    assert np.all(margin[defined] > 1e-6)
    above = defined & (stats_['estimate'] > delta + 1e-4)
    assert view.num_tests == len(family_rows)
    assert (set(zip(view.test_train.tolist(), view.test_test.tolist()))
            == set(zip(family_rows[above].tolist(),
                       family_cols[above].tolist()))), name
    order = np.lexsort((view.test_test, view.test_train))
    k_in = stats_['k_in'][above]
    x_in = np.rint(stats_['mean_in'][above] * k_in)
    k_out = stats_['k_out'][above]
    x_out = np.rint(stats_['mean_out'][above] * k_out)
    want_p = selection.difference_pvalues(x_in, k_in, x_out, k_out, delta)
    np.testing.assert_allclose(view.pvalue[order], want_p, rtol=1e-12)
    want_sel, want_q = selection.fdr_select(want_p, len(family_rows), LEVEL)
    np.testing.assert_array_equal(view.selected[order], want_sel)
    np.testing.assert_allclose(view.qvalue[order], want_q, rtol=1e-12)
  assert n_test and len(results['all'].pvalue) > 20
  if delta == 0:   # (at k = 37 the planted pairs pass BH only against 0)
    assert results['all'].selected.any()


def test_views_soft_values_use_welch():
  # Soft test values: each tested pair's p-value is Welch's, from its own
  # values in and out (scipy's ttest_ind as the reference).
  masks, test, train_labels, test_labels, mem_values = _views_case(seed=6)
  rng = np.random.default_rng(6)
  soft = np.clip(test * 0.6 + rng.uniform(0, 0.4, test.shape), 0, 1)
  soft = soft.astype(np.float32)
  _, results = views.influence_views(masks, soft, train_labels, test_labels,
                                     _all_view(masks, mem_values), delta=0.05)
  view = results['all']
  assert len(view.pvalue) > 10
  for i, j, p in list(zip(view.test_train, view.test_test, view.pvalue))[:30]:
    inside = masks[:, i]
    expected = stats.ttest_ind(soft[inside, j].astype(np.float64) - 0.05,
                               soft[~inside, j], equal_var=False,
                               alternative='greater').pvalue
    assert p == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_null_view_by_hand():
  # k = 3, one training example in trial 0 only, one test example correct
  # in trial 0 only: the influence is 1 - 0 = 1. In a null, trial t gets
  # trial perm[t]'s prediction; perm[0] != 0 (a derangement), so the
  # in-trial gets a 0 and the two out-trials a 1 and a 0, whichever
  # derangement: 0 - 1/2 = -1/2.
  masks = np.array([[1], [0], [0]], bool)
  test = np.array([[1], [0], [0]], bool)
  keep = dict(influence_threshold=-1.0, memorization_threshold=-1.0,
              same_label=False, topk=1, delta=0.0)
  labels = np.zeros(1, np.int64)
  for seed in range(6):
    perm = selection.derangement(3, seed)
    specs = [views.Spec('all', np.arange(3), np.ones(1)),
             views.Spec('null', np.arange(3), np.ones(1), perm)]
    _, results = views.influence_views(masks, test, labels, labels, specs,
                                       **keep)
    assert results['all'].raw_influence.tolist() == [1.0]
    assert results['null'].raw_influence.tolist() == [-0.5]
  # A given permutation, soft values: k = 4, M = 1 1 0 0, T = .1 .2 .4 .8,
  # perm = 1 2 3 0: the in-trials get .2 .4 (mean .3, population variance
  # .01), the out-trials .8 .1 (mean .45, variance .1225): influence -.15,
  # stderr sqrt(.01 / 2 + .1225 / 2) = sqrt(.06625).
  masks = np.array([[1], [1], [0], [0]], bool)
  test = np.array([[0.1], [0.2], [0.4], [0.8]], np.float32)
  specs = [views.Spec('all', np.arange(4), np.ones(1)),
           views.Spec('null', np.arange(4), np.ones(1),
                      np.array([1, 2, 3, 0]))]
  _, results = views.influence_views(masks, test, labels, labels, specs,
                                     **keep)
  # The real influence: (.1 + .2) / 2 - (.4 + .8) / 2 = -.45.
  assert results['all'].raw_influence[0] == pytest.approx(-0.45, abs=1e-6)
  assert results['null'].raw_influence[0] == pytest.approx(-0.15, abs=1e-6)
  assert results['null'].raw_stderr[0] == pytest.approx(math.sqrt(0.06625),
                                                        abs=1e-6)


def test_influence_views_rejects_an_unknown_full_view():
  masks, test, train_labels, test_labels, mem_values = _views_case()
  with pytest.raises(ValueError, match='no view'):
    views.influence_views(masks, test, train_labels, test_labels,
                          _all_view(masks, mem_values), full='k/2')


# ---------------------------------------------------------------------------
# 3. Planted pairs: the controlled set finds them at the promised FDR.
#
# Every pair that is not planted is a true null (its training example's
# membership is independent of the test example), so a selected pair is
# false exactly when it is not planted. BH guarantees E[FDP] <= q m0 / m
# <= q for independent or PRDS p-values; Fisher's test is conservative on
# top (discrete). The tolerances are two Monte Carlo standard errors of the
# mean FDP (the per-seed sd measured below, over sqrt(seeds)).
# ---------------------------------------------------------------------------


def _pairs_at_delta_zero(seeds):
  """(mean FDP, mean recall, min recall) of the controlled set at delta=0
  on _planted_pairs (k=200, n=300, n_test=100, 30 pairs of effect 0.5,
  family: all 30,000 pairs)."""
  fdp, recall = [], []
  for seed in seeds:
    masks, test, planted = _planted_pairs(seed)
    n = masks.shape[1]
    _, results = views.influence_views(
        masks, test, np.zeros(n, np.int64), np.zeros(test.shape[1], np.int64),
        _all_view(masks, np.ones(n)), delta=0.0, level=LEVEL)
    chosen = results['all'].controlled_set()
    assert results['all'].num_tests == n * test.shape[1]
    fdp.append(_fdp(chosen, planted))
    recall.append(len(chosen & planted) / len(planted))
  return float(np.mean(fdp)), float(np.mean(recall)), float(np.min(recall))


def _pairs_at_the_threshold(seeds):
  """On _labelled_pairs (per test example one pair of effect 0.5, one at
  exactly delta = 0.15, one of 0; the family is these 300 pairs, so BH's
  cutoff is ~ q/3 and a boundary null could pass it): (mean FDP, mean
  recall, min recall, rate at which boundary nulls are selected, their
  rates of p <= 0.05 and p <= 0.1)."""
  fdp, recall, chosen_b, b05, b10 = [], [], [], [], []
  for seed in seeds:
    masks, test, train_labels, test_labels = _labelled_pairs(seed)
    _, results = views.influence_views(
        masks, test, train_labels, test_labels,
        _all_view(masks, np.ones(masks.shape[1])), delta=None, level=LEVEL)
    view = results['all']
    assert view.num_tests == 300
    kind = view.test_train % 3        # 0 strong, 1 boundary, 2 none
    n_test = test.shape[1]
    fdp.append(np.sum(view.selected & (kind != 0)) / max(view.selected.sum(),
                                                         1))
    recall.append(np.sum(view.selected & (kind == 0)) / n_test)
    chosen_b.append(np.sum(view.selected & (kind == 1)) / n_test)
    # Untested boundary pairs (estimate <= delta) have p >= ~1/2.
    b05.append(np.sum((view.pvalue <= 0.05) & (kind == 1)) / n_test)
    b10.append(np.sum((view.pvalue <= 0.1) & (kind == 1)) / n_test)
  return (float(np.mean(fdp)), float(np.mean(recall)), float(np.min(recall)),
          float(np.mean(chosen_b)), float(np.mean(b05)), float(np.mean(b10)))


def test_planted_pairs_fdr_and_recall_at_delta_zero():
  # Measured (seeds 0-9): mean FDP 0.040, recall 1.0 (min 1.0); per-seed
  # FDP sd 0.046 (over 50 seeds) -> 2 sd of a 10-seed mean: 0.03.
  fdp, recall, worst = _pairs_at_delta_zero(range(10))
  print(f'\npairs, delta=0, 10 seeds: mean FDP {fdp:.4f}, recall '
        f'{recall:.4f} (min {worst:.4f})')
  assert fdp <= LEVEL + 0.03
  assert recall >= 0.95 and worst >= 0.9


def test_planted_pairs_at_the_threshold():
  # Measured (seeds 0-9): mean FDP 0.030 (per-seed sd 0.013), recall 0.997
  # (min 0.98), boundary nulls selected 0.031, p <= 0.05: 0.045,
  # p <= 0.1: 0.101 (the score test's size, near nominal).
  fdp, recall, worst, chosen, b05, b10 = _pairs_at_the_threshold(range(10))
  print(f'\npairs, delta=0.15, 10 seeds: mean FDP {fdp:.4f}, recall '
        f'{recall:.4f} (min {worst:.4f}); boundary nulls: selected '
        f'{chosen:.4f}, p<=.05 {b05:.4f}, p<=.1 {b10:.4f}')
  assert fdp <= LEVEL + 0.01
  assert recall >= 0.95 and worst >= 0.9
  assert chosen <= LEVEL
  # 1000 boundary pairs: Monte Carlo sd 0.007 at 0.05, 0.0095 at 0.1.
  assert 0.02 <= b05 <= 0.05 + 0.02
  assert 0.06 <= b10 <= 0.1 + 0.025


@pytest.mark.slow
def test_planted_pairs_fdr_over_many_seeds():
  # Measured (seeds 0-49): delta=0: mean FDP 0.0447 (sd 0.0455 -> 2 sd of
  # the mean 0.013), recall 0.9993 (min 0.967); delta=0.15: mean FDP 0.032
  # (sd 0.013), recall 0.998 (min 0.98), boundary nulls selected 0.033,
  # p <= .05: 0.046, p <= .1: 0.098 (5000 boundary pairs: sd 0.003, 0.004).
  fdp, recall, worst = _pairs_at_delta_zero(range(50))
  print(f'\npairs, delta=0, 50 seeds: mean FDP {fdp:.4f}, recall '
        f'{recall:.4f} (min {worst:.4f})')
  assert fdp <= LEVEL + 0.013
  assert recall >= 0.98 and worst >= 0.9
  fdp, recall, worst, chosen, b05, b10 = _pairs_at_the_threshold(range(50))
  print(f'pairs, delta=0.15, 50 seeds: mean FDP {fdp:.4f}, recall '
        f'{recall:.4f} (min {worst:.4f}); boundary nulls: selected '
        f'{chosen:.4f}, p<=.05 {b05:.4f}, p<=.1 {b10:.4f}')
  assert fdp <= LEVEL + 0.004
  assert recall >= 0.98
  assert chosen <= LEVEL
  assert 0.035 <= b05 <= 0.05 + 0.009
  assert 0.08 <= b10 <= 0.1 + 0.012


def _memorization_figures(seeds, delta, **planted):
  fdp, recall, boundary, b05, b10 = [], [], [], [], []
  for seed in seeds:
    masks, correct, true, on_boundary = _planted_memorization(seed,
                                                              **planted)
    out = selection.memorization_tests(masks, correct, delta, LEVEL)
    chosen = out['selected']
    assert out['num_tests'] == masks.shape[1]
    np.testing.assert_array_equal(chosen, out['qvalue'] <= LEVEL)
    fdp.append(np.sum(chosen & ~true) / max(chosen.sum(), 1))
    recall.append(np.sum(chosen & true) / true.sum())
    if on_boundary.any():
      boundary.append(np.mean(chosen[on_boundary]))
      b05.append(np.mean(out['pvalue'][on_boundary] <= 0.05))
      b10.append(np.mean(out['pvalue'][on_boundary] <= 0.1))
  figures = [float(np.mean(fdp)), float(np.mean(recall)),
             float(np.min(recall))]
  if boundary:
    figures += [float(np.mean(boundary)), float(np.mean(b05)),
                float(np.mean(b10))]
  return figures


def test_planted_memorization_fdr_and_recall():
  # k=100, n=2000, 200 examples with mem 0.5, the rest 0. Measured (seeds
  # 0-9): mean FDP 0.047 (per-seed sd 0.0145), recall 0.992 (min 0.985).
  fdp, recall, worst = _memorization_figures(range(10), 0.0)
  print(f'\nmemorization, delta=0, 10 seeds: mean FDP {fdp:.4f}, recall '
        f'{recall:.4f} (min {worst:.4f})')
  assert fdp <= LEVEL + 0.01
  assert recall >= 0.95 and worst >= 0.9
  # delta = 0.25, 200 examples with mem 0.6 and 200 exactly at 0.25.
  # Measured: mean FDP 0.0066 (sd 0.0066), recall 0.90 (min 0.86),
  # boundary selected 0.006, p <= .05: 0.0435, p <= .1: 0.0925 (2000
  # boundary examples: Monte Carlo sd 0.005, 0.0066).
  fdp, recall, worst, chosen, b05, b10 = _memorization_figures(
      range(10), 0.25, effect=0.6, boundary=0.25, num_boundary=200)
  print(f'memorization, delta=0.25, 10 seeds: mean FDP {fdp:.4f}, recall '
        f'{recall:.4f} (min {worst:.4f}); boundary: selected {chosen:.4f}, '
        f'p<=.05 {b05:.4f}, p<=.1 {b10:.4f}')
  assert fdp <= LEVEL
  assert recall >= 0.8 and worst >= 0.7
  assert chosen <= LEVEL
  assert 0.03 <= b05 <= 0.05 + 0.015
  assert 0.07 <= b10 <= 0.1 + 0.02


@pytest.mark.slow
def test_planted_memorization_fdr_over_many_seeds():
  # Measured (seeds 0-49): delta=0: mean FDP 0.047 (sd 0.0145), recall
  # 0.991 (min 0.975); delta=0.25: mean FDP 0.0084 (sd 0.0066), recall 0.904
  # (min 0.835), boundary selected 0.0077, p <= .05: 0.0475, p <= .1: 0.094.
  fdp, recall, worst = _memorization_figures(range(50), 0.0)
  print(f'\nmemorization, delta=0, 50 seeds: mean FDP {fdp:.4f}, recall '
        f'{recall:.4f} (min {worst:.4f})')
  assert fdp <= LEVEL + 0.004
  assert recall >= 0.98 and worst >= 0.9
  fdp, recall, worst, chosen, b05, b10 = _memorization_figures(
      range(50), 0.25, effect=0.6, boundary=0.25, num_boundary=200)
  print(f'memorization, delta=0.25, 50 seeds: mean FDP {fdp:.4f}, recall '
        f'{recall:.4f} (min {worst:.4f}); boundary: selected {chosen:.4f}, '
        f'p<=.05 {b05:.4f}, p<=.1 {b10:.4f}')
  assert fdp <= LEVEL
  assert recall >= 0.85
  assert chosen <= LEVEL
  assert 0.04 <= b05 <= 0.05 + 0.007
  assert 0.085 <= b10 <= 0.1 + 0.01


# ---------------------------------------------------------------------------
# 4. The nulls: on records without signal they count what the estimates
#    count by chance; on records with signal they leave the signal out.
# ---------------------------------------------------------------------------


def _null_pair_counts(seeds, num_nulls=2, planted=0):
  """(observed raw pairs, mean null raw pairs) per seed: influence >= 0.15
  over the whole family (memorization 1.0 everywhere)."""
  observed, null = [], []
  for seed in seeds:
    if planted:
      masks, test, _ = _planted_pairs(seed, num_planted=planted)
    else:
      masks, test = _noise_pairs(seed)
    k, n = masks.shape
    specs = _all_view(masks, np.ones(n)) + [
        views.Spec(f'null{p}', np.arange(k), np.ones(n),
                   selection.derangement(k, 10 * seed + p))
        for p in range(num_nulls)]
    _, results = views.influence_views(
        masks, test, np.zeros(n, np.int64), np.zeros(test.shape[1], np.int64),
        specs, level=LEVEL)
    observed.append(len(results['all'].raw_train))
    null.append(np.mean([len(results[f'null{p}'].raw_train)
                         for p in range(num_nulls)]))
  return np.array(observed, np.float64), np.array(null)


def test_null_pairs_count_the_chance_pairs():
  # Pure noise (with a per-trial quality, sd 0.1): ~700 of the 30,000 pairs
  # pass 0.15 by chance in every view. Measured: ratio observed / null
  # 0.981 on seeds 0-9; 1.004 over 200 seeds, whose blocks of 10 seeds
  # range 0.955 - 1.048 (sd ~0.02): the bounds are ~5 sd.
  observed, null = _null_pair_counts(range(10))
  ratio = observed.mean() / null.mean()
  print(f'\npair null, 10 seeds: observed {observed.mean():.1f}, null '
        f'{null.mean():.1f}, ratio {ratio:.4f}')
  assert observed.mean() > 300
  assert 0.9 <= ratio <= 1.1


def test_null_pairs_leave_the_planted_pairs_out():
  # 100 planted pairs of effect 0.5 (all pass 0.15 at k=200) on top of the
  # chance pairs: observed - null ~ 100. A null that kept the trials'
  # own predictions would give 0. Per-seed sd of observed - null ~42
  # (measured on noise), so 10 seeds: sd ~13; measured 101.4.
  observed, null = _null_pair_counts(range(10), planted=100)
  excess = float(np.mean(observed - null))
  print(f'\npair null with 100 planted pairs, 10 seeds: observed '
        f'{observed.mean():.1f}, null {null.mean():.1f}')
  assert 60 <= excess <= 140


@pytest.mark.slow
def test_null_pairs_over_many_seeds():
  # Measured: 1.0185 on seeds 0-49, 1.004 over 200 seeds; the sd of a
  # 50-seed ratio is ~0.009 (per-seed sd of (observed - null) / null 0.061),
  # so the bounds are ~4.5 sd.
  observed, null = _null_pair_counts(range(50))
  ratio = observed.mean() / null.mean()
  print(f'\npair null, 50 seeds: ratio {ratio:.4f}')
  assert 0.96 <= ratio <= 1.04


def _settings(**overrides):
  return Estimator(**overrides)


def _memorization_null_counts(seeds, planted=0):
  """(observed count of mem >= 0.25, assess's null count) per seed; k=24,
  n=1000, correctness independent of the masks (per-trial quality sd 0.1)
  except for `planted` examples with mem 0.6."""
  observed, null = [], []
  for seed in seeds:
    rng = np.random.default_rng(seed)
    k, n, n_test = 24, 1000, 10
    masks = rng.random((k, n)) < 0.7
    quality = rng.normal(0.0, 0.1, (k, 1))
    p = np.clip(rng.uniform(0.2, 0.8, n) + quality, 0, 1)
    p[:, :planted] = 0.3 + 0.6 * masks[:, :planted]
    correct = rng.random((k, n)) < p
    test = rng.random((k, n_test)) < 0.5
    loaded = _records(masks, correct, test)
    mem = scores.memorization(masks, correct)
    result = assessment.assess(loaded, _settings(null_permutations=2), mem,
                               test, seed=seed)
    observed.append(result.summary['memorized']['raw'])
    null.append(result.summary['null']['raw_memorized'])
    # Its definition: the count over the masks of trial perm[t].
    want = np.mean([np.sum(scores.memorization(
        masks[selection.derangement(k, seed + q)], correct).memorization
                           >= 0.25) for q in range(2)])
    assert null[-1] == want
  return np.array(observed, np.float64), np.array(null)


def test_null_memorization_counts_the_chance_examples():
  # Measured: ratio 0.990 on seeds 0-9; 1.004 over 100 seeds, whose
  # blocks of 10 range 0.963 - 1.042.
  observed, null = _memorization_null_counts(range(10))
  ratio = observed.mean() / null.mean()
  print(f'\nmemorization null, 10 seeds: observed {observed.mean():.1f}, '
        f'null {null.mean():.1f}, ratio {ratio:.4f}')
  assert observed.mean() > 50
  assert 0.9 <= ratio <= 1.1
  # With 100 planted examples of mem 0.6 (k_in ~17, k_out ~7: nearly all
  # pass 0.25), observed - null ~ 100 - 13 (the chance count among them);
  # measured 89.7.
  observed, null = _memorization_null_counts(range(5), planted=100)
  excess = float(np.mean(observed - null))
  print(f'memorization null with 100 planted, 5 seeds: observed '
        f'{observed.mean():.1f}, null {null.mean():.1f}')
  assert 60 <= excess <= 120


@pytest.mark.slow
def test_null_memorization_over_many_seeds():
  # Measured: 1.004 (the sd of a 100-seed ratio is ~0.01).
  observed, null = _memorization_null_counts(range(100))
  ratio = observed.mean() / null.mean()
  print(f'\nmemorization null, 100 seeds: ratio {ratio:.4f}')
  assert 0.96 <= ratio <= 1.04


# ---------------------------------------------------------------------------
# 5. assess: its figures are those of scores.influence / memorization_tests
#    on each view's trials, and its controlled set finds planted pairs.
# ---------------------------------------------------------------------------


def _assess_case(seed=8, k=44, n=120, n_test=30):
  """Two labels, memorization planted for half the examples (so that the
  pair family is a real subset), pairs (j, j) planted for j < 10."""
  rng = np.random.default_rng(seed)
  masks = rng.random((k, n)) < 0.7
  p = np.full((k, n), 0.5)
  p[:, : n // 2] = 0.2 + 0.7 * masks[:, : n // 2]
  correct = rng.random((k, n)) < p
  test = rng.random((k, n_test)) < 0.5
  for j in range(10):
    test[:, j] = rng.random(k) < 0.5 + 0.7 * (masks[:, j] - 0.5)
  train_labels = rng.integers(0, 2, n)
  test_labels = rng.integers(0, 2, n_test)
  train_labels[:10] = test_labels[:10]
  return _records(masks, correct, test, train_labels, test_labels)


def _influence_of(loaded, rows, mem_values, perm=None):
  test = loaded.test_correct[rows] if perm is None else (
      loaded.test_correct[perm])
  return scores.influence(loaded.masks[rows], test, loaded.train_labels,
                          loaded.test_labels, mem_values, topk=10)


def test_assess_figures_are_those_of_each_view():
  loaded = _assess_case()
  k = loaded.num_trials
  settings = _settings(null_permutations=2)
  mem = scores.memorization(loaded.masks, loaded.train_correct)
  result = assessment.assess(loaded, settings, mem, loaded.test_correct,
                             seed=3)
  summary = result.summary
  everything = np.arange(k)
  want = _influence_of(loaded, everything, mem.memorization)
  assert set(_pairs(result.influence)) == set(_pairs(want))
  assert len(want.pair_train) > 0
  family = int(np.sum((mem.memorization[:, None] >= 0.25)
                      & (loaded.train_labels[:, None]
                         == loaded.test_labels[None, :])))
  pairs = summary['pairs']
  assert pairs['family'] == family
  assert pairs['raw'] == len(want.pair_train)
  assert pairs['controlled'] == int(result.pairs.selected.sum()) > 0
  assert pairs['controlled_in_raw'] == len(result.pairs.controlled_set()
                                           & set(_pairs(want)))
  assert pairs['null_influence'] == 0.15 and pairs['level'] == 0.1
  mem_tests = selection.memorization_tests(loaded.masks,
                                           loaded.train_correct, 0.25, 0.1)
  assert summary['memorized'] == {
      'raw': int(np.sum(mem.memorization >= 0.25)),
      'controlled': int(mem_tests['selected'].sum()),
      'tested': mem_tests['num_tests'], 'level': 0.1, 'method': 'bh',
      'null_memorization': 0.25}
  assert summary['memorized']['controlled'] > 0
  # The nulls: the pairs of trial t's masks against trial perm[t]'s test
  # predictions, perm = derangement(k, seed + p).
  null_counts = [len(_influence_of(loaded, everything, mem.memorization,
                                   selection.derangement(k, 3 + p)).pair_train)
                 for p in range(2)]
  null = summary['null']
  assert null['permutations'] == 2
  assert null['raw_pairs'] == np.mean(null_counts)
  assert null['pairs_fdp'] == pytest.approx(
      min(1.0, np.mean(null_counts) / len(want.pair_train)))
  # Convergence: each nested view against scores.* on its own trials.
  rows = views.nested_rows(k)
  assert [row['view'] for row in result.convergence] == list(views.NESTED)
  assert summary['convergence'] == result.convergence
  for row in result.convergence:
    r = rows[row['view']]
    view_mem = scores.memorization(loaded.masks[r],
                                   loaded.train_correct[r]).memorization
    view_pairs = _influence_of(loaded, r, view_mem)
    assert row['trials'] == len(r)
    assert row['memorized_raw'] == int(np.sum(view_mem >= 0.25))
    assert row['memorized_controlled'] == int(selection.memorization_tests(
        loaded.masks[r], loaded.train_correct[r], 0.25, 0.1)['selected'].sum())
    assert row['pairs_raw'] == len(view_pairs.pair_train)
    assert row['pairs_raw_jaccard'] == pytest.approx(
        scores.jaccard(set(_pairs(view_pairs)), set(_pairs(want))))
    assert row['memorization_spearman'] == pytest.approx(
        ranks.correlations(view_mem, mem.memorization)[1])
  assert result.convergence[-1]['pairs_raw_jaccard'] == 1.0
  assert result.convergence[-1]['pairs_controlled_jaccard'] == 1.0
  # Split halves: even against odd trials.
  halves = []
  for name in ('k/2', 'odd'):
    r = rows[name]
    view_mem = scores.memorization(loaded.masks[r],
                                   loaded.train_correct[r]).memorization
    halves.append((view_mem, set(_pairs(_influence_of(loaded, r, view_mem)))))
  split = summary['split_half']
  assert split['trials_per_half'] == [22, 22]
  assert split['pairs_per_half'] == [len(halves[0][1]), len(halves[1][1])]
  assert split['pairs_jaccard'] == pytest.approx(
      scores.jaccard(halves[0][1], halves[1][1]))
  assert split['memorization_pearson'] == pytest.approx(
      ranks.correlations(halves[0][0], halves[1][0])[0])


def test_assess_switches():
  loaded = _assess_case(k=12)
  mem = scores.memorization(loaded.masks, loaded.train_correct)
  result = assessment.assess(
      loaded, _settings(null_permutations=0, convergence=False,
                        split_half=False), mem, loaded.test_correct)
  assert 'null' not in result.summary
  assert result.summary['convergence'] == [] and result.convergence == []
  assert result.summary['split_half'] is None
  # k < 8: no convergence rows even when asked; the halves still come.
  loaded = _assess_case(k=6)
  mem = scores.memorization(loaded.masks, loaded.train_correct)
  result = assessment.assess(loaded, _settings(), mem, loaded.test_correct)
  assert result.summary['convergence'] == []
  assert result.summary['split_half']['trials_per_half'] == [3, 3]
  assert result.summary['null']['permutations'] == 1


def test_assess_controls_planted_pairs():
  # _labelled_pairs through assess, the memorization planted at 0.6 for
  # every training example (so the family is the 300 same-label pairs):
  # the default null (the influence threshold) finds the strong pairs and
  # few others; BY selects a subset of BH; pair_null=0 also selects the
  # boundary pairs (true influence 0.15 > 0, z ~ 2 at k=200). Measured
  # (seed 0): BH 102 selected (100 strong, 2 boundary); BY 100, all strong;
  # pair_null=0: 167 (100 strong, 64 boundary, 3 of influence 0).
  masks, test, train_labels, test_labels = _labelled_pairs(0)
  rng = np.random.default_rng(0)
  correct = rng.random(masks.shape) < 0.2 + 0.6 * masks
  loaded = _records(masks, correct, test, train_labels, test_labels)
  mem = scores.memorization(masks, correct)
  assert np.all(mem.memorization >= 0.25)
  figures = {}
  for name, settings in (('bh', _settings()),
                         ('by', _settings(fdr_method='by')),
                         ('zero', _settings(pair_null=0.0))):
    result = assessment.assess(loaded, settings, mem, test)
    chosen = result.pairs.controlled_set()
    kinds = np.array([i % 3 for i, _ in chosen])
    figures[name] = (chosen, kinds)
    assert result.summary['pairs']['family'] == 300
    assert result.summary['pairs']['controlled'] == len(chosen)
  print('\nassess, planted pairs: ' + ', '.join(
      f'{name}: {len(c)} selected, {np.sum(kd == 0)} strong, '
      f'{np.sum(kd == 1)} boundary' for name, (c, kd) in figures.items()))
  for name in ('bh', 'by'):
    chosen, kinds = figures[name]
    assert np.sum(kinds == 0) >= 95
    assert np.sum(kinds != 0) <= 0.1 * len(chosen) + 3
  assert figures['by'][0] <= figures['bh'][0]
  assert np.sum(figures['zero'][1] == 1) >= 40
  assert np.sum(figures['zero'][1] == 2) <= 0.1 * len(figures['zero'][0])


# ---------------------------------------------------------------------------
# 6. The planner.
# ---------------------------------------------------------------------------


def _planner_records(seed, k=128, n=2000, n_test=20, r=0.7):
  """Per example a known p_out ~ U(0.05, 0.95) and, for 30%, a memorization
  mem ~ U(0, 1 - p_out) (p_in = p_out + mem); test examples independent of
  the masks (every influence 0). Returns (records, p_in, p_out)."""
  rng = np.random.default_rng(seed)
  masks = rng.random((k, n)) < r
  p_out = rng.uniform(0.05, 0.95, n)
  mem = np.where(rng.random(n) < 0.3, rng.uniform(0, 1, n) * (1 - p_out), 0.0)
  p_in = p_out + mem
  correct = rng.random((k, n)) < np.where(masks, p_in, p_out)
  test = rng.random((k, n_test)) < rng.uniform(0.3, 0.7, n_test)
  return _records(masks, correct, test), p_in, p_out


def _plan(loaded, **kw):
  mem = scores.memorization(loaded.masks, loaded.train_correct).memorization
  return planner.Plan(loaded, mem, _settings(), pair_sample=kw.pop(
      'pair_sample', 2000), **kw)


def test_planner_predicts_the_standard_errors_at_larger_k():
  # From the first 32 of 128 trials, the RMS standard error at K = 128
  # against the RMS of the real errors of the 128-trial estimates (the true
  # memorization p_in - p_out is known), and the 0.9 quantile against the
  # true per-example standard errors' quantile. Measured (seeds 0-2): RMS
  # predicted / measured 1.041, 1.062, 1.025 (a few % high: the pilot's
  # own k_in / k per example, noisy at k = 32, enters as 1 / r and
  # 1 / (1 - r)); seed 0: quantile predicted / true 1.101 (the quantile of
  # noisy 32-trial variances sits high), pairs RMS predicted / measured
  # 1.018.
  loaded, p_in, p_out = _planner_records(0)
  pilot = _first(loaded, 32)
  plan = _plan(pilot)
  row = plan.at(128)
  full = scores.memorization(loaded.masks, loaded.train_correct)
  measured = float(np.sqrt(np.nanmean((full.memorization
                                       - (p_in - p_out)) ** 2)))
  ratio = row['memorization']['stderr_rms'] / measured
  true_var = p_in * (1 - p_in) / 0.7 + p_out * (1 - p_out) / 0.3
  true_quantile = math.sqrt(np.quantile(true_var[true_var > 0], 0.9) / 128)
  quantile_ratio = row['memorization']['stderr_quantile'] / true_quantile
  # The pairs (all of influence 0): the RMS of the 128-trial influences of
  # the sampled pairs is their RMS error.
  pilot_mem = scores.memorization(pilot.masks,
                                  pilot.train_correct).memorization
  rows, cols, _ = planner.sample_pairs(pilot, pilot_mem, 0.25, True, 2000, 0)
  influence, _ = scores.pair_statistics(loaded.masks, loaded.test_correct,
                                        rows, cols)
  pair_ratio = row['pairs']['stderr_rms'] / float(np.sqrt(np.mean(
      influence ** 2)))
  print(f'\nplanner, K=128 from 32 trials: memorization RMS stderr '
        f'predicted/measured {ratio:.4f}, 0.9 quantile predicted/true '
        f'{quantile_ratio:.4f}; pairs RMS predicted/measured '
        f'{pair_ratio:.4f}')
  assert 0.85 <= ratio <= 1.15
  assert 0.85 <= quantile_ratio <= 1.15
  assert 0.85 <= pair_ratio <= 1.15
  # 1 / k scaling: the prediction at 4 K is half that at K.
  assert plan.at(512)['memorization']['stderr_rms'] == pytest.approx(
      row['memorization']['stderr_rms'] / 2, rel=1e-12)


def test_planner_trials_for_stderr():
  loaded, _, _ = _planner_records(1, k=32, n=500)
  plan = _plan(loaded)
  values = plan.mem['unbiased']
  values = values[np.isfinite(values) & (values > 0)]
  quantile = float(np.quantile(values, 0.9))
  for target in (0.1, 0.05, 0.02):
    k = plan.trials_for_stderr(target)
    # The fewest trials at which the 0.9 quantile is <= the target.
    assert math.sqrt(quantile / k) <= target < math.sqrt(quantile / (k - 1))
    assert plan.at(k)['memorization']['stderr_quantile'] <= target
    assert plan.at(k - 1)['memorization']['stderr_quantile'] > target
  # A target met already: at least 2 trials.
  assert plan.trials_for_stderr(10.0) == 2


def _pair_records(seed, k, effect, num_planted=100, n=300, n_test=100):
  """Every training example memorized (p_in 0.8, p_out 0.2: the family is
  all n x n_test pairs); `num_planted` pairs (i_j, j) of influence
  `effect`."""
  rng = np.random.default_rng(seed)
  base = rng.uniform(0.3, 0.7, n_test)
  rows = rng.choice(n, num_planted, replace=False)
  masks = rng.random((k, n)) < 0.7
  correct = rng.random((k, n)) < 0.2 + 0.6 * masks
  test = rng.random((k, n_test)) < base
  for i, j in zip(rows, range(num_planted)):
    test[:, j] = rng.random(k) < base[j] + effect * (masks[:, i] - 0.5)
  return _records(masks, correct, test), set(zip(rows.tolist(),
                                                 range(num_planted)))


def test_planner_with_planted_pairs():
  # 100 planted pairs of influence 0.6 among 30,000; a 32-trial pilot of
  # 128 trials. At K = 128 the real controlled set (influence_views on all
  # 128 trials) holds ~95 planted pairs. Measured (seed 0): predicted
  # controlled at 128: 90.0 (the prior fitted on 32 trials, checked by the
  # halves); predicted Jaccard at 32, 64, 128, 256: 0.000 0.333 0.735
  # 0.834.
  loaded, planted = _pair_records(0, 128, 0.6)
  pilot = _first(loaded, 32)
  plan = _plan(pilot, pair_sample=3000)
  mem = scores.memorization(loaded.masks, loaded.train_correct).memorization
  _, results = views.influence_views(
      loaded.masks, loaded.test_correct, loaded.train_labels,
      loaded.test_labels, _all_view(loaded.masks, mem))
  actual = results['all'].controlled_set()
  predicted = plan.at(128)['pairs']['controlled']
  jaccards = [plan.at(k)['pairs']['controlled_jaccard']
              for k in (32, 64, 128, 256)]
  print(f'\nplanner, planted pairs: predicted controlled at 128 '
        f'{predicted:.1f}, actual {len(actual)} ({len(actual & planted)} '
        f'planted); predicted Jaccard at 32, 64, 128, 256: '
        + ' '.join(f'{j:.3f}' for j in jaccards))
  assert len(actual & planted) >= 90
  assert predicted >= 0.5 * len(actual & planted)
  # (NaN: no run selects anything.)
  jaccards = np.nan_to_num(jaccards)
  assert all(b >= a for a, b in zip(jaccards, jaccards[1:]))
  assert jaccards[-1] > jaccards[1]
  pilot_mem = scores.memorization(pilot.masks,
                                  pilot.train_correct).memorization
  assert plan.pairs['m'] == np.sum(pilot_mem >= 0.25) * 100


def _noise_plan(seed, k):
  loaded, _ = _pair_records(seed, k, 0.0, num_planted=0, n=400)
  return _plan(loaded, pair_sample=5000)


def test_planner_pure_noise_predicts_an_empty_set():
  # Test predictions independent of the masks, a 256-trial pilot: no pair
  # exceeds 0.15 beyond chance; the controlled set is predicted empty at
  # any k. Measured (seeds 0-2): controlled at k = 10^6: 0.0, 8e-9, 4e-11.
  plan = _noise_plan(0, 256)
  print(f'\nplanner, pure noise, 256 trials: controlled at 1e6 '
        f'{plan.at(10**6)["pairs"]["controlled"]:.3g}')
  assert plan.trials_for_jaccard(0.7) == 'empty'
  summary = plan.summary()
  assert summary['trials_for_target_pair_jaccard'] == 'empty'
  # 256 trials would have found a pair of influence ~0.46: 'no sign of
  # influence', not 'too few trials to tell'.
  assert summary['detectable_influence'] < 0.5
  # Before an estimate the sentence is the planner's expectation; with the
  # estimator's measured figures, what was measured.
  assert 'no pair is expected to exceed the null' in summary['advice']
  measured = {'pairs': {'controlled': 0},
              'memorized': {'controlled': plan.at(256)['memorization'][
                  'controlled']}}
  summary = plan.summary(measured=measured)
  assert 'no pair exceeds the null beyond chance' in summary['advice']
  assert 'no sign of influence' in summary['advice']
  assert 'underpowered' not in summary['advice']


def test_planner_says_underpowered_when_too_few_trials():
  # The same noise at 16 trials: a pair of influence 0.5 cannot be selected
  # from a family of 40,000 (its test needs z ~ 5 with a standard error of
  # ~0.25): the sentence says so and how many trials would.
  plan = _noise_plan(0, 16)
  summary = plan.summary()
  assert summary['trials_to_detect_effect'] > 16
  assert plan.at(summary['trials_to_detect_effect'])['pairs'][
      'detectable_influence'] <= 0.5 + 1e-9
  assert 'underpowered at this k' in summary['advice']
  assert f"about {summary['trials_to_detect_effect']:,} trials" in (
      summary['advice'])


def test_planner_check_withholds_a_failed_pair_model():
  loaded, planted = _pair_records(0, 128, 0.6)
  plan = _plan(loaded, pair_sample=3000)
  predicted = plan.at(128)['pairs']['controlled']
  good = {'pairs': {'controlled': predicted * 1.5},
          'memorized': {'controlled': plan.at(128)['memorization'][
              'controlled']}}
  summary = plan.summary(measured=good)
  assert summary['check']['pairs']['ok']
  assert summary['check']['memorization']['ok']
  assert 'controlled' in summary['rows'][1]['pairs']
  bad = {'pairs': {'controlled': predicted * 2.5 + 10},
         'memorized': good['memorized']}
  summary = plan.summary(measured=bad)
  assert not summary['check']['pairs']['ok']
  assert summary['trials_for_target_pair_jaccard'] == 'withheld'
  assert all(row['pairs'] == {'stderr_rms': row['pairs']['stderr_rms'],
                              'stderr_quantile': row['pairs'][
                                  'stderr_quantile'], 'withheld': True}
             for row in summary['rows'])
  assert 'failed its check' in summary['advice']
  # Both small counts agree whatever their ratio.
  assert planner._agrees(0.2, 3, 2.0) and not planner._agrees(0.2, 4, 2.0)
  del planted


def test_shrink_factor_on_noise_and_on_planted_effects():
  # A prior claiming 5% at 0.5 when every true value is 0 (noise): the other
  # half finds nothing (alpha ~ 0). The same prior when 5% truly are at 0.5:
  # alpha ~ 1. Estimates y = mu + N(0, s^2) per half, s = 0.1.
  rng = np.random.default_rng(4)
  g = _point((0.0, 0.95), (0.5, 0.05))
  s = np.full(4000, 0.1)
  for share, low, high in ((0.0, 0.0, 0.1), (0.05, 0.85, 1.0)):
    mu = np.where(rng.random(4000) < share, 0.5, 0.0)
    halves = [(mu + rng.normal(0, 0.1, 4000), s) for _ in range(2)]
    alpha = prior.shrink_factor(g, halves, 0.15)
    print(f'\nshrink factor, {share:.0%} at 0.5: {alpha:.3f}')
    assert low <= alpha <= high
  shrunk = prior.shrunk(g, 0.2, 0.15)
  assert shrunk.sum() == pytest.approx(1.0)
  assert shrunk[planner.GRID > 0.15].sum() == pytest.approx(0.01)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    'planner limitation: from a 32-trial pilot the prior fitted to '
    'pure-noise pair estimates has 0.6% of its mass above 0.15; the halves '
    'confirm 63% of it, and the 0.38% left predicts pairs at large k '
    '(trials_for_jaccard 29,900 instead of "empty"). From 64 trials: '
    '0.01%, "empty"; from 128: none'))
def test_planner_pure_noise_small_pilot():
  plan = _noise_plan(0, 32)
  assert plan.trials_for_jaccard(0.7) == 'empty'


def test_fit_prior_recovers_a_planted_prior():
  # x = mu + N(0, s^2), mu = 0 (80%) or 0.5 (20%), s in [0.05, 0.1]: the
  # fitted g puts the planted fraction (0.1857 of these 3000 draws) of its
  # mass near 0.5 and the rest near 0. Measured: 0.1864 within 0.1 of 0.5,
  # 0.8136 within 0.1 of 0.
  rng = np.random.default_rng(9)
  mu = np.where(rng.random(3000) < 0.2, 0.5, 0.0)
  s = rng.uniform(0.05, 0.1, 3000)
  g = prior.fit_prior(mu + rng.normal(0, s), s)
  assert g.shape == planner.GRID.shape
  assert g.sum() == pytest.approx(1.0)
  near_half = g[np.abs(planner.GRID - 0.5) <= 0.1 + 1e-9].sum()
  near_zero = g[np.abs(planner.GRID) <= 0.1 + 1e-9].sum()
  print(f'\nfit_prior: mass near 0.5 {near_half:.4f}, near 0 {near_zero:.4f}')
  planted = float(np.mean(mu == 0.5))
  assert near_half == pytest.approx(planted, abs=0.01)
  assert near_zero == pytest.approx(1 - planted, abs=0.01)


def _point(*mass):
  """A prior on GRID from (value, weight) pairs (values on the grid)."""
  g = np.zeros(len(planner.GRID))
  for value, weight in mass:
    g[int(np.argmin(np.abs(planner.GRID - value)))] += weight
  return g


def test_simulate_by_hand():
  # Every unit at 1 (p_out 0, p_in 1), k = 400: every test rejects, so all
  # m are selected in both runs, none false: (m, 0, 1, 1).
  units = {'value': np.ones(200), 'p_out': np.zeros(200)}
  count, fdr, jaccard, share = planner.simulate(units, 400, 0.5, 0.15, 0.1,
                                                5000)
  assert (count, fdr, jaccard, share) == (5000, 0.0, 1.0, 1.0)
  # Every unit at 0 with p = 1/2: nothing exceeds delta = 0.15 beyond
  # chance at q = 0.1 among 200 (a false rejection needs z ~ 3 under a
  # null 0.15 below the truth): (0, 0, NaN).
  units = {'value': np.zeros(200), 'p_out': np.full(200, 0.5)}
  count, fdr, jaccard, _ = planner.simulate(units, 400, 0.5, 0.15, 0.1, 200)
  assert count == 0 and fdr == 0 and math.isnan(jaccard)
  # Filtered: units right in every trial cannot be tested; the family's
  # tested share is the others'.
  units = {'value': np.r_[np.ones(50), np.zeros(150)],
           'p_out': np.r_[np.zeros(50), np.ones(150)]}
  count, _, _, share = planner.simulate(units, 400, 0.5, 0.15, 0.1, 200,
                                        filtered=True)
  assert share == 0.25 and count == 50
  # Fewer than 2 trials: no run to simulate.
  count, fdr, jaccard, share = planner.simulate(units, 1, 0.5, 0.15, 0.1, 200)
  assert (count, fdr, share) == (0.0, 0.0, 0.0) and math.isnan(jaccard)


def test_simulate_is_the_estimators_selection_on_known_truths():
  # 500 examples memorized 0.5 (p_out 0.4), 1,500 right in 99% of trials,
  # r = 0.5: the mean controlled count of the estimator's own test and BH
  # (selection.memorization_tests, 12 seeds of records drawn from these
  # truths) against the simulation's (12 seeds), at k = 64 for BH and 96
  # for BY (at 64 BY sits on its cliff: 0 or a hundred from seed to seed).
  # Measured: BH 244.8 / 250.7, BY (k = 96) 174.8 / 170.1.
  value = np.r_[np.full(500, 0.5), np.zeros(1500)]
  p_out = np.r_[np.full(500, 0.4), np.full(1500, 0.99)]
  units = {'value': value, 'p_out': p_out}
  figures = {}
  for method, k in (('bh', 64), ('by', 96)):
    real, simulated = [], []
    for seed in range(12):
      rng = np.random.default_rng(seed)
      masks = rng.random((k, 2000)) < 0.5
      correct = rng.random((k, 2000)) < p_out + value * masks
      real.append(selection.memorization_tests(
          masks, correct, 0.25, LEVEL, method)['selected'].sum())
      simulated.append(planner.simulate(units, k, 0.5, 0.25, LEVEL, 2000,
                                        method, seed=seed)[0])
    figures[method] = (float(np.mean(real)), float(np.mean(simulated)))
  print('\nsimulate vs the estimator on known truths: ' + ', '.join(
      f'{m}: {r:.1f} / {s:.1f}' for m, (r, s) in figures.items()))
  for real, simulated in figures.values():
    assert simulated == pytest.approx(real, rel=0.08)


def test_sample_pairs_by_hand():
  # Train labels 0 0 1 1, memorization .9 .1 .5 .3 (threshold .25:
  # candidates 0, 2, 3); test labels 0 1 1. Same-label family: (0, 0),
  # (2, 1), (2, 2), (3, 1), (3, 2): m = 5. Without labels: 3 x 3 = 9.
  loaded = types.SimpleNamespace(train_labels=np.array([0, 0, 1, 1]),
                                 test_labels=np.array([0, 1, 1]))
  mem_values = np.array([0.9, 0.1, 0.5, 0.3])
  rows, cols, m = planner.sample_pairs(loaded, mem_values, 0.25, True, 10, 0)
  assert m == 5
  assert set(zip(rows.tolist(), cols.tolist())) == {
      (0, 0), (2, 1), (2, 2), (3, 1), (3, 2)}
  rows, cols, m = planner.sample_pairs(loaded, mem_values, 0.25, False, 100,
                                       0)
  assert m == 9 and len(set(zip(rows.tolist(), cols.tolist()))) == 9
  # A sample smaller than the family: `size` pairs, all in it.
  rows, cols, m = planner.sample_pairs(loaded, mem_values, 0.25, True, 4, 0)
  assert m == 5 and len(rows) == len(cols) == 4
  assert set(zip(rows.tolist(), cols.tolist())) <= {
      (0, 0), (2, 1), (2, 2), (3, 1), (3, 2)}
  # Uniform over the family: row 0 (label 0) holds 1 of its 4001 pairs,
  # rows 1 and 2 (label 1) 2000 each; 3000 draws: ~0.75 from row 0 and
  # 1500 +- 27 (sd) from each of the others.
  big = types.SimpleNamespace(train_labels=np.repeat([0, 1], [1, 2]),
                              test_labels=np.repeat([0, 1], [1, 2000]))
  rows, cols, m = planner.sample_pairs(big, np.ones(3), 0.25, True, 3000, 1)
  assert m == 1 + 2 * 2000 and len(rows) == 3000
  counts = np.bincount(rows, minlength=3)
  assert counts[0] <= 6
  assert abs(counts[1] - 1500) < 120 and abs(counts[2] - 1500) < 120
  assert np.all(big.test_labels[cols] == big.train_labels[rows])
  assert len(np.unique(cols[rows == 1])) > 1000     # spread over the 2000
  np.testing.assert_array_equal(
      rows, planner.sample_pairs(big, np.ones(3), 0.25, True, 3000, 1)[0])
  # No candidate: an empty family.
  rows, cols, m = planner.sample_pairs(loaded, np.zeros(4), 0.25, True, 10, 0)
  assert m == 0 and len(rows) == len(cols) == 0


def test_planner_summary_and_hours():
  loaded, _, _ = _planner_records(2, k=16, n=300)
  plan = _plan(loaded)
  assert plan.seconds == 12.0          # 1 + 10 + 1 s per trial
  row = plan.at(64)
  assert row['training_hours'] == pytest.approx(12.0 * 64 / 3600)
  assert row['more_training_hours'] == pytest.approx(12.0 * 48 / 3600)
  assert plan.at(8)['more_training_hours'] == 0.0
  summary = plan.summary(target_stderr=0.05)
  assert [r['trials'] for r in summary['rows']] == [16, 32, 64, 128, 256,
                                                    512]
  need = summary['trials_for_target_stderr']
  assert need == plan.trials_for_stderr(0.05) > 16
  assert f'{need:,} trials' in summary['advice']
  assert summary['advice'].startswith('Planner: ')


def test_planner_variances_by_hand():
  # k = 4; example 0: in-trials 0, 1, 2 with values 1 0 1, out-trial 3 with
  # value 0. Unbiased: v_in = (2/3)(1/3) * 3/2 = 1/3, v_out undefined (one
  # value). Smoothed: p_in = (2 + 1/2) / 4 = 0.625 -> 0.234375, p_out =
  # (0 + 1/2) / 2 = 0.25 -> 0.1875. Example 1: in 0, 1 (values 1 1), out 2,
  # 3 (values 0 1): unbiased v_in = 0, v_out = (1/2)(1/2) * 2 = 1/2; per
  # trial (r = 1/2): w = 0 / r + (1/2) / (1/2) = 1; the estimate 1 - 1/2.
  masks = np.array([[1, 1], [1, 1], [1, 0], [0, 0]], bool)
  values = np.array([[1, 1], [0, 1], [1, 0], [0, 1]], bool)
  k_in, k_out, _, u_in, u_out, s_in, s_out = planner._side_variances(  # pylint: disable=protected-access
      masks, values)
  np.testing.assert_array_equal(k_in, [3, 2])
  np.testing.assert_array_equal(k_out, [1, 2])
  np.testing.assert_allclose(u_in, [1 / 3, 0.0], rtol=1e-12)
  assert math.isnan(u_out[0]) and u_out[1] == pytest.approx(0.5)
  np.testing.assert_allclose(s_in, [0.234375, (2.5 / 3) * (0.5 / 3)],
                             rtol=1e-12)
  np.testing.assert_allclose(s_out, [0.1875, 0.25], rtol=1e-12)
  estimate, unbiased, _ = planner._estimates(masks, values)  # pylint: disable=protected-access
  np.testing.assert_allclose(estimate, [2 / 3, 0.5], rtol=1e-12)
  assert math.isnan(unbiased[0]) and unbiased[1] == pytest.approx(1.0)


def _planner_check_module():
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  path = (pathlib.Path(__file__).resolve().parents[2] / 'benchmarks'
          / 'planner_check.py')
  spec = importlib.util.spec_from_file_location('planner_check', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
def test_planner_predicts_what_the_estimator_measures_at_its_k():
  # benchmarks/planner_check.py's planted cases at k = 128 (the demo's
  # row needs its records): the prediction at the records' own k against
  # the estimator's controlled counts there. Measured: planted truth 96.2 /
  # 125 pairs, 447.0 / 448 memorized; near-pure noise 0 / 0 and 1.0 / 1;
  # planted null 0 / 0 pairs (and at most 0.0 at 2k-32k).
  bench = _planner_check_module()
  settings = Estimator(report=False)
  for name, loaded in (('truth', bench.planted(128)),
                       ('noise', bench.near_noise(128)),
                       ('null', bench.planted(128, num_planted=0))):
    mem = scores.memorization(loaded.masks, loaded.train_correct)
    trust = assessment.assess(loaded, settings, mem, loaded.test_correct)
    plan = planner.Plan(loaded, mem.memorization, settings)
    summary = plan.summary(measured=trust.summary,
                           split=trust.summary['split_half'])
    check = summary['check']
    print(f'\nplanner check, {name}: pairs {check["pairs"]["predicted"]:.1f}'
          f' / {check["pairs"]["measured"]:.0f}, memorized '
          f'{check["memorization"]["predicted"]:.1f} / '
          f'{check["memorization"]["measured"]:.0f}')
    assert check['pairs']['ok'] and check['memorization']['ok']
    pairs, memorized = check['pairs'], check['memorization']
    if pairs['measured'] > 3:
      assert 0.5 <= pairs['predicted'] / pairs['measured'] <= 2
    if memorized['measured'] > 3:
      assert 0.8 <= memorized['predicted'] / memorized['measured'] <= 1.25
    if name == 'null':
      assert trust.summary['pairs']['controlled'] <= 1
      assert all(row['pairs']['controlled'] <= 3 for row in summary['rows'])
    if name == 'truth':
      assert pairs['measured'] >= 100


def test_grid_stderr_by_hand():
  # Accuracy 1/2 over all trials, ratio 1/2, k = 100. True value 0:
  # p_in = p_out = 1/2, variance (1/4 / 1/2 + 1/4 / 1/2) / 100 = 0.01.
  # True value 0.5: p_out = 1/2 - 0.5/2 = 1/4, p_in = 3/4, variance
  # (3/16 / 1/2) * 2 / 100 = 0.0075. True value 1: p_out = 0, p_in = 1, each
  # p (1 - p) at its floor 1 / 102: variance 4 / 102 / 100.
  se = prior.grid_stderr(np.array([0.5]), np.array([0.5]), 100)[0]
  at = {v: se[int(np.argmin(np.abs(prior.GRID - v)))] for v in (0, 0.5, 1)}
  assert at[0] == pytest.approx(0.1)
  assert at[0.5] == pytest.approx(math.sqrt(0.0075))
  assert at[1] == pytest.approx(math.sqrt(4 / 102 / 100))

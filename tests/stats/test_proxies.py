"""Tests of stats/proxies.py against hand-computed and planted truths."""

import math

import numpy as np
import pytest

from tf_memorization.reporting import estimate_figures
from tf_memorization.stats import proxies
from tf_memorization.stats import ranks

nan = np.nan

# ---------------------------------------------------------------------------
# A case small enough to work out by hand: k=3 trials, n=4 examples.
#
#            masks M     csl                 visits     learned_epoch
#   trial 0  1 1 0 0     2.0 4.0  -1  -1     4 4 -1 -1  1 4 -1 -1
#   trial 1  1 0 1 0     6.0  -1 3.0  -1     2 -1 2 -1  0 -1 2 -1
#   trial 2  0 1 1 0      -1 8.0 nan  -1     -1 4 4 -1  -1 2 1 -1
#
# -1 (and the 9.0 planted below) where M is 0 must be ignored; the NaN of
# trial 2 on example 2 is a missing value inside the subset. Example 3 is in
# no trial: NaN.
# ---------------------------------------------------------------------------
MASKS = np.array([[1, 1, 0, 0],
                  [1, 0, 1, 0],
                  [0, 1, 1, 0]], bool)
CSL = np.array([[2.0, 4.0, -1, 9.0],
                [6.0, -1, 3.0, -1],
                [-1, 8.0, nan, -1]])
VISITS = np.array([[4, 4, -1, -1],
                   [2, -1, 2, -1],
                   [-1, 4, 4, -1]])
LEARNED = np.array([[1, 4, -1, -1],
                    [0, -1, 2, -1],
                    [-1, 2, 1, -1]])
FORGETTING = np.array([[0, 2, -1, 5],
                       [1, -1, 0, -1],
                       [-1, 1, 3, -1]])
# Held-out: outcomes on every example from every trial.
CORRECT = np.array([[1, 0, 1, 0],
                    [0, 1, 0, 1],
                    [1, 1, 0, 1]], bool)
PROB = np.array([[.9, .2, .7, .4],
                 [.1, .6, .5, .8],
                 [.3, .7, .2, .6]])
HAND = {'csl': CSL, 'visits': VISITS, 'learned_epoch': LEARNED,
        'forgetting': FORGETTING, 'final_loss': CSL / 2,
        'train_correct': CORRECT, 'train_prob': PROB}


def _close(a, b):
  np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float),
                             rtol=0, atol=1e-12, equal_nan=True)


def test_learning_dynamics_by_hand():
  # All 3 trials.
  _close(proxies.proxy_values('csl', HAND, MASKS, 3),
         [(2 + 6) / 2, (4 + 8) / 2, 3.0, nan])
  _close(proxies.proxy_values('final_loss', HAND, MASKS, 3),
         [2.0, 3.0, 1.5, nan])
  _close(proxies.proxy_values('learned_epoch', HAND, MASKS, 3),
         [(1 / 4 + 0 / 2) / 2, (4 / 4 + 2 / 4) / 2, (2 / 2 + 1 / 4) / 2, nan])
  _close(proxies.proxy_values('forgetting', HAND, MASKS, 3),
         [0.5, 1.5, 1.5, nan])
  # The first 2 trials only: trial 2's values drop out.
  _close(proxies.proxy_values('csl', HAND, MASKS, 2), [4.0, 4.0, 3.0, nan])
  _close(proxies.proxy_values('learned_epoch', HAND, MASKS, 2),
         [1 / 8, 1.0, 1.0, nan])
  _close(proxies.proxy_values('csl', HAND, MASKS, 1), [2.0, 4.0, nan, nan])


def test_fewer_proxy_trials_than_masks():
  # Proxies recorded for the first 2 of 3 trials: row t is trial t.
  arrays = {'csl': CSL[:2]}
  _close(proxies.proxy_values('csl', arrays, MASKS, 2), [4.0, 4.0, 3.0, nan])
  with pytest.raises(ValueError, match='first = 3'):
    proxies.proxy_values('csl', arrays, MASKS, 3)


def test_heldout_by_hand():
  # Out-trials: ex0 {2}, ex1 {1}, ex2 {0}, ex3 {0, 1, 2}.
  _close(proxies.proxy_values('heldout_accuracy', HAND, MASKS, 3),
         [1.0, 1.0, 1.0, 2 / 3])
  _close(proxies.proxy_values('heldout_prob', HAND, MASKS, 3),
         [.3, .6, .7, (.4 + .8 + .6) / 3])
  # First 2 trials: example 0 has no out-trial among them.
  _close(proxies.proxy_values('heldout_accuracy', HAND, MASKS, 2),
         [nan, 1.0, 1.0, 0.5])
  _close(proxies.proxy_values('heldout_prob', HAND, MASKS, 2),
         [nan, .6, .7, .6])


def test_proxy_values_refuses_bad_input():
  with pytest.raises(ValueError, match='unknown proxy'):
    proxies.proxy_values('loss', HAND, MASKS, 1)
  with pytest.raises(ValueError, match='visits'):
    proxies.proxy_values('learned_epoch', {'learned_epoch': LEARNED}, MASKS, 1)
  with pytest.raises(ValueError, match='train_prob'):
    proxies.proxy_values('heldout_prob', {'csl': CSL}, MASKS, 1)
  with pytest.raises(ValueError, match='first = 0'):
    proxies.proxy_values('csl', HAND, MASKS, 0)
  with pytest.raises(ValueError, match='shape'):
    proxies.proxy_values('csl', {'csl': CSL[:, :3]}, MASKS, 1)


def test_directions_declared():
  assert set(proxies.DIRECTIONS) == set(proxies.LEARNING_DYNAMICS +
                                        proxies.HELDOUT)
  assert all(proxies.DIRECTIONS[p] == +1 for p in proxies.LEARNING_DYNAMICS)
  assert all(proxies.DIRECTIONS[p] == -1 for p in proxies.HELDOUT)


# ---------------------------------------------------------------------------
# Correlations.
# ---------------------------------------------------------------------------
def _brute_ranks(x):
  return [1 + sum(v < a for v in x) + (sum(v == a for v in x) - 1) / 2
          for a in x]


def _brute_pearson(x, y):
  mx, my = sum(x) / len(x), sum(y) / len(y)
  sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
  sxx = sum((a - mx) ** 2 for a in x)
  syy = sum((b - my) ** 2 for b in y)
  return sxy / math.sqrt(sxx * syy)


def _brute_spearman(x, y):
  pairs = [(a, b) for a, b in zip(x, y)
           if math.isfinite(a) and math.isfinite(b)]
  xs, ys = zip(*pairs)
  return _brute_pearson(_brute_ranks(xs), _brute_ranks(ys))


def _tied_sample(rng, m):
  # Few distinct values (many ties), some NaN and inf on either side.
  x = rng.integers(0, 5, m).astype(float)
  y = (x + rng.integers(-2, 3, m)).astype(float)
  x[rng.random(m) < .1] = nan
  y[rng.random(m) < .1] = np.inf
  return x, y


def test_spearman_against_brute_force_with_ties():
  rng = np.random.default_rng(0)
  for m in (5, 17, 60):
    x, y = _tied_sample(rng, m)
    assert ranks.spearman(x, y) == pytest.approx(_brute_spearman(x, y),
                                                 abs=1e-12)
  # Ranks themselves.
  np.testing.assert_array_equal(ranks.average_ranks([3., 1., 3., 2., 3.]),
                                [4., 1., 4., 2., 4.])


def test_spearman_against_scipy():
  stats = pytest.importorskip('scipy.stats')
  rng = np.random.default_rng(1)
  x, y = _tied_sample(rng, 200)
  ok = np.isfinite(x) & np.isfinite(y)
  assert ranks.spearman(x, y) == pytest.approx(
      stats.spearmanr(x[ok], y[ok])[0], abs=1e-12)
  assert ranks.pearson(x, y) == pytest.approx(
      stats.pearsonr(x[ok], y[ok])[0], abs=1e-12)


def test_pearson_and_cosine_by_hand():
  x = [1.0, 2.0, 3.0, nan]
  y = [2.0, 1.0, 4.0, 5.0]
  # Over the 3 finite pairs: centred x (-1, 0, 1), y (-1/3, -4/3, 5/3).
  assert ranks.pearson(x, y) == pytest.approx(
      (1 / 3 + 5 / 3) / math.sqrt(2 * (1 / 9 + 16 / 9 + 25 / 9)), abs=1e-12)
  assert ranks.cosine(x, y) == pytest.approx(
      (2 + 2 + 12) / math.sqrt(14 * 21), abs=1e-12)
  # Cosine is not shift-invariant; Pearson and Spearman are.
  shifted = np.asarray(x) + 10
  assert ranks.pearson(shifted, y) == pytest.approx(ranks.pearson(x, y))
  assert ranks.cosine(shifted, y) != pytest.approx(ranks.cosine(x, y))


def test_undefined_correlations_are_nan():
  for f in (ranks.spearman, ranks.pearson, ranks.cosine):
    assert math.isnan(f([1., 2., nan], [1., 3., 4.]))  # 2 pairs
  for f in (ranks.spearman, ranks.pearson):
    assert math.isnan(f([1., 1., 1., 1.], [1., 3., 4., 5.]))  # constant
  assert math.isnan(ranks.cosine([0., 0., 0.], [1., 2., 3.]))
  assert ranks.spearman([1., 2., 3.], [3., 2., 1.]) == pytest.approx(-1)


# ---------------------------------------------------------------------------
# prediction_table on planted truths.
# ---------------------------------------------------------------------------
def _rows(rows, name):
  return [r for r in rows if r['proxy'] == name]


def _spearman_tolerance(rho, m):
  """4 sd in Fisher-z space (Bonett & Wright 2000: var (1 + rho²/2)/(m-3)),
  mapped back: a bound on |estimate - rho|."""
  sd = math.sqrt((1 + rho * rho / 2) / (m - 3))
  z = math.atanh(rho)
  return max(rho - math.tanh(z - 4 * sd), math.tanh(z + 4 * sd) - rho)


def test_planted_truth_spearman_grows_as_analytic():
  # proxy_t(i) = mem_i + noise (sd s, independent per trial); every example in
  # every trial, so P_K = mem + noise of variance s²/K and, (mem, P_K)
  # bivariate normal, r = 1/sqrt(1 + s²/K), Spearman = 6/pi asin(r/2).
  rng = np.random.default_rng(2)
  n, k, s = 3000, 16, 2.0
  memorization = rng.normal(size=n)
  masks = np.ones((k, n), bool)
  csl = memorization + rng.normal(scale=s, size=(k, n))
  rows = proxies.prediction_table(
      memorization, masks, {'csl': csl}, np.ones((k, n), bool),
      np.ones((k, n)))
  csl_rows = _rows(rows, 'csl')
  assert [r['trials'] for r in csl_rows] == [1, 2, 4, 8, 16]
  values = [r['spearman'] for r in csl_rows]
  assert all(a < b for a, b in zip(values, values[1:])), values
  for r in csl_rows:
    assert r['examples'] == n
    pearson_r = 1 / math.sqrt(1 + s * s / r['trials'])
    expected = 6 / math.pi * math.asin(pearson_r / 2)
    assert abs(r['spearman'] - expected) < _spearman_tolerance(expected, n), (
        r, expected)
    assert abs(r['pearson'] - pearson_r) < _spearman_tolerance(pearson_r, n)


def test_planted_null():
  rng = np.random.default_rng(3)
  n, k = 2000, 16
  memorization = rng.uniform(-1, 1, n)
  masks = rng.random((k, n)) < 0.5
  csl = np.where(masks, rng.gamma(2.0, size=(k, n)), nan)
  correct = rng.random((k, n)) < 0.7
  prob = rng.random((k, n))
  rows = proxies.prediction_table(memorization, masks, {'csl': csl}, correct,
                                  prob)
  assert {r['proxy'] for r in rows} == {'csl', 'heldout_accuracy',
                                        'heldout_prob', proxies.REFERENCE}
  # One trial has no example both in and out of it.
  (first,) = [r for r in rows if r['proxy'] == proxies.REFERENCE and
              r['trials'] == 1]
  assert first['examples'] == 0 and math.isnan(first['spearman'])
  rows.remove(first)
  for r in rows:
    assert r['examples'] > n / 3
    assert abs(r['spearman']) < 4 / math.sqrt(r['examples']), r


def test_memorization_first_k_row_by_hand():
  rng = np.random.default_rng(4)
  n, k = 40, 6
  masks = rng.random((k, n)) < 0.5
  correct = rng.random((k, n)) < np.where(masks, 0.9, 0.5)
  memorization = rng.uniform(-1, 1, n)
  rows = proxies.prediction_table(memorization, masks, {}, correct, None,
                                  trial_counts=(4,))
  (row,) = _rows(rows, proxies.REFERENCE)
  hand = []
  for i in range(n):  # from the FIRST 4 trials
    ins = [correct[t, i] for t in range(4) if masks[t, i]]
    outs = [correct[t, i] for t in range(4) if not masks[t, i]]
    hand.append(np.mean(ins) - np.mean(outs) if ins and outs else nan)
  hand = np.array(hand)
  assert row['trials'] == 4 and row['all_trials'] == k
  assert row['examples'] == np.isfinite(hand).sum()
  assert row['spearman'] == pytest.approx(_brute_spearman(hand, memorization),
                                          abs=1e-12)
  ok = np.isfinite(hand)
  assert row['pearson'] == pytest.approx(
      _brute_pearson(hand[ok], memorization[ok]), abs=1e-12)
  assert row['cosine'] == pytest.approx(
      hand[ok] @ memorization[ok] /
      (np.linalg.norm(hand[ok]) * np.linalg.norm(memorization[ok])),
      abs=1e-12)
  # And the reference row recovers a memorization made of the same trials.
  (same,) = _rows(proxies.prediction_table(hand, masks[:4], {}, correct[:4],
                                           None, trial_counts=(4,)),
                  proxies.REFERENCE)
  assert same['spearman'] == pytest.approx(1.0)


def test_heldout_direction_gives_positive_spearman():
  # Held-out accuracy falls as memorization grows: oriented, it agrees.
  rng = np.random.default_rng(5)
  n, k = 1500, 16
  q = rng.uniform(0, 1, n)  # memorization
  masks = rng.random((k, n)) < 0.5
  correct = masks | (rng.random((k, n)) < 1 - q)
  prob = np.clip(1 - q + rng.normal(scale=.1, size=(k, n)), 0, 1)
  rows = proxies.prediction_table(q, masks, {}, correct, prob,
                                  trial_counts=(16,))
  by_name = {r['proxy']: r for r in rows}
  assert by_name['heldout_accuracy']['direction'] == -1
  assert by_name['heldout_accuracy']['spearman'] > 0.5
  assert by_name['heldout_accuracy']['pearson'] > 0.5
  assert by_name['heldout_prob']['spearman'] > 0.8


def test_counts_above_the_available_trials_are_dropped():
  rng = np.random.default_rng(6)
  n, k = 50, 8
  masks = rng.random((k, n)) < 0.5
  correct = rng.random((k, n)) < 0.7
  ld = {'csl': np.where(masks[:4], rng.random((4, n)), nan),
        'learned_epoch': np.where(masks[:4], 1, -1),
        'visits': np.where(masks[:4], 4, -1)}
  rows = proxies.prediction_table(rng.random(n), masks, ld, correct,
                                  rng.random((k, n)))
  trials = {}
  for r in rows:
    trials.setdefault(r['proxy'], []).append(r['trials'])
  assert trials == {'csl': [1, 2, 4], 'learned_epoch': [1, 2, 4],
                    'heldout_accuracy': [1, 2, 4, 8],
                    'heldout_prob': [1, 2, 4, 8],
                    proxies.REFERENCE: [1, 2, 4, 8]}
  # learned_epoch is constant (1/4) wherever defined: no correlation.
  assert all(math.isnan(r['spearman']) for r in _rows(rows, 'learned_epoch'))
  with pytest.raises(ValueError, match='unknown learning-dynamics'):
    proxies.prediction_table(rng.random(n), masks, {'loss': ld['csl']},
                             correct, None)


def _row(proxy, trials, spearman):
  return {'proxy': proxy, 'direction': proxies.DIRECTIONS.get(proxy, 1),
          'trials': trials, 'all_trials': 64, 'examples': 100,
          'spearman': spearman, 'pearson': nan, 'cosine': nan}


def test_summary_line():
  rows = [_row('csl', 8, .60), _row('csl', 16, .71),
          _row('heldout_accuracy', 8, .70), _row('heldout_accuracy', 16, .65),
          _row(proxies.REFERENCE, 16, .80)]
  assert proxies.summary_line(rows) == (
      'From 16 trials, cumulative sample loss ranks examples most like the '
      'memorization from all 64 trials (Spearman 0.71); held-out accuracy '
      '0.65; memorization itself from those 16 trials 0.80.')
  # Compared at the largest count both have, not csl's 4 against 16.
  rows = [_row('csl', 4, .9), _row('heldout_accuracy', 4, .5),
          _row('heldout_accuracy', 16, .95)]
  assert proxies.summary_line(rows).startswith(
      'From 4 trials, cumulative sample loss ranks')
  assert proxies.summary_line([_row('csl', 4, nan)]).startswith('No proxy')


def test_prediction_figure(tmp_path):
  rows = [_row('csl', 1, .3), _row('csl', 2, .5), _row('csl', 4, .6),
          _row('heldout_prob', 1, -.1), _row('heldout_prob', 4, .7),
          _row(proxies.REFERENCE, 4, .8)]
  path = str(tmp_path / 'proxies.png')
  assert estimate_figures.proxies(path, rows) == path
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  other = str(tmp_path / 'none.png')
  assert estimate_figures.proxies(other, [_row('csl', 1, nan)]) is None
  assert not (tmp_path / 'none.png').exists()


# ---------------------------------------------------------------------------
# Held-out class probabilities and label issues.
# ---------------------------------------------------------------------------
def test_heldout_class_probabilities_by_hand():
  sum_probs = np.array([[0.6, 1.2, 0.2],     # 2 trials: mean .3 .6 .1
                        [0.0, 0.0, 0.0],     # never held out
                        [0.5, 0.25, 0.125],  # 1 trial, sum .875
                        [1.5, 1.0, 1.0],     # 3 trials, sum 3.5 / 3
                        [1.0, nan, 0.0]],    # a non-finite entry
                       np.float16)
  counts = np.array([2, 0, 1, 3, 1])
  pred_probs = proxies.heldout_class_probabilities(sum_probs, counts)
  assert pred_probs.dtype == np.float32
  s = sum_probs.astype(np.float64)
  expected = np.array([s[0] / s[0].sum(), [nan] * 3, s[2] / s[2].sum(),
                       s[3] / s[3].sum(), [nan] * 3])
  np.testing.assert_allclose(pred_probs, expected, rtol=1e-6, equal_nan=True)
  assert np.isfinite(pred_probs[[0, 2, 3]]).all()
  np.testing.assert_allclose(pred_probs[[0, 2, 3]].sum(axis=1), 1, atol=1e-6)
  assert pred_probs[2, 0] == pytest.approx(0.5 / 0.875, rel=1e-7)
  with pytest.raises(ValueError, match='negative'):
    proxies.heldout_class_probabilities(sum_probs, -counts)


def test_label_issue_scores_by_hand():
  pred_probs = np.array([[.7, .2, .1],
                         [.1, .3, .6],
                         [nan, nan, nan],
                         [.25, .25, .5]])
  labels = np.array([0, 1, 2, 0])
  got = proxies.label_issue_scores(pred_probs, labels)
  _close(got['self_confidence'], [.7, .3, nan, .25])
  _close(got['margin'], [.5, -.3, nan, -.25])
  _close(got['normalized_margin'], [.75, .35, nan, .375])
  with pytest.raises(ValueError, match='outside'):
    proxies.label_issue_scores(pred_probs, np.array([0, 1, 3, 0]))


def test_detection_auc_by_hand():
  values = np.array([0.1, 0.4, 0.35, 0.8, 0.4, nan])
  flipped = np.array([1, 0, 1, 0, 1, 1], bool)
  # Lower = more suspicious. Flipped {.1, .35, .4} vs clean {.4, .8}: 5 of 6
  # pairs ordered right, one tie (.4, .4) counting 1/2. Precision at each
  # distinct threshold: .1 -> 1/1, .35 -> 2/2, .4 -> 3/4, .8 -> 3/5 (recall
  # steps 1/3, 1/3, 1/3, 0). The NaN example is left out.
  got = proxies.detection_auc(values, flipped)
  assert got.auc == pytest.approx(5.5 / 6)
  assert got.average_precision == pytest.approx((1 + 1 + .75) / 3)
  assert proxies.detection_auc(values, flipped,
                               lower_is_issue=False).auc == pytest.approx(
                                   .5 / 6)
  assert math.isnan(proxies.detection_auc(values, np.ones(6, bool)).auc)


def test_detection_auc_against_sklearn():
  metrics = pytest.importorskip('sklearn.metrics')
  rng = np.random.default_rng(7)
  values = rng.integers(0, 6, 300).astype(float)  # many ties
  flipped = rng.random(300) < 0.2 + 0.1 * values
  got = proxies.detection_auc(values, flipped, lower_is_issue=False)
  assert got.auc == pytest.approx(metrics.roc_auc_score(flipped, values))
  assert got.average_precision == pytest.approx(
      metrics.average_precision_score(flipped, values))


def _null_auc_sd(num_pos, num_neg):
  return math.sqrt((num_pos + num_neg + 1) / (12 * num_pos * num_neg))


def test_detection_on_planted_flips():
  rng = np.random.default_rng(8)
  n, num_classes = 2000, 10
  flipped = rng.random(n) < 0.1
  labels = rng.integers(0, num_classes, n)
  # Clean labels get most of the held-out mass; flipped ones little.
  label_mass = np.where(flipped, rng.beta(1, 6, n), rng.beta(6, 1, n))
  rows = np.arange(n)
  others = rng.dirichlet(np.ones(num_classes), n)
  others[rows, labels] = 0.0
  pred_probs = others / others.sum(axis=1, keepdims=True) * (
      1 - label_mass)[:, None]
  pred_probs[rows, labels] = label_mass
  issues = proxies.label_issue_scores(pred_probs, labels)
  for name in ('self_confidence', 'normalized_margin'):
    got = proxies.detection_auc(issues[name], flipped)
    assert got.auc > 0.95 and got.average_precision > 0.7, (name, got)
  # Memorization, higher = more suspicious.
  memorization = np.where(flipped, rng.normal(.6, .2, n),
                          rng.normal(.05, .1, n))
  assert proxies.detection_auc(memorization, flipped,
                               lower_is_issue=False).auc > 0.95
  # Random scores: AUC within 4 sd of 1/2.
  num_pos = int(flipped.sum())
  random_auc = proxies.detection_auc(rng.random(n), flipped).auc
  assert abs(random_auc - 0.5) < 4 * _null_auc_sd(num_pos, n - num_pos)


def test_held_out_scores_are_oriented_as_one_minus_the_score():
  rng = np.random.default_rng(5)
  k, n = 8, 200
  masks = rng.random((k, n)) < 0.5
  correct = rng.random((k, n)) < 0.7
  memorization = rng.random(n)
  rows = proxies.prediction_table(memorization, masks, {}, correct, None,
                                  trial_counts=(8,))
  (row,) = [r for r in rows if r['proxy'] == 'heldout_accuracy']
  values = proxies.proxy_values('heldout_accuracy',
                                {'train_correct': correct}, masks, 8)
  ok = np.isfinite(values)
  x, y = 1 - values[ok], memorization[ok]
  assert row['cosine'] == pytest.approx(
      x @ y / (np.linalg.norm(x) * np.linalg.norm(y)), abs=1e-12)
  assert row['cosine'] > 0  # -score would give a negative cosine here
  assert row['spearman'] == pytest.approx(
      -ranks.spearman(values, memorization), abs=1e-12)

"""Tests of membership.py and membership_eval.py: LiRA's fits and scores by
hand, its metrics against brute-force counts, planted truth and planted
null."""

import math

import numpy as np
import pytest

from tf_memorization.reporting import estimate_figures
from tf_memorization.stats import membership
from tf_memorization.stats import membership_eval


def log_normal(x, mu, sd):
  """log N(x; mu, sd), written out."""
  return -0.5 * math.log(2 * math.pi * sd**2) - (x - mu)**2 / (2 * sd**2)


def log_tail(z):
  """log(1 - Phi(z)) from math.erfc; beyond z = 20 (where erfc underflows
  soon) from the Mills ratio's series, relative error < 1e-8."""
  if z <= 20:
    return math.log(0.5 * math.erfc(z / math.sqrt(2)))
  series = 1 - z**-2 + 3 * z**-4 - 15 * z**-6
  return -z**2 / 2 - math.log(z * math.sqrt(2 * math.pi)) + math.log(series)


def brute_auc(members, others):
  members, others = np.asarray(members), np.asarray(others)
  greater = (members[:, None] > others[None, :]).sum()
  ties = (members[:, None] == others[None, :]).sum()
  return (greater + 0.5 * ties) / (len(members) * len(others))


def brute_thresholds(members, others):
  """(fpr, tpr) of every threshold `score >= u` on the pooled scores, and
  of predicting no member."""
  pooled = np.unique(np.concatenate([members, others]))
  fpr = [0.0] + [float(np.mean(others >= u)) for u in pooled]
  tpr = [0.0] + [float(np.mean(members >= u)) for u in pooled]
  return np.array(fpr), np.array(tpr)


def random_trials(seed, k, n, shift=0.0, in_fraction=0.5):
  rng = np.random.default_rng(seed)
  masks = rng.random((k, n)) < in_fraction
  phi = rng.normal(loc=rng.normal(size=n), size=(k, n)) + shift * masks
  return phi, masks


# Hand-computed case: k = 5 trials, n = 2 examples.
PHI = np.array([[1.0, 0.5],
                [2.0, -0.5],
                [4.0, 1.5],
                [0.0, 2.5],
                [-1.0, 3.0]])
MASKS = np.array([[1, 0],
                  [1, 1],
                  [1, 1],
                  [0, 0],
                  [0, 1]], bool)


def test_fit_by_hand():
  g = membership.fit(PHI, MASKS)
  np.testing.assert_array_equal(g.k_in, [3, 3])
  np.testing.assert_array_equal(g.k_out, [2, 2])
  # Example 0: in {1, 2, 4}, out {0, -1}; example 1: in {-.5, 1.5, 3},
  # out {.5, 2.5}; ddof = 1.
  np.testing.assert_allclose(g.mu_in, [7 / 3, 4 / 3])
  np.testing.assert_allclose(g.sd_in, np.sqrt([7 / 3, 111 / 36]))
  np.testing.assert_allclose(g.mu_out, [-0.5, 1.5])
  np.testing.assert_allclose(g.sd_out, np.sqrt([0.5, 2.0]))
  # Pooled within-example variance: SS over degrees of freedom.
  assert g.global_sd_in == pytest.approx(math.sqrt((14 / 3 + 222 / 36) / 4))
  assert g.global_sd_out == pytest.approx(math.sqrt(2.5 / 2))
  glob = membership.fit(PHI, MASKS, variance='global')
  np.testing.assert_allclose(glob.sd_in, [g.global_sd_in] * 2)
  np.testing.assert_allclose(glob.sd_out, [g.global_sd_out] * 2)
  np.testing.assert_allclose(glob.mu_in, g.mu_in)


def test_target_scores_by_hand():
  # Target 0 left out. Example 0 (member, x = 1): in {2, 4} -> mu 3, var 2;
  # out {0, -1} -> mu -.5, var .5. Example 1 (non-member, x = .5): in
  # {-.5, 1.5, 3} -> mu 4/3, var 111/36; out {2.5}, one trial: the out side's
  # global sd, pooled over example 0's out side only (SS .5, one df).
  scores = membership.target_scores(PHI, MASKS, 0)
  expected = [
      log_normal(1, 3, math.sqrt(2)) - log_normal(1, -0.5, math.sqrt(0.5)),
      log_normal(0.5, 4 / 3, math.sqrt(111 / 36)) -
      log_normal(0.5, 2.5, math.sqrt(0.5))]
  np.testing.assert_allclose(scores, expected, rtol=1e-12)

  # Global: in SS 2 (one df) + 222/36 (two df); out SS .5 (one df).
  sd_in, sd_out = math.sqrt((2 + 222 / 36) / 3), math.sqrt(0.5)
  glob = membership.target_scores(PHI, MASKS, 0, variance='global')
  np.testing.assert_allclose(glob, [
      log_normal(1, 3, sd_in) - log_normal(1, -0.5, sd_out),
      log_normal(0.5, 4 / 3, sd_in) - log_normal(0.5, 2.5, sd_out)],
                             rtol=1e-12)

  offline = membership.target_scores(PHI, MASKS, 0, attack='offline')
  np.testing.assert_allclose(offline, [
      -log_tail((1 + 0.5) / math.sqrt(0.5)),
      -log_tail((0.5 - 2.5) / math.sqrt(0.5))], rtol=1e-6)


def test_offline_far_tail_stays_distinct():
  # An out distribution N(0, 1) (sd 1 exactly) and targets far above it:
  # Phi(z) rounds to 1 there, the log tail does not.
  k = 6
  phi = np.zeros((k, 3))
  phi[1:, 0] = [-1, 1, -1, 1, 0]
  phi[1:, 1] = phi[1:, 0]
  phi[1:, 2] = phi[1:, 0]
  phi[0] = [9.0, 12.0, 30.0]
  masks = np.zeros((k, 3), bool)
  scores = membership.target_scores(phi, masks, 0, attack='offline')
  # The out sd is 1 (ddof 1 over -1, 1, -1, 1, 0).
  for score, x in zip(scores, phi[0]):
    assert score == pytest.approx(-log_tail(x), rel=1e-6)
  assert scores[0] < scores[1] < scores[2]


def _refit_scores(phi, masks, t, variance, attack):
  """Lambda of target t from a fit on the other trials, the formulas
  written out."""
  g = membership.fit(np.delete(phi, t, 0), np.delete(masks, t, 0), variance)
  x = phi[t]
  out = -0.5 * np.log(2 * np.pi * g.sd_out**2) - (x - g.mu_out)**2 / (
      2 * g.sd_out**2)
  if attack == 'offline':
    return np.array([-log_tail(v) if np.isfinite(v) else np.nan
                     for v in (x - g.mu_out) / g.sd_out])
  inside = -0.5 * np.log(2 * np.pi * g.sd_in**2) - (x - g.mu_in)**2 / (
      2 * g.sd_in**2)
  return inside - out


@pytest.mark.parametrize('variance', membership.VARIANCES)
@pytest.mark.parametrize('attack', membership.ATTACKS)
def test_leaving_the_target_out_equals_a_refit(variance, attack):
  # Few trials per side for some examples (k_in of 1 or 2), so the
  # fallback to the global sd and empty sides both happen.
  phi, masks = random_trials(1, k=7, n=40, shift=1.0, in_fraction=0.3)
  masks[:, 0] = False          # never in
  masks[:, 1] = True           # never out
  masks[:, 2] = [1, 0, 0, 0, 0, 0, 0]
  for t in range(7):
    scores = membership.target_scores(phi, masks, t, variance, attack)
    refit = _refit_scores(phi, masks, t, variance, attack)
    np.testing.assert_array_equal(np.isnan(scores), np.isnan(refit))
    np.testing.assert_allclose(scores, refit, rtol=1e-6 if attack == 'offline'
                               else 1e-9, atol=1e-9)


def test_float16_records_are_accepted():
  phi, masks = random_trials(2, k=6, n=20)
  half = phi.astype(np.float16)
  np.testing.assert_allclose(
      membership.target_scores(half, masks, 3),
      membership.target_scores(half.astype(np.float64), masks, 3))


def test_sd_floor_keeps_identical_values_finite():
  phi = np.full((6, 2), 7.62)
  phi[:, 1] = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
  masks = np.array([[1, 1], [1, 1], [1, 1], [0, 0], [0, 0], [0, 0]], bool)
  g = membership.fit(phi, masks)
  np.testing.assert_array_equal(g.sd_in, [membership.SD_FLOOR] * 2)
  scores = membership.target_scores(phi, masks, 0)
  assert np.isfinite(scores).all()
  # Example 1: x on the in mean, 1 below the out mean, both sds floored.
  assert scores[1] == pytest.approx(0.5 / membership.SD_FLOOR**2)


def test_per_example_auc_against_pairs_with_ties():
  rng = np.random.default_rng(3)
  k, n = 12, 40
  masks = rng.random((k, n)) < 0.5
  phi = rng.integers(0, 4, size=(k, n)).astype(float) + masks  # many ties
  scores = membership.per_example_scores(phi, masks)
  for i in range(n):
    inside, outside = phi[masks[:, i], i], phi[~masks[:, i], i]
    if len(inside) and len(outside):
      assert scores.auc[i] == pytest.approx(brute_auc(inside, outside))
      sd = math.sqrt((np.var(inside, ddof=1) + np.var(outside, ddof=1)) / 2)
      if len(inside) > 1 and len(outside) > 1:
        assert scores.separation[i] == pytest.approx(
            (inside.mean() - outside.mean()) / sd)
    else:
      assert np.isnan(scores.auc[i])


def test_pooled_auc_and_roc_against_brute_force_with_ties():
  rng = np.random.default_rng(4)
  members = np.sort(rng.integers(0, 30, 300).astype(float) + 3)
  others = np.sort(rng.integers(0, 30, 400).astype(float))
  assert membership_eval._pooled_auc(members, others) == pytest.approx(
      brute_auc(members, others), abs=1e-12)
  fpr, tpr = membership_eval._roc_curve(members, others)
  # Not downsampled: its area is the AUC (ties as the diagonal's 1/2), and
  # its best TPR at each FPR is that of the best threshold.
  assert np.trapezoid(tpr, fpr) == pytest.approx(brute_auc(members, others))
  brute_fpr, brute_tpr = brute_thresholds(members, others)
  for alpha in np.unique(brute_fpr):
    assert tpr[fpr <= alpha].max() == pytest.approx(
        brute_tpr[brute_fpr <= alpha].max())
    assert membership_eval._tpr_at(members, others, alpha) == pytest.approx(
        brute_tpr[brute_fpr <= alpha].max())


def test_tpr_at_fpr_counted_by_hand():
  others = np.arange(100.0)                      # non-members 0..99
  members = np.array([50.5, 98.5, 99.0, 99.5, 100.0])
  # FPR <= 1%: one non-member may pass; `>= 98.5` lets 99 through, 4 of 5.
  assert membership_eval._tpr_at(members, others, 0.01) == 0.8
  # FPR <= 0.1% (no non-member): only 99.5 and 100 (99 ties with one).
  assert membership_eval._tpr_at(members, others, 0.001) == 0.4
  # FPR <= 49%: `>= 50.5` passes 49 non-members (51..99), all 5 members.
  assert membership_eval._tpr_at(members, others, 0.49) == 1.0
  # FPR <= 48%: `>= 50.5` would pass 49; `>= 98.5` is the best, 4 of 5.
  assert membership_eval._tpr_at(members, others, 0.48) == 0.8
  # Balanced accuracy: `>= 98.5`: (4/5 + 99/100) / 2.
  assert membership_eval._balanced_accuracy(members, others) == pytest.approx(
      (0.8 + 0.99) / 2)


def test_evaluate_on_trials_equals_a_loop_of_target_scores():
  phi, masks = random_trials(5, k=10, n=60, shift=0.7)
  masks[:, 0] = False  # never in: never scored
  trials = [3, 0, 7]
  evaluation = membership_eval.evaluate(phi, masks, trials=trials,
                                        fprs=(0.01, 0.05, 0.2))
  members, others, per_target = [], [], []
  for t in trials:
    scores = membership.target_scores(phi, masks, t)
    ok = np.isfinite(scores)
    members.append(scores[ok & masks[t]])
    others.append(scores[ok & ~masks[t]])
    per_target.append(brute_auc(members[-1], others[-1]))
  members, others = np.concatenate(members), np.concatenate(others)
  np.testing.assert_array_equal(evaluation.trials, trials)
  # Scored: both sides non-empty without the target (example 0 never).
  k_in = masks.sum(0)
  expected = sum(((k_in - masks[t] >= 1) & (10 - k_in - ~masks[t] >= 1)).sum()
                 for t in trials)
  assert evaluation.num_scored == len(members) + len(others) == expected
  assert evaluation.num_members == len(members)
  assert evaluation.auc == pytest.approx(brute_auc(members, others))
  np.testing.assert_allclose(evaluation.target_auc, per_target)
  assert evaluation.target_auc_mean == pytest.approx(np.mean(per_target))
  assert evaluation.target_auc_sd == pytest.approx(np.std(per_target, ddof=1))
  fpr, tpr = brute_thresholds(members, others)
  for alpha in (0.01, 0.05, 0.2):
    assert evaluation.tpr_at[alpha] == pytest.approx(tpr[fpr <= alpha].max())
  assert evaluation.accuracy == pytest.approx(np.max(0.5 + (tpr - fpr) / 2))


def test_chunks_do_not_change_the_results(monkeypatch):
  phi, masks = random_trials(6, k=9, n=50, shift=0.5)
  whole = membership_eval.evaluate(phi, masks, variance='global')
  whole_examples = membership.per_example_scores(phi, masks)
  monkeypatch.setattr(membership, '_CHUNK_VALUES', 23)
  chunked = membership_eval.evaluate(phi, masks, variance='global')
  chunked_examples = membership.per_example_scores(phi, masks)
  assert chunked.auc == whole.auc
  assert chunked.tpr_at == whole.tpr_at
  np.testing.assert_allclose(chunked.target_auc, whole.target_auc)
  np.testing.assert_allclose(chunked_examples.auc, whole_examples.auc)
  np.testing.assert_allclose(chunked_examples.separation,
                             whole_examples.separation)


def test_roc_downsampled_keeps_the_low_fpr_end():
  rng = np.random.default_rng(7)
  members = np.sort(rng.normal(1, 1, 20_000))
  others = np.sort(rng.normal(0, 1, 30_000))
  fpr, tpr = membership_eval._roc_curve(members, others)
  assert len(fpr) <= membership_eval.ROC_POINTS
  assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
  assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
  # The j-th highest non-member's vertex, exactly, for the first 500.
  for j in (0, 1, 10, membership_eval.EXACT_ROC_VERTICES - 1):
    v = others[len(others) - 1 - j]
    assert fpr[2 + 2 * j] == (j + 1) / len(others)
    assert tpr[2 + 2 * j] == np.mean(members >= v)
  assert np.trapezoid(tpr, fpr) == pytest.approx(
      membership_eval._pooled_auc(members, others), abs=2e-3)


def test_planted_truth():
  k, n = 32, 400
  rng = np.random.default_rng(8)
  masks = rng.random((k, n)) < 0.5
  shifted = np.arange(n) < n // 2
  phi = rng.normal(loc=rng.normal(size=n), size=(k, n)) + 3.0 * (
      masks & shifted)
  scores = membership.per_example_scores(phi, masks)
  assert np.mean(scores.auc[shifted]) > 0.95
  assert abs(np.mean(scores.auc[~shifted]) - 0.5) < 0.03
  assert np.median(scores.separation[shifted]) == pytest.approx(3, abs=0.5)
  for attack in membership.ATTACKS:
    evaluation = membership_eval.evaluate(phi, masks, attack=attack)
    assert evaluation.auc > 0.7
    assert evaluation.tpr_at[0.01] > 0.1  # chance: 0.01


@pytest.mark.parametrize('variance', membership.VARIANCES)
def test_planted_null(variance):
  # In and out from one distribution. 64 x 2,000 scores, about 64,000
  # members: under independence the AUC's sd is ~0.0016 and TPR@1%'s
  # ~0.0004; seeds 0..5 gave AUC 0.497..0.502, TPR@1% 0.0091..0.0108.
  phi, masks = random_trials(0, k=64, n=2_000)
  phi *= 2.0
  evaluation = membership_eval.evaluate(phi, masks, variance=variance)
  assert abs(evaluation.auc - 0.5) < 0.02
  assert 0.005 <= evaluation.tpr_at[0.01] <= 0.02
  assert abs(evaluation.accuracy - 0.5) < 0.02


def test_global_and_per_example_agree_when_every_example_has_one_sd():
  # Every example: the same masks and the same deviations about its own
  # in and out means, so per-example SS equal the pooled one for every
  # target left out.
  rng = np.random.default_rng(9)
  k, n = 12, 30
  column = rng.random(k) < 0.5
  masks = np.repeat(column[:, None], n, 1)
  noise = rng.normal(size=k)[:, None]
  phi = noise + rng.normal(size=n) + rng.normal(2, 1, size=n) * masks
  per_example = membership_eval.evaluate(phi, masks)
  glob = membership_eval.evaluate(phi, masks, variance='global')
  assert per_example.auc == pytest.approx(glob.auc)
  np.testing.assert_allclose(
      membership.target_scores(phi, masks, 4),
      membership.target_scores(phi, masks, 4, variance='global'), rtol=1e-9)
  # ... and they differ once the examples' sds differ.
  phi_unequal = phi * rng.uniform(0.2, 5, size=n)
  assert not np.allclose(
      membership.target_scores(phi_unequal, masks, 4),
      membership.target_scores(phi_unequal, masks, 4, variance='global'))


def test_examples_never_in_or_never_out():
  phi, masks = random_trials(10, k=8, n=6)
  masks[:, 0] = False                              # never in
  masks[:, 1] = True                               # never out
  masks[:, 2] = [0, 1, 0, 0, 0, 0, 0, 0]           # in once, in trial 1
  masks[:, 3:] = np.arange(8)[:, None] % 2 == 0
  g = membership.fit(phi, masks)
  assert np.isnan(g.mu_in[0]) and np.isnan(g.sd_in[0])
  assert np.isnan(g.mu_out[1]) and np.isnan(g.sd_out[1])
  assert g.sd_in[2] == g.global_sd_in              # one in-trial: fallback
  scores = membership.per_example_scores(phi, masks)
  assert np.isnan(scores.auc[:2]).all()
  assert np.isnan(scores.separation[:2]).all()
  assert np.isfinite(scores.auc[2:]).all()
  online = membership.target_scores(phi, masks, 1)
  assert np.isnan(online[:3]).all()               # example 2 lost its in trial
  assert np.isfinite(online[3:]).all()
  assert np.isfinite(membership.target_scores(phi, masks, 0)[2])
  offline = membership.target_scores(phi, masks, 1, attack='offline')
  assert np.isnan(offline[1]) and np.isfinite(offline[[0, 2, 3, 4, 5]]).all()
  evaluation = membership_eval.evaluate(phi, masks)
  # Examples 0 and 1 never scored; example 2 in 7 of 8 targets.
  assert evaluation.num_scored == 8 * 3 + 7


def test_bad_inputs_are_refused():
  phi, masks = random_trials(11, k=4, n=5)
  with pytest.raises(ValueError, match='one shape'):
    membership.fit(phi, masks[:, :4])
  with pytest.raises(ValueError, match='variance'):
    membership_eval.evaluate(phi, masks, variance='pooled')
  with pytest.raises(ValueError, match='trials'):
    membership_eval.evaluate(phi, masks, trials=[0, 0])
  with pytest.raises(ValueError, match='trial index'):
    membership.target_scores(phi, masks, 4)
  phi[2, 3] = np.nan
  with pytest.raises(ValueError, match='non-finite'):
    membership.fit(phi, masks)


def test_from_probabilities_and_margins():
  phi = np.array([-3.0, 0.0, 2.0, 5.0, 7.7, 20.0])
  prob16 = (1 / (1 + np.exp(-phi))).astype(np.float16)
  back = membership.from_probabilities(prob16)
  np.testing.assert_allclose(back[:4], phi[:4], atol=0.05)  # p's resolution
  # Saturated: at most log(2047) (float16's largest p below 1), also for p = 1.
  assert prob16[-1] == 1.0
  np.testing.assert_allclose(back[4:], math.log(2047), rtol=1e-6)
  assert membership.from_probabilities(np.float16(0.0)) == pytest.approx(
      math.log(2.0**-24 / (1 - 2.0**-24)))
  # Margins are taken as they are; the log-odds lies within log(C - 1) below.
  logits = np.random.default_rng(12).normal(0, 3, size=(200, 10))
  true = logits[:, 0]
  rest = logits[:, 1:]
  exact = true - np.log(np.exp(rest).sum(1))
  margin = membership.from_margins((true - rest.max(1)).astype(np.float16))
  assert margin.dtype == np.float64
  assert (exact <= margin + 0.01).all()
  assert (margin <= exact + math.log(9) + 0.01).all()


def test_roc_figure_writes_a_png(tmp_path):
  phi, masks = random_trials(13, k=8, n=100, shift=1.0)
  evaluations = {v: membership_eval.evaluate(phi, masks, variance=v)
                 for v in membership.VARIANCES}
  path = str(tmp_path / 'roc' / 'roc.png')
  assert estimate_figures.membership_roc(path, evaluations) == path
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  with pytest.raises(ValueError):
    estimate_figures.membership_roc(path, {})

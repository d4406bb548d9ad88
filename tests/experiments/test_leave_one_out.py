"""The leave-one-out experiment's pure parts, without training: the
stratified choice, the models each example needs for a target standard
error, the agreement statistics, the bindings, the plan and the report's
sentence."""

import types

import numpy as np
import pytest

from tf_memorization.core import errors
from tf_memorization.experiments import leave_one_out as loo_lib
from tf_memorization.reporting import markup
from tf_memorization.workdir import estimate_inputs

EDGES = loo_lib.DEFAULT_STRATA


def test_strata_of_bins_and_edges():
  values = [-0.2, 0.09, 0.7 - 0.6, 0.1, 0.29, 0.3, 0.5, 0.7, 0.9, 0.95, 1.0,
            np.nan]
  assert loo_lib.strata_of(values, EDGES).tolist() == [
      0, 0, 1, 1, 1, 2, 3, 4, 4, 5, 5, loo_lib.UNDEFINED]
  assert loo_lib.stratum_labels(EDGES) == [
      '<0.1', '0.1-0.3', '0.3-0.5', '0.5-0.7', '0.7-0.9', '>0.9']
  assert loo_lib.stratum_sizes(EDGES, 10) == [5, 10, 10, 10, 10, 5]
  assert loo_lib.stratum_sizes(EDGES, 1) == [0, 1, 1, 1, 1, 0]


def _memorization():
  """100 at 0, 100 at 1, 3 in [0.1, 0.3), 20 in each other middle bin, 5
  undefined, shuffled."""
  values = np.concatenate([np.zeros(100), np.ones(100), [0.15, 0.2, 0.25],
                           np.full(20, 0.4), np.full(20, 0.6),
                           np.full(20, 0.8), np.full(5, np.nan)])
  return np.random.default_rng(7).permutation(values)


def test_choose_stratified_counts_per_stratum():
  mem = _memorization()
  chosen, table = loo_lib.choose_stratified(mem, EDGES, 4, seed=3)
  assert [s['chosen'] for s in table] == [2, 3, 4, 4, 4, 2]
  assert [s['available'] for s in table] == [100, 3, 20, 20, 20, 100]
  assert [s['stratum'] for s in table] == loo_lib.stratum_labels(EDGES)
  assert table[0]['low'] is None and table[0]['high'] == 0.1
  assert table[-1]['low'] == 0.9 and table[-1]['high'] is None
  assert chosen.dtype == np.int64 and np.all(np.diff(chosen) > 0)
  strata = loo_lib.strata_of(mem[chosen], EDGES)
  assert np.bincount(strata, minlength=6).tolist() == [2, 3, 4, 4, 4, 2]
  assert np.isfinite(mem[chosen]).all()
  # A stratum with fewer examples than asked gives all it has.
  assert set(np.flatnonzero((mem > 0.1) & (mem < 0.3))) <= set(chosen)


def test_choose_stratified_is_deterministic_and_seeded():
  mem = _memorization()
  first, _ = loo_lib.choose_stratified(mem, EDGES, 4, seed=3)
  again, _ = loo_lib.choose_stratified(mem.copy(), EDGES, 4, seed=3)
  other, _ = loo_lib.choose_stratified(mem, EDGES, 4, seed=4)
  np.testing.assert_array_equal(first, again)
  assert first.tolist() != other.tolist()


def test_choose_stratified_middle_band_majority():
  """Mostly 0 and 1, as the demo's estimates are: the middle band still
  gives most of the examples chosen."""
  rng = np.random.default_rng(0)
  mem = np.concatenate([np.zeros(1000), np.ones(400),
                        rng.uniform(0.1, 0.9, 60), rng.uniform(-0.5, 0, 30)])
  chosen, _ = loo_lib.choose_stratified(mem, EDGES, 10, seed=0)
  inside = loo_lib.in_band(mem[chosen], loo_lib.DEFAULT_BAND)
  assert len(chosen) <= 50 and inside.sum() > len(chosen) / 2
  assert (~inside).sum() == 10  # 5 from each tail


def test_per_tail_sets_the_tails_apart():
  """per_tail replaces per_stratum // 2 in the tails; 0 draws every example
  from between the edges (the middle band with the default strata)."""
  assert loo_lib.stratum_sizes(EDGES, 10, per_tail=0) == [0, 10, 10, 10, 10, 0]
  assert loo_lib.stratum_sizes(EDGES, 4, per_tail=7) == [7, 4, 4, 4, 4, 7]
  assert loo_lib.stratum_sizes(EDGES, 4, None) == loo_lib.stratum_sizes(
      EDGES, 4)
  mem = _memorization()
  chosen, table = loo_lib.choose_stratified(mem, EDGES, 4, seed=3, per_tail=0)
  assert [s['chosen'] for s in table] == [0, 3, 4, 4, 4, 0]
  assert loo_lib.in_band(mem[chosen], loo_lib.DEFAULT_BAND).all()
  # The bins between the edges draw the same examples as without per_tail.
  default, _ = loo_lib.choose_stratified(mem, EDGES, 4, seed=3)
  assert set(chosen) == set(default[loo_lib.in_band(mem[default],
                                                    loo_lib.DEFAULT_BAND)])
  experiment = loo_lib.LeaveOneOutExperiment(per_stratum=4, per_tail=0)
  np.testing.assert_array_equal(experiment.chosen(mem, 3)[0], chosen)
  assert loo_lib.LeaveOneOutExperiment().per_tail is None
  with pytest.raises(errors.ConfigError,
                     match='LeaveOneOutExperiment.per_tail'):
    loo_lib.LeaveOneOutExperiment(per_tail=-1)


def test_repeats_for_target_hand_computed():
  # p_f = 0.9, R_full = 8, p_o = 0.5, target 0.2: the full models leave
  # 0.04 - 0.09 / 8 = 0.02875 for 0.25 / r, so r = ceil(8.70) = 9.
  r = loo_lib.repeats_for_target([0.9], [0.5], 8, 0.2, 1, 32)
  assert r.tolist() == [9]
  assert loo_lib.predicted_stderr(0.9, 0.5, 8, 9) <= 0.2
  assert loo_lib.predicted_stderr(0.9, 0.5, 8, 8) > 0.2
  assert loo_lib.predicted_stderr(0.9, 0.5, 8, 9) == pytest.approx(
      np.sqrt(0.09 / 8 + 0.25 / 9))
  p_full = [1.0, 1.0, 1.0, 0.5, 0.5, 1.0, 1.0]
  p_out = [0.5, 0.5, 0.1, 0.5, 1.0, 1.0, np.nan]
  # 0.25 / 0.01 = 25 exactly; 0.25 / 0.0025 = 100 -> 32 (max); 0.09 / 0.09
  # = 1 -> 2 (min); the full models alone over the target -> 32, unless
  # p_o (1 - p_o) = 0 -> 2; p_o = 1 -> 2; undefined p_o counts as 0.5.
  targets = [0.1, 0.05, 0.3, 0.1, 0.1, 0.1, 0.1]
  got = [int(loo_lib.repeats_for_target([f], [o], 8, t, 2, 32)[0])
         for f, o, t in zip(p_full, p_out, targets)]
  assert got == [25, 32, 2, 32, 2, 2, 25]


def test_differs_and_in_band():
  flags = loo_lib.differs([0.0, 0.5, 0.2, 0.8, 0.3], [0.1, 0.1, 0.0, 0.1, 0.1],
                          [0.05, 0.2, 0.6, 0.8, np.nan],
                          [0.1, 0.1, 0.3, 0.0, 0.1])
  np.testing.assert_array_equal(flags, [0.0, 1.0, 1.0, 0.0, np.nan])
  assert loo_lib.in_band([0.0999, 0.1, 0.7 - 0.6, 0.9, 0.9001, np.nan],
                         (0.1, 0.9)).tolist() == [False, True, True, True,
                                                  False, False]


def test_agreement_hand_computed():
  loo = [0.0, 0.5, 0.2, 0.8, 0.4]
  loo_se = [0.1, 0.1, 0.0, 0.1, 0.1]
  sub = [0.05, 0.2, 0.6, 0.8, np.nan]  # the last has no estimate
  sub_se = [0.1, 0.1, 0.3, 0.0, np.nan]
  # loo - sub = -0.05, 0.3, -0.4, 0; combined stderrs 0.141, 0.141, 0.3, 0.1.
  overall = loo_lib.agreement(loo, loo_se, sub, sub_se)
  assert overall['num_examples'] == 4
  assert overall['mean_abs_difference'] == pytest.approx(0.75 / 4)
  assert overall['mean_signed_difference'] == pytest.approx(-0.15 / 4)
  assert overall['fraction_differs'] == pytest.approx(0.5)
  assert overall['median_loo_stderr'] == pytest.approx(0.1)
  # Ranks 1 3 2 4 against 1 2 3 4: 1 - 6 * 2 / (4 * 15).
  assert overall['spearman'] == pytest.approx(0.8)
  assert overall['pearson'] == pytest.approx(
      np.corrcoef(loo[:4], sub[:4])[0, 1])
  band = loo_lib.in_band(sub, (0.1, 0.9))
  middle = loo_lib.agreement(loo, loo_se, sub, sub_se, band)
  assert middle['num_examples'] == 3
  assert middle['mean_abs_difference'] == pytest.approx(0.7 / 3)
  assert middle['mean_signed_difference'] == pytest.approx(-0.1 / 3)
  assert middle['fraction_differs'] == pytest.approx(2 / 3)
  assert middle['median_loo_stderr'] == pytest.approx(0.1)
  # Ranks 2 1 3 against 1 2 3: 1 - 6 * 2 / (3 * 8).
  assert middle['spearman'] == pytest.approx(0.5)
  empty = loo_lib.agreement(loo, loo_se, sub, sub_se, np.zeros(5, bool))
  assert empty['num_examples'] == 0
  assert all(np.isnan(v) for k, v in empty.items() if k != 'num_examples')


def test_bindings():
  experiment = loo_lib.LeaveOneOutExperiment()
  assert experiment.per_stratum == 10 and experiment.full_repeats == 32
  assert experiment.target_stderr == 0.1 and experiment.max_repeats == 32
  # The earlier name still works, and a fixed r keeps the earlier design.
  old = loo_lib.LeaveOneOutExperiment(per_group=1, repeats=1,
                                      target_stderr=None)
  assert old.per_stratum == 1 and old.full_repeats == 1
  bad = [({'strata': (0.5, 0.3)}, 'strata'), ({'strata': (0.5,)}, 'strata'),
         ({'strata': (0.1, 2.0)}, r'strata\[1\]'),
         ({'middle_band': (0.9, 0.1)}, 'middle_band'),
         ({'target_stderr': 0}, 'target_stderr'),
         ({'repeats': 4, 'max_repeats': 3}, 'max_repeats'),
         ({'per_group': 0}, 'per_group'), ({'per_stratum': 1.5}, 'per_stratum'),
         ({'full_repeats': 0}, 'full_repeats'), ({'examples': []}, 'examples')]
  for kwargs, name in bad:
    with pytest.raises(errors.ConfigError, match='LeaveOneOutExperiment.'
                       + name):
      loo_lib.LeaveOneOutExperiment(**kwargs)
  explicit = loo_lib.LeaveOneOutExperiment(examples=[5, 2, 5])
  assert explicit.chosen(np.zeros(6), 0)[0].tolist() == [2, 5]
  with pytest.raises(errors.ConfigError, match=r'examples\[0\] = 5'):
    explicit.chosen(np.zeros(5), 0)


def _mem(memorization, consistency):
  return types.SimpleNamespace(memorization=np.asarray(memorization),
                               consistency=np.asarray(consistency))


def test_plan_is_deterministic():
  setup = types.SimpleNamespace(dataset=types.SimpleNamespace(train=range(6)),
                                design=types.SimpleNamespace(seed=0))
  experiment = loo_lib.LeaveOneOutExperiment(full_repeats=4, target_stderr=0.2,
                                             repeats=1, max_repeats=16)
  # p_f = 1, p_o = 0.5: 0.25 / r <= 0.04 -> 7; p_f = p_o = 1 -> 1.
  mem = _mem([0.0, 0.5, 0.0, 0.0, 0.0, 0.0], [1.0, 0.5, 1.0, 1.0, 1.0, 1.0])
  chosen = np.array([0, 1])
  repeats_of = experiment.repeats_of(mem, chosen)
  assert repeats_of.tolist() == [1, 7]
  jobs = experiment.jobs(setup, chosen, repeats_of)
  again = experiment.jobs(setup, chosen, experiment.repeats_of(mem, chosen))
  assert len(jobs) == 4 + 1 + 7
  assert [j.metadata['left_out'] for j in jobs] == [-1] * 4 + [0] + [1] * 7
  assert [(j.seed, j.mask.tolist()) for j in jobs] == [
      (j.seed, j.mask.tolist()) for j in again]
  assert all(j.mask.all() for j in jobs[:4])
  assert all(np.flatnonzero(~j.mask).tolist() == [1] for j in jobs[5:])
  fixed = loo_lib.LeaveOneOutExperiment(repeats=2, target_stderr=None)
  assert fixed.repeats_of(mem, chosen).tolist() == [2, 2]


def _json(value):
  return estimate_inputs.Json(value, 'leave_one_out.json', '/w')


def test_report_text_new_and_earlier_summaries():
  new = {'examples': [1, 2, 3], 'repeats': 3, 'full_repeats': 32,
         'models_trained': 70, 'spearman': 0.5, 'pearson': 0.6,
         'mean_abs_difference': 0.2, 'mean_signed_difference': -0.1,
         'middle_band': {'band': [0.1, 0.9], 'num_examples': 2,
                         'spearman': 0.25, 'mean_abs_difference': 0.3,
                         'fraction_differs': 0.5, 'median_loo_stderr': 0.08}}
  text = markup.leave_one_out_text(_json(new))
  for part in ('3 examples', '32 models on the full', '0.1 ≤', '≤ 0.9',
               ': 2 examples', '<b>0.250</b>', 'fraction 0.500', ') -0.100'):
    assert part in text, (part, text)
  earlier = {'examples': [1, 2], 'repeats': 3, 'spearman': 0.5,
             'pearson': 0.6, 'mean_abs_difference': 0.2}
  text = markup.leave_one_out_text(_json(earlier))
  assert '2 examples, each left out of 3 models' in text
  assert 'middle band' not in text

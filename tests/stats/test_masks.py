"""Tests for tf_memorization.stats.masks: the subset designs of the trials."""

import math

import numpy as np
import pytest

from tf_memorization.stats import masks

# (n, ratio, expected size), sizes worked out by hand with "round half up":
# the .5 cases are the ones where Python's round() (half to even) differs.
SIZE_CASES = [
    (5, 0.7, 4),        # 3.5 -> 4
    (5, 0.5, 3),        # 2.5 -> 3 (round() would give 2)
    (3, 0.5, 2),        # 1.5 -> 2
    (10, 0.25, 3),      # 2.5 -> 3 (round() would give 2)
    (2, 0.25, 1),       # 0.5 -> 1 (round() would give 0)
    (20, 0.575, 12),    # 11.5 -> 12
    (10, 0.7, 7),       # exact
    (1442, 0.7, 1009),  # 1009.4 -> 1009
    (1797, 0.7, 1258),  # 1257.9 -> 1258
]


def _balanced(n, k, ratio, seed=0):
  """The whole balanced design as a bool [k, n] array, trial by trial."""
  return np.stack([masks.balanced_mask(n, k, ratio, seed, t) for t in range(k)])


# --------------------------------------------------------------- round_half_up


@pytest.mark.parametrize('x, expected', [(0.5, 1), (1.5, 2), (2.5, 3),
                                         (2.4999, 2), (3.0, 3), (0.0, 0)])
def test_round_half_up(x, expected):
  """Halves round up, unlike Python's round() which rounds half to even."""
  assert masks.round_half_up(x) == expected
  assert isinstance(masks.round_half_up(x), int)


# ---------------------------------------------------------- independent design


@pytest.mark.parametrize('n, ratio, size', SIZE_CASES)
def test_independent_mask_has_exact_size(n, ratio, size):
  """Every trial trains on exactly round_half_up(ratio * n) examples."""
  for trial in range(3):
    mask = masks.independent_mask(n, ratio, seed=0, trial_index=trial)
    assert mask.dtype == bool
    assert mask.shape == (n,)
    assert mask.sum() == size


def test_independent_mask_is_deterministic():
  """The mask is a function of (seed, trial_index) alone."""
  a = masks.independent_mask(500, 0.7, seed=3, trial_index=11)
  b = masks.independent_mask(500, 0.7, seed=3, trial_index=11)
  np.testing.assert_array_equal(a, b)


def test_independent_masks_differ_across_trials_and_seeds():
  """Different trials, and different seeds, choose different subsets."""
  base = masks.independent_mask(500, 0.7, seed=0, trial_index=0)
  other_trials = [masks.independent_mask(500, 0.7, 0, t) for t in range(1, 20)]
  other_seeds = [masks.independent_mask(500, 0.7, s, 0) for s in range(1, 20)]
  for other in other_trials + other_seeds:
    assert not np.array_equal(base, other)
  # All 20 trials of seed 0 are pairwise distinct.
  assert len({m.tobytes() for m in [base] + other_trials}) == 20


def test_independent_design_does_not_depend_on_num_trials():
  """Trial 3 is the same whether the run plans 10 or 1000 trials."""
  few = masks.SubsetDesign(num_trials=10, subset_ratio=0.7, seed=5)
  many = masks.SubsetDesign(num_trials=1000, subset_ratio=0.7, seed=5)
  np.testing.assert_array_equal(few.mask(300, 3), many.mask(300, 3))
  np.testing.assert_array_equal(
      few.mask(300, 3), masks.independent_mask(300, 0.7, 5, 3))
  assert few.trial_seed(3) == many.trial_seed(3)


def test_independent_inclusion_frequency_matches_ratio():
  """Each example is in a trial with probability size / n (a uniform subset).

  Within one trial the subset has exactly 14 of 20 examples, so an example's
  inclusion is Bernoulli(0.7) and independent across trials. Every example's
  frequency over T trials must lie within z standard errors of 0.7; z = 4.5
  keeps the chance that any of the 20 examples fails by accident below 1e-4
  (Bonferroni), while a biased sampler (e.g. always the first 14) fails badly.
  """
  n, ratio, trials = 20, 0.7, 3000
  counts = np.zeros(n)
  for t in range(trials):
    counts += masks.independent_mask(n, ratio, seed=1, trial_index=t)
  freq = counts / trials
  p = 14 / n
  standard_error = math.sqrt(p * (1 - p) / trials)
  assert np.all(np.abs(freq - p) < 4.5 * standard_error), freq
  # Not trivially uniform either: the counts vary as binomials do.
  assert counts.std() > 0


@pytest.mark.parametrize('n, ratio', [(0, 0.5), (10, 0.0), (10, 1.0),
                                      (10, -0.1), (10, 1.5)])
def test_independent_mask_rejects_bad_arguments(n, ratio):
  """An empty training set or a ratio outside (0, 1) is refused."""
  with pytest.raises(ValueError):
    masks.independent_mask(n, ratio, seed=0, trial_index=0)


# ------------------------------------------------------------- balanced design


@pytest.mark.parametrize('n, k, ratio, per_example', [
    (50, 10, 0.7, 7),
    (50, 10, 0.25, 3),   # 2.5 -> 3
    (33, 4, 0.375, 2),   # 1.5 -> 2
    (9, 2, 0.5, 1),
    (64, 16, 0.5, 8),
])
def test_balanced_every_example_in_exact_number_of_trials(n, k, ratio,
                                                          per_example):
  """Column sums: every example is in exactly round_half_up(p * k) trials."""
  design = _balanced(n, k, ratio, seed=2)
  assert design.shape == (k, n)
  assert design.dtype == bool
  np.testing.assert_array_equal(design.sum(axis=0), np.full(n, per_example))
  # Hence the trial sizes average exactly n * per_example / k.
  assert design.sum() == n * per_example


def test_balanced_is_deterministic():
  """Recomputing the design from scratch (cache cleared) gives the same masks."""
  first = _balanced(100, 8, 0.5, seed=4)
  masks._balanced_packed.cache_clear()  # pylint: disable=protected-access
  second = _balanced(100, 8, 0.5, seed=4)
  np.testing.assert_array_equal(first, second)


def test_balanced_returned_mask_is_a_copy():
  """Mutating a returned mask must not corrupt the cached design."""
  mask = masks.balanced_mask(40, 4, 0.5, 0, 1)
  original = mask.copy()
  mask[:] = ~mask
  np.testing.assert_array_equal(masks.balanced_mask(40, 4, 0.5, 0, 1), original)


def test_balanced_differs_across_seeds_and_trials():
  """Another seed gives another design, and trials of one design differ."""
  a = _balanced(100, 8, 0.5, seed=0)
  b = _balanced(100, 8, 0.5, seed=1)
  assert not np.array_equal(a, b)
  assert len({row.tobytes() for row in a}) == 8


def test_balanced_spans_several_chunks():
  """n beyond the internal chunk size is still exactly balanced everywhere."""
  chunk = masks._BALANCED_CHUNK  # pylint: disable=protected-access
  n, k = chunk + 37, 4
  design = _balanced(n, k, 0.5, seed=0)
  assert design.shape == (k, n)
  np.testing.assert_array_equal(design.sum(axis=0), np.full(n, 2))
  # The tail chunk is drawn afresh, not a copy of the first chunk's start.
  assert not np.array_equal(design[:, chunk:], design[:, :37])
  # Each example sits in one of the C(4, 2) = 6 possible trial pairs; with
  # thousands of examples all six pairs occur, in the tail chunk too.
  assert len({col.tobytes() for col in design[:, :chunk].T}) == 6
  assert len({col.tobytes() for col in design[:, chunk:].T}) > 1


@pytest.mark.parametrize('trial_index', [-1, 5, 100])
def test_balanced_trial_index_out_of_range(trial_index):
  """A trial index outside [0, num_trials) is refused."""
  with pytest.raises(ValueError, match='trial_index'):
    masks.balanced_mask(20, 5, 0.5, 0, trial_index)


@pytest.mark.parametrize('k, ratio', [
    (2, 0.2),    # 0.4 -> 0 trials per example
    (2, 0.8),    # 1.6 -> 2 == k: never left out
    (10, 0.04),  # 0.4 -> 0
    (10, 0.97),  # 9.7 -> 10 == k
])
def test_balanced_rejects_degenerate_per_example(k, ratio):
  """Examples in 0 or in all k trials have no in- or out-trials: refused."""
  with pytest.raises(ValueError, match='trials'):
    masks.balanced_mask(20, k, ratio, 0, 0)
  design = masks.SubsetDesign(num_trials=k, subset_ratio=ratio,
                              design='balanced')
  with pytest.raises(ValueError):
    design.mask(20, 0)


def test_subset_design_balanced_matches_function():
  """SubsetDesign(design='balanced').mask is the balanced design of its k."""
  design = masks.SubsetDesign(num_trials=6, subset_ratio=0.5,
                              design='balanced', seed=9)
  for t in range(6):
    np.testing.assert_array_equal(design.mask(30, t),
                                  masks.balanced_mask(30, 6, 0.5, 9, t))


# ---------------------------------------------------------------- SubsetDesign


@pytest.mark.parametrize('kwargs', [
    dict(num_trials=1),
    dict(num_trials=0),
    dict(num_trials=2.0),
    dict(num_trials=10, subset_ratio=0.0),
    dict(num_trials=10, subset_ratio=1.0),
    dict(num_trials=10, design='random'),
])
def test_subset_design_validation(kwargs):
  """Fewer than 2 trials, a ratio of 0 or 1, or an unknown design: refused."""
  with pytest.raises(ValueError):
    masks.SubsetDesign(**kwargs)


def test_trial_seed_deterministic_and_distinct():
  """trial_seed is a 31-bit function of (seed, t), distinct across trials."""
  design = masks.SubsetDesign(num_trials=200, seed=7)
  seeds = [design.trial_seed(t) for t in range(200)]
  assert seeds == [masks.SubsetDesign(num_trials=5, seed=7).trial_seed(t)
                   for t in range(200)]
  assert len(set(seeds)) == 200
  assert all(isinstance(s, int) and 0 <= s < 2**31 for s in seeds)
  other = masks.SubsetDesign(num_trials=200, seed=8)
  assert [other.trial_seed(t) for t in range(200)] != seeds


def test_fingerprint_fields():
  """num_trials is part of the fingerprint only for the balanced design."""
  independent = masks.SubsetDesign(num_trials=10, subset_ratio=0.6, seed=3)
  assert independent.fingerprint_fields() == {
      'design': 'independent', 'subset_ratio': 0.6, 'seed': 3}
  assert (masks.SubsetDesign(num_trials=1000, subset_ratio=0.6,
                             seed=3).fingerprint_fields()
          == independent.fingerprint_fields())
  balanced = masks.SubsetDesign(num_trials=10, subset_ratio=0.6, seed=3,
                                design='balanced')
  assert balanced.fingerprint_fields() == {
      'design': 'balanced', 'subset_ratio': 0.6, 'seed': 3, 'num_trials': 10}
  assert (masks.SubsetDesign(num_trials=20, subset_ratio=0.6, seed=3,
                             design='balanced').fingerprint_fields()
          != balanced.fingerprint_fields())

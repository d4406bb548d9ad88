"""Tests of stats/scores.py against hand-computed and planted truths."""

import math

import numpy as np
import pytest

from tf_memorization.stats import masks as masks_lib
from tf_memorization.stats import ranks
from tf_memorization.stats import scores

# Thresholds that keep every pair with a defined influence (finite, so that a
# NaN influence, scored -inf internally, is still below them).
KEEP_ALL = dict(influence_threshold=-1e9, memorization_threshold=-1e9,
                same_label=False)


def _pairs(result):
  """{(train, test): (influence, stderr)} of an InfluenceResult's pairs."""
  assert (len(result.pair_train) == len(result.pair_test) ==
          len(result.pair_influence) == len(result.pair_stderr))
  out = {}
  for i, j, v, s in zip(result.pair_train.tolist(), result.pair_test.tolist(),
                        result.pair_influence.tolist(),
                        result.pair_stderr.tolist()):
    assert (i, j) not in out, f'pair {(i, j)} reported twice'
    out[(i, j)] = (v, s)
  return out


# ---------------------------------------------------------------------------
# 1. A case small enough to work out by hand: k=4 trials, n=3, n_test=2.
#
#            masks M        correct C      soft P              test T
#   trial 0  1 1 0          1 1 0          .9  .8  .2          1 1
#   trial 1  0 1 1          0 1 1          .3  .6  .7          1 0
#   trial 2  1 0 1          0 0 1          .5  .4  .9          0 1
#   trial 3  0 0 1          0 1 0          .1 1.0  .3          0 0
#
#   example 0: in-trials {0,2}, out-trials {1,3}: k_in=2, k_out=2
#   example 1: in-trials {0,1}, out-trials {2,3}: k_in=2, k_out=2
#   example 2: in-trials {1,2,3}, out-trial {0}:  k_in=3, k_out=1
# ---------------------------------------------------------------------------
HAND_MASKS = np.array([[1, 1, 0],
                       [0, 1, 1],
                       [1, 0, 1],
                       [0, 0, 1]], bool)
HAND_CORRECT = np.array([[1, 1, 0],
                         [0, 1, 1],
                         [0, 0, 1],
                         [0, 1, 0]], bool)
HAND_SOFT = np.array([[.9, .8, .2],
                      [.3, .6, .7],
                      [.5, .4, .9],
                      [.1, 1.0, .3]])
HAND_TEST = np.array([[1, 1],
                      [1, 0],
                      [0, 1],
                      [0, 0]], bool)


def test_memorization_by_hand():
  mem = scores.memorization(HAND_MASKS, HAND_CORRECT, HAND_SOFT)
  np.testing.assert_array_equal(mem.k_in, [2, 2, 3])
  np.testing.assert_array_equal(mem.k_out, [2, 2, 1])
  # ex 0: in {0,2} -> correct 1,0 -> p_in=1/2; out {1,3} -> 0,0 -> p_out=0
  #       mem = 1/2; stderr = sqrt(.5*.5/2 + 0) = sqrt(.125) = 0.353553
  # ex 1: in {0,1} -> 1,1 -> p_in=1; out {2,3} -> 0,1 -> p_out=1/2
  #       mem = 1/2; stderr = sqrt(0 + .5*.5/2) = 0.353553
  # ex 2: in {1,2,3} -> 1,1,0 -> p_in=2/3; out {0} -> 0 -> p_out=0
  #       mem = 2/3; stderr = sqrt((2/3)(1/3)/3 + 0) = sqrt(2/27) = 0.272166
  np.testing.assert_allclose(mem.memorization, [0.5, 0.5, 2 / 3], rtol=1e-12)
  np.testing.assert_allclose(
      mem.stderr, [math.sqrt(.125), math.sqrt(.125), math.sqrt(2 / 27)],
      rtol=1e-12)
  # consistency = held-out accuracy = p_out: 0, 1/2, 0
  np.testing.assert_allclose(mem.consistency, [0.0, 0.5, 0.0], atol=1e-12)
  # Soft variant, population variance var = mean(x^2) - mean^2:
  # ex 0: in .9,.5: mean .7, var (.81+.25)/2 - .49 = .04
  #       out .3,.1: mean .2, var (.09+.01)/2 - .04 = .01
  #       soft = .5; stderr = sqrt(.04/2 + .01/2) = sqrt(.025) = 0.158114
  # ex 1: in .8,.6: mean .7, var (.64+.36)/2 - .49 = .01
  #       out .4,1.0: mean .7, var (.16+1)/2 - .49 = .09
  #       soft = 0; stderr = sqrt(.01/2 + .09/2) = sqrt(.05) = 0.223607
  # ex 2: in .7,.9,.3: mean 1.9/3, var 1.39/3 - (1.9/3)^2 = .56/9
  #       out .2: mean .2, var 0
  #       soft = 1.9/3 - .2 = 1.3/3 = 0.433333; stderr = sqrt(.56/27) = 0.144016
  np.testing.assert_allclose(mem.soft, [0.5, 0.0, 1.3 / 3], atol=1e-12)
  np.testing.assert_allclose(
      mem.soft_stderr, [math.sqrt(.025), math.sqrt(.05), math.sqrt(.56 / 27)],
      rtol=1e-9)
  assert mem.num_undefined == 0


def test_memorization_without_soft_scores_has_nan_soft_variant():
  mem = scores.memorization(HAND_MASKS, HAND_CORRECT)
  assert np.isnan(mem.soft).all() and np.isnan(mem.soft_stderr).all()
  np.testing.assert_allclose(mem.memorization, [0.5, 0.5, 2 / 3], rtol=1e-12)


def test_difference_of_means_by_hand():
  out = scores.difference_of_means(HAND_MASKS, HAND_CORRECT)
  np.testing.assert_allclose(out['mean_in'], [0.5, 1.0, 2 / 3], rtol=1e-12)
  np.testing.assert_allclose(out['mean_out'], [0.0, 0.5, 0.0], atol=1e-12)
  np.testing.assert_allclose(out['estimate'], [0.5, 0.5, 2 / 3], rtol=1e-12)
  np.testing.assert_allclose(
      out['stderr'], [math.sqrt(.125), math.sqrt(.125), math.sqrt(2 / 27)],
      rtol=1e-12)
  np.testing.assert_array_equal(out['k_in'], [2, 2, 3])
  np.testing.assert_array_equal(out['k_out'], [2, 2, 1])
  with pytest.raises(ValueError, match='differ'):
    scores.difference_of_means(HAND_MASKS, HAND_CORRECT[:, :2])


# infl(i, j) = mean T[in-trials of i, j] - mean T[out-trials of i, j]
# binomial stderr = sqrt(p_in(1-p_in)/k_in + p_out(1-p_out)/k_out)
#   (0,0): in {0,2} -> 1,0 -> 1/2; out {1,3} -> 1,0 -> 1/2; infl 0
#          stderr sqrt(.25/2 + .25/2) = .5
#   (0,1): in {0,2} -> 1,1 -> 1;   out {1,3} -> 0,0 -> 0;   infl 1, stderr 0
#   (1,0): in {0,1} -> 1,1 -> 1;   out {2,3} -> 0,0 -> 0;   infl 1, stderr 0
#   (1,1): in {0,1} -> 1,0 -> 1/2; out {2,3} -> 1,0 -> 1/2; infl 0, stderr .5
#   (2,0): in {1,2,3} -> 1,0,0 -> 1/3; out {0} -> 1 -> 1; infl -2/3
#          stderr sqrt((1/3)(2/3)/3 + 0) = sqrt(2/27) = 0.272166
#   (2,1): in {1,2,3} -> 0,1,0 -> 1/3; out {0} -> 1 -> 1; infl -2/3, same se
HAND_INFLUENCE = {
    (0, 0): (0.0, 0.5), (0, 1): (1.0, 0.0),
    (1, 0): (1.0, 0.0), (1, 1): (0.0, 0.5),
    (2, 0): (-2 / 3, math.sqrt(2 / 27)), (2, 1): (-2 / 3, math.sqrt(2 / 27)),
}


@pytest.mark.parametrize('block_size', [1, 2, 3, 2048])
def test_influence_by_hand(block_size):
  mem = scores.memorization(HAND_MASKS, HAND_CORRECT).memorization
  result = scores.influence(HAND_MASKS, HAND_TEST, [0, 1, 0], [1, 0], mem,
                            topk=3, block_size=block_size, **KEEP_ALL)
  pairs = _pairs(result)
  assert set(pairs) == set(HAND_INFLUENCE)
  for key, (value, stderr) in HAND_INFLUENCE.items():
    assert pairs[key][0] == pytest.approx(value, abs=1e-6), key
    assert pairs[key][1] == pytest.approx(stderr, abs=1e-6), key
  # Best first: test 0 -> ex 1 (1), ex 0 (0), ex 2 (-2/3);
  #             test 1 -> ex 0 (1), ex 1 (0), ex 2 (-2/3).
  np.testing.assert_array_equal(result.topk_indices, [[1, 0, 2], [0, 1, 2]])
  np.testing.assert_allclose(result.topk_influence,
                             [[1, 0, -2 / 3], [1, 0, -2 / 3]], atol=1e-6)
  assert result.topk_indices.dtype == np.int64
  # max over test examples: ex 0 -> 1, ex 1 -> 1, ex 2 -> -2/3
  np.testing.assert_allclose(result.max_influence, [1, 1, -2 / 3], atol=1e-6)


def test_influence_paper_filters_by_hand():
  # mem = (1/2, 1/2, 2/3) >= .25 for all; infl >= .15 only for (0,1), (1,0).
  # Labels: train (0, 1, 0), test (1, 0): (0,1) -> 0 == 0, (1,0) -> 1 == 1.
  mem = scores.memorization(HAND_MASKS, HAND_CORRECT).memorization
  result = scores.influence(HAND_MASKS, HAND_TEST, [0, 1, 0], [1, 0], mem)
  assert set(_pairs(result)) == {(0, 1), (1, 0)}
  # With test labels (0, 1), neither pair shares a label.
  result = scores.influence(HAND_MASKS, HAND_TEST, [0, 1, 0], [0, 1], mem)
  assert not _pairs(result)
  assert result.pair_train.dtype == np.int64
  assert result.pair_influence.dtype == np.float32
  # topk defaults to 10 but is capped at n = 3.
  assert result.topk_indices.shape == (2, 3)


def test_topk_zero_keeps_pairs_and_max_influence():
  mem = scores.memorization(HAND_MASKS, HAND_CORRECT).memorization
  result = scores.influence(HAND_MASKS, HAND_TEST, [0, 1, 0], [1, 0], mem,
                            topk=0, **KEEP_ALL)
  assert result.topk_indices.shape == (2, 0)
  assert result.topk_influence.shape == (2, 0)
  assert set(_pairs(result)) == set(HAND_INFLUENCE)
  np.testing.assert_allclose(result.max_influence, [1, 1, -2 / 3], atol=1e-6)


def test_progress_is_called_after_each_block():
  calls = []
  mem = np.zeros(3)
  scores.influence(HAND_MASKS, HAND_TEST, [0, 1, 0], [1, 0], mem,
                   block_size=2, progress=lambda d, t: calls.append((d, t)))
  assert calls == [(2, 3), (3, 3)]


# ---------------------------------------------------------------------------
# 2. Undefined estimates: example 0 is in every trial (k_out = 0), example 1
#    in none (k_in = 0).
#
#            masks M        correct C       test T
#   trial 0  1 0 1 0        1 1 1 0         1 0
#   trial 1  1 0 0 1        1 0 0 1         0 1
#   trial 2  1 0 1 1        0 1 1 0         1 1
#   trial 3  1 0 0 0        1 1 0 0         0 0
# ---------------------------------------------------------------------------
NAN_MASKS = np.array([[1, 0, 1, 0],
                      [1, 0, 0, 1],
                      [1, 0, 1, 1],
                      [1, 0, 0, 0]], bool)
NAN_CORRECT = np.array([[1, 1, 1, 0],
                        [1, 0, 0, 1],
                        [0, 1, 1, 0],
                        [1, 1, 0, 0]], bool)
NAN_TEST = np.array([[1, 0],
                     [0, 1],
                     [1, 1],
                     [0, 0]], bool)


def test_undefined_memorization_is_nan_and_counted():
  soft = NAN_CORRECT * 0.8 + 0.1
  mem = scores.memorization(NAN_MASKS, NAN_CORRECT, soft)
  np.testing.assert_array_equal(mem.k_in, [4, 0, 2, 2])
  np.testing.assert_array_equal(mem.k_out, [0, 4, 2, 2])
  for field in ('memorization', 'stderr', 'soft', 'soft_stderr'):
    values = getattr(mem, field)
    assert np.isnan(values[:2]).all(), field
    assert np.isfinite(values[2:]).all(), field
  assert mem.num_undefined == 2
  # ex 2: in {0,2} -> 1,1 -> 1; out {1,3} -> 0,0 -> 0; mem 1, stderr 0
  # ex 3: in {1,2} -> 1,0 -> 1/2; out {0,3} -> 0,0 -> 0; mem 1/2,
  #       stderr sqrt(.25/2) = 0.353553
  np.testing.assert_allclose(mem.memorization[2:], [1.0, 0.5])
  np.testing.assert_allclose(mem.stderr[2:], [0.0, math.sqrt(.125)])
  # Consistency is the held-out accuracy mean_{t: M=0} C: undefined for ex 0
  # (never held out). Ex 1 is held out of all 4 trials: (1+0+1+1)/4 = 3/4,
  # a well-defined held-out accuracy (scores.py defines cs = mean over
  # out-trials; only differences of means need both sides).
  assert np.isnan(mem.consistency[0])
  np.testing.assert_allclose(mem.consistency[1:], [0.75, 0.0, 0.0])


def test_undefined_examples_never_reach_topk_or_pairs():
  mem = scores.memorization(NAN_MASKS, NAN_CORRECT).memorization
  # ex 2 (in {0,2}): test 0: in 1,1 -> 1, out 0,0 -> 0 -> infl 1;
  #                  test 1: in 0,1 -> .5, out 1,0 -> .5 -> infl 0
  # ex 3 (in {1,2}): test 0: in 0,1 -> .5, out 1,0 -> .5 -> infl 0;
  #                  test 1: in 1,1 -> 1, out 0,0 -> 0 -> infl 1
  for mem_values in (mem, np.zeros(4)):
    for block_size in (1, 3, 4):
      result = scores.influence(NAN_MASKS, NAN_TEST, [0] * 4, [0] * 2,
                                mem_values, topk=4, block_size=block_size,
                                **KEEP_ALL)
      np.testing.assert_array_equal(result.topk_indices,
                                    [[2, 3, -1, -1], [3, 2, -1, -1]])
      np.testing.assert_allclose(result.topk_influence[:, :2], [[1, 0], [1, 0]])
      assert np.isnan(result.topk_influence[:, 2:]).all()
      assert np.isnan(result.max_influence[:2]).all()
      np.testing.assert_allclose(result.max_influence[2:], [1, 1])
      pairs = _pairs(result)
      assert set(pairs) == {(2, 0), (2, 1), (3, 0), (3, 1)}
      assert np.isfinite(list(pairs.values())).all()


def test_undefined_examples_have_nan_rows_in_dense_matrix(tmp_path):
  path = str(tmp_path / 'dense.npy')
  scores.influence(NAN_MASKS, NAN_TEST, [0] * 4, [0] * 2, np.zeros(4),
                   dense_path=path)
  dense = np.load(path, mmap_mode='r')
  assert np.isnan(dense[:2]).all()
  np.testing.assert_array_equal(dense[2:], [[1, 0], [0, 1]])


def test_minus_inf_thresholds_keep_no_undefined_pairs():
  # "pairs need infl >= this": an undefined (NaN) influence is never >= -inf.
  # Examples 0 (k_out=0) and 1 (k_in=0) must give no pair; 2 and 3 give all.
  result = scores.influence(NAN_MASKS, NAN_TEST, [0] * 4, [0] * 2, np.zeros(4),
                            influence_threshold=-np.inf,
                            memorization_threshold=-np.inf, same_label=False)
  assert set(_pairs(result)) == {(2, 0), (2, 1), (3, 0), (3, 1)}


# ---------------------------------------------------------------------------
# 3. Blocking changes nothing.
# ---------------------------------------------------------------------------
def _reference_influence(masks, test_values):
  """infl = M^T T / k_in - (1 - M)^T T / k_out, in float64."""
  m = masks.astype(np.float64)
  t = test_values.astype(np.float64)
  k_in = m.sum(0)[:, None]
  k_out = (1 - m).sum(0)[:, None]
  return m.T @ t / k_in - (1 - m).T @ t / k_out


def test_blocking_is_exact(tmp_path):
  rng = np.random.default_rng(7)
  k, n, n_test, topk = 50, 23, 11, 5
  masks = rng.random((k, n)) < 0.6
  assert masks.any(0).all() and (~masks).any(0).all()
  test_values = rng.random((k, n_test)).astype(np.float32)  # soft: no ties
  train_labels = rng.integers(0, 3, n)
  test_labels = rng.integers(0, 3, n_test)
  mem = rng.uniform(-0.2, 1.0, n)
  thresholds = dict(influence_threshold=0.05, memorization_threshold=0.25)
  ref = _reference_influence(masks, test_values)
  # Preconditions that make the comparison well-posed: no near-ties in the
  # top-k and no influence within float32 rounding of the threshold.
  gaps = np.diff(np.sort(ref, axis=0), axis=0)
  assert gaps.min() > 1e-5
  assert np.abs(ref - 0.05).min() > 1e-5

  expected_topk = np.argsort(-ref, axis=0)[:topk].T
  keep = ((ref >= 0.05) & (mem >= 0.25)[:, None] &
          (train_labels[:, None] == test_labels[None, :]))
  expected_pairs = set(zip(*np.nonzero(keep)))
  assert 5 < len(expected_pairs) < keep.size  # the filters do something

  results = {}
  for block_size in (1, 3, 7, n):
    dense_path = str(tmp_path / f'dense_{block_size}.npy')
    results[block_size] = r = scores.influence(
        masks, test_values, train_labels, test_labels, mem, topk=topk,
        block_size=block_size, dense_path=dense_path, **thresholds)
    np.testing.assert_array_equal(r.topk_indices, expected_topk)
    np.testing.assert_allclose(r.topk_influence,
                               np.take_along_axis(ref, expected_topk.T, 0).T,
                               atol=1e-6)
    np.testing.assert_allclose(r.max_influence, ref.max(1), atol=1e-6)
    pairs = _pairs(r)
    assert set(pairs) == {(int(i), int(j)) for i, j in expected_pairs}
    for (i, j), (value, _) in pairs.items():
      assert value == pytest.approx(ref[i, j], abs=1e-6)
    dense = np.load(dense_path, mmap_mode='r')
    assert isinstance(dense, np.memmap)
    assert dense.dtype == np.float16 and dense.shape == (n, n_test)
    # float16 has an 11-bit significand: |x| <= 1 -> error <= 2^-11.
    np.testing.assert_allclose(dense.astype(np.float64), ref, atol=2 ** -11,
                               rtol=0)
  base = results[n]
  base_pairs = _pairs(base)
  for block_size, r in results.items():
    np.testing.assert_array_equal(r.topk_indices, base.topk_indices)
    np.testing.assert_allclose(r.topk_influence, base.topk_influence,
                               atol=1e-6)
    np.testing.assert_allclose(r.max_influence, base.max_influence, atol=1e-6)
    pairs = _pairs(r)
    assert set(pairs) == set(base_pairs), block_size
    for key, (value, stderr) in pairs.items():
      assert value == pytest.approx(base_pairs[key][0], abs=1e-6)
      assert stderr == pytest.approx(base_pairs[key][1], abs=1e-6)


def test_soft_influence_stderr_uses_the_empirical_variance():
  # One train example in trials {0,1}; test soft scores .5 in every trial:
  # p_in = p_out = .5 with zero spread -> infl 0, stderr 0 (the binomial
  # formula p(1-p) would give sqrt(.25/2 + .25/2) = .5).
  masks = np.array([[1], [1], [0], [0]], bool)
  test = np.full((4, 1), 0.5, np.float32)
  result = scores.influence(masks, test, [0], [0], [1.0], **KEEP_ALL)
  assert _pairs(result)[(0, 0)] == (0.0, 0.0)
  # With the train examples' own soft scores as test values, infl(i, i) is the
  # soft memorization of i, worked out by hand above: (.5, sqrt(.025)),
  # (0, sqrt(.05)), (1.3/3, sqrt(.56/27)).
  result = scores.influence(HAND_MASKS, HAND_SOFT, [0] * 3, [0] * 3,
                            np.ones(3), **KEEP_ALL)
  pairs = _pairs(result)
  for i, (value, stderr) in enumerate(
      [(.5, math.sqrt(.025)), (0., math.sqrt(.05)),
       (1.3 / 3, math.sqrt(.56 / 27))]):
    assert pairs[(i, i)][0] == pytest.approx(value, abs=1e-6)
    assert pairs[(i, i)][1] == pytest.approx(stderr, abs=1e-6)


def test_pair_exactly_at_the_influence_threshold_is_kept():
  # k = 9 trials: the train example is in trials 0-3 (k_in=4, k_out=5); the
  # test example is correct in in-trials 0,1,2 and out-trials 4,5,6:
  # p_in = 3/4, p_out = 3/5, infl = 0.75 - 0.6 = 0.15 >= 0.15.
  masks = np.zeros((9, 1), bool)
  masks[:4] = True
  test = np.zeros((9, 1), bool)
  test[[0, 1, 2, 4, 5, 6]] = True
  result = scores.influence(masks, test, [0], [0], [1.0],
                            influence_threshold=0.15)
  assert set(_pairs(result)) == {(0, 0)}


# ---------------------------------------------------------------------------
# 4. Planted structure in synthetic trials.
# ---------------------------------------------------------------------------
K, N, N_TEST = 400, 60, 30
MEMORIZED = [0, 1, 2, 3, 4]      # correct iff in the subset: mem exactly 1
PLANTED = {0: 0, 1: 1, 2: 2}     # test j correct iff train i in the subset
OTHER_LABEL = (3, 3)             # planted (3 -> 3) but labels differ
LOW_MEM = (5, 5)                 # planted (5 -> 5), train 5 not memorized
HALF = (4, 4)                    # test 4 correct on half of train 4's in-trials


@pytest.fixture(scope='module')
def planted():
  design = masks_lib.SubsetDesign(num_trials=K, subset_ratio=0.7,
                                  design='independent', seed=3)
  masks = np.stack([design.mask(N, t) for t in range(K)])
  rng = np.random.default_rng(11)
  correct = rng.random((K, N)) < 0.95
  correct[:, MEMORIZED] = masks[:, MEMORIZED]
  test = rng.random((K, N_TEST)) < 0.8
  for i, j in list(PLANTED.items()) + [OTHER_LABEL, LOW_MEM]:
    test[:, j] = masks[:, i]
  i, j = HALF
  in_trials = np.flatnonzero(masks[:, i])
  test[:, j] = False
  test[in_trials[:len(in_trials) // 2], j] = True
  half_value = (len(in_trials) // 2) / len(in_trials)  # p_in; p_out = 0
  train_labels = rng.integers(0, 10, N)
  test_labels = rng.integers(0, 10, N_TEST)
  for i, j in list(PLANTED.items()) + [LOW_MEM, HALF]:
    test_labels[j] = train_labels[i]
  test_labels[OTHER_LABEL[1]] = (train_labels[OTHER_LABEL[0]] + 1) % 10
  mem = scores.memorization(masks, correct)
  return dict(masks=masks, correct=correct, test=test, mem=mem,
              train_labels=train_labels, test_labels=test_labels,
              half_value=half_value)


def test_planted_memorization(planted):
  mem = planted['mem']
  masks = planted['masks']
  assert mem.num_undefined == 0
  np.testing.assert_array_equal(mem.k_in, masks.sum(0))
  np.testing.assert_array_equal(mem.k_in + mem.k_out, K)
  # Memorized: correct exactly on in-trials -> p_in=1, p_out=0 -> mem 1, se 0.
  np.testing.assert_array_equal(mem.memorization[MEMORIZED], 1.0)
  np.testing.assert_array_equal(mem.stderr[MEMORIZED], 0.0)
  np.testing.assert_array_equal(mem.consistency[MEMORIZED], 0.0)
  ordinary = np.setdiff1d(np.arange(N), MEMORIZED)
  assert (mem.stderr[ordinary] > 0).all()
  z = np.abs(mem.memorization[ordinary]) / mem.stderr[ordinary]
  assert (z < 4).all(), z.max()
  assert np.abs(mem.memorization[ordinary]).max() < 0.25
  # Consistency of ordinary examples estimates their accuracy 0.95.
  assert abs(mem.consistency[ordinary].mean() - 0.95) < 0.02


def _planted_influence(planted, **kwargs):
  args = dict(topk=3)
  args.update(kwargs)
  return scores.influence(planted['masks'], planted['test'],
                          planted['train_labels'], planted['test_labels'],
                          planted['mem'].memorization, block_size=16, **args)


def test_planted_influence_all_pairs(planted):
  result = _planted_influence(planted, **KEEP_ALL)
  pairs = _pairs(result)
  assert len(pairs) == N * N_TEST
  strong = list(PLANTED.items()) + [OTHER_LABEL, LOW_MEM]
  for key in strong:
    assert pairs[key] == (1.0, 0.0), key  # p_in = 1, p_out = 0 exactly
  assert pairs[HALF][0] == pytest.approx(planted['half_value'], abs=1e-6)
  for i, j in strong + [HALF]:
    assert result.topk_indices[j, 0] == i
  unrelated = {key: v for key, v in pairs.items()
               if key not in set(strong + [HALF])}
  assert all(s > 0 for _, s in unrelated.values())
  z = np.array([abs(v) / s for v, s in unrelated.values()])
  # Under the null, |z| > 4.5 has probability ~7e-6 per pair.
  assert (z > 4.5).sum() <= 2, np.sort(z)[-5:]
  assert np.median(z) < 1.0


def test_planted_pairs_and_filters(planted):
  mem = planted['mem'].memorization
  reference = _pairs(_planted_influence(planted, **KEEP_ALL))
  train_labels, test_labels = planted['train_labels'], planted['test_labels']

  def expected(infl_t, mem_t, same_label):
    return {(i, j) for (i, j), (v, _) in reference.items()
            if v >= infl_t and mem[i] >= mem_t and
            (not same_label or train_labels[i] == test_labels[j])}

  paper = _pairs(_planted_influence(planted))  # 0.15, 0.25, same label
  assert set(paper) == expected(0.15, 0.25, True)
  for i, j in PLANTED.items():
    assert paper[(i, j)] == (1.0, 0.0)
  assert HALF in paper
  assert OTHER_LABEL not in paper   # labels differ
  assert LOW_MEM not in paper       # mem(5) ~ 0 < 0.25

  no_label = _pairs(_planted_influence(planted, same_label=False))
  assert set(no_label) == expected(0.15, 0.25, False)
  assert OTHER_LABEL in no_label

  low_mem = _pairs(_planted_influence(planted, memorization_threshold=-1.0))
  assert set(low_mem) == expected(0.15, -1.0, True)
  assert LOW_MEM in low_mem

  # 0.6 sits between the half-planted influence (~0.5) and 1.
  assert planted['half_value'] < 0.6
  strict = _pairs(_planted_influence(planted, influence_threshold=0.6))
  assert set(strict) == expected(0.6, 0.25, True)
  assert HALF not in strict
  assert set(PLANTED.items()) <= set(strict)

  # Nothing has influence above 1 (float32 block: leave a margin).
  none = _pairs(_planted_influence(planted, influence_threshold=1.001))
  assert not none


# ---------------------------------------------------------------------------
# 5. Lemma 2.1.
# ---------------------------------------------------------------------------
def test_lemma_2_1_bound_by_hand():
  # k=100, r=0.7 -> p = min(.7, .3) = .3:
  # 1/(.3*100) + 1/(.7*100) + exp(-.3*100/16)/2
  #   = 0.033333 + 0.014286 + exp(-1.875)/2 = 0.033333 + 0.014286 + 0.076677
  #   = 0.124297
  expected = 1 / (0.3 * 100) + 1 / (0.7 * 100) + math.exp(-0.3 * 100 / 16) / 2
  assert expected == pytest.approx(0.124297, abs=1e-6)
  assert scores.lemma_2_1_bound(100, 0.7) == pytest.approx(expected, rel=1e-12)
  assert scores.lemma_2_1_bound(100, 0.3) == pytest.approx(expected, rel=1e-12)
  for k, r in ((10, 0.5), (2000, 0.1), (37, 0.25)):
    assert scores.lemma_2_1_bound(k, r) == pytest.approx(
        scores.lemma_2_1_bound(k, 1 - r), rel=1e-12)
  # More trials, tighter bound.
  assert scores.lemma_2_1_bound(1000, 0.7) < scores.lemma_2_1_bound(100, 0.7)


# ---------------------------------------------------------------------------
# 6. Agreement measures.
# ---------------------------------------------------------------------------
def test_rank_correlations():
  a = np.arange(1.0, 11.0)
  b = a ** 3  # monotone, not linear
  pearson, spearman = ranks.correlations(a, b)
  assert spearman == pytest.approx(1.0)
  assert pearson < 0.99
  pearson, spearman = ranks.correlations(a, -np.exp(a))
  assert spearman == pytest.approx(-1.0) and -1 < pearson < -0.5
  # NaNs (in either argument) are dropped pairwise.
  a_nan, b_nan = a.copy(), b.copy()
  a_nan[[0, 5]] = np.nan
  b_nan[7] = np.nan
  b_nan[2] = np.inf
  ok = np.ones(10, bool)
  ok[[0, 5, 7, 2]] = False
  got = ranks.correlations(a_nan, b_nan)
  want = ranks.correlations(a[ok], b[ok])
  assert got == pytest.approx(want)
  assert got[1] == pytest.approx(1.0)
  # Pearson by hand: x = (1,2,3), y = (1,2,4): cov = (-1)(-4/3)+(0)(-1/3)+
  # (1)(5/3) = 3; sx^2 = 2; sy^2 = 16/9+1/9+25/9 = 42/9 -> r = 3/sqrt(2*42/9)
  pearson, spearman = ranks.correlations([1, 2, 3], [1, 2, 4])
  assert pearson == pytest.approx(3 / math.sqrt(2 * 42 / 9))
  assert spearman == pytest.approx(1.0)
  # Too few finite points or a constant side: undefined.
  assert all(np.isnan(ranks.correlations([1, 2, np.nan], [1, 2, 3])))
  assert all(np.isnan(ranks.correlations([1, 1, 1, 1], [1, 2, 3, 4])))


def test_jaccard():
  a = [(1, 2), (3, 4), (5, 6)]
  b = [(3, 4), (5, 6), (7, 8), (9, 10)]
  # |a & b| = 2, |a | b| = 5
  assert scores.jaccard(a, b) == pytest.approx(2 / 5)
  assert scores.jaccard(b, a) == pytest.approx(2 / 5)
  assert scores.jaccard(a, a + a) == 1.0  # duplicates are one pair
  assert scores.jaccard(a, []) == 0.0
  assert scores.jaccard([], []) == 1.0
  assert scores.jaccard(set(), set()) == 1.0
  assert scores.jaccard([(1, 2)], [(2, 1)]) == 0.0  # ordered pairs


def _keys(pairs):
  pairs = np.array(pairs, np.int64).reshape(-1, 2)
  return scores.pair_keys(pairs[:, 0], pairs[:, 1])


def test_jaccard_keys_is_jaccard_of_the_pairs():
  a = [(1, 2), (3, 4), (5, 6)]
  b = [(3, 4), (5, 6), (7, 8), (9, 10)]
  assert scores.jaccard_keys(_keys(a), _keys(b)) == pytest.approx(2 / 5)
  assert scores.jaccard_keys(_keys(a), _keys(a + a)) == 1.0
  assert scores.jaccard_keys(_keys(a), _keys([])) == 0.0
  assert scores.jaccard_keys(_keys([]), _keys([])) == 1.0
  assert scores.jaccard_keys(_keys([(1, 2)]), _keys([(2, 1)])) == 0.0
  # Large indices (an ImageNet-sized train set) stay distinct pairs.
  big = [(1_281_166, 49_999), (1_281_166, 0), (0, 49_999)]
  assert len(_keys(big)) == 3
  rng = np.random.default_rng(0)
  for _ in range(20):
    x = [tuple(p) for p in rng.integers(0, 30, (rng.integers(0, 60), 2))]
    y = [tuple(p) for p in rng.integers(0, 30, (rng.integers(0, 60), 2))]
    assert scores.jaccard_keys(_keys(x), _keys(y)) == pytest.approx(
        scores.jaccard(x, y))


def test_difference_stderr_by_hand():
  # sqrt(0.25 / 4 + 0.09 / 9) = sqrt(0.0625 + 0.01)
  assert scores.difference_stderr(0.25, 4, 0.09, 9) == pytest.approx(
      math.sqrt(0.0725), abs=1e-15)
  assert isinstance(scores.difference_stderr(0.25, 4, 0.09, 9), float)
  out = scores.difference_stderr(np.array([0.25, 0.25, 0.25]),
                                 np.array([4, 0, 4]),
                                 np.array([0.09, 0.09, 0.09]),
                                 np.array([9, 9, 0]))
  assert out[0] == pytest.approx(math.sqrt(0.0725))
  assert np.isnan(out[1]) and np.isnan(out[2])  # no in- or no out-values


def test_memorization_stderr_is_the_difference_stderr():
  """memorization's standard error: p(1 - p)/k of each side, by hand."""
  masks = np.array([[1, 0], [1, 1], [0, 1], [0, 0], [1, 0]], bool)
  correct = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 1]], bool)
  mem = scores.memorization(masks, correct)
  # Example 0: in trials 0, 1, 4 (1, 0, 1: p = 2/3), out 2, 3 (1, 0: p = 1/2).
  assert mem.memorization[0] == pytest.approx(2 / 3 - 1 / 2)
  assert mem.stderr[0] == pytest.approx(
      math.sqrt((2 / 3) * (1 / 3) / 3 + 0.25 / 2))


def test_mean_std():
  assert scores.mean_std([1.0, 2.0, 4.0]) == pytest.approx(
      (7 / 3, math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2
                         + (4 - 7 / 3) ** 2) / 2)))
  assert scores.mean_std([0.5]) == (0.5, 0.0)
  assert all(math.isnan(v) for v in scores.mean_std([]))


def test_roc_by_hand_with_ties():
  """AUC = P(positive scores above a negative), ties counting half."""
  values = np.array([0.9, 0.5, 0.5, 0.1, 0.5])
  positive = np.array([True, True, False, False, False])
  auc, fpr, tpr = scores.roc(values, positive)
  # Pairs (pos, neg): 0.9 beats all 3; 0.5 beats 0.1, ties 0.5 twice.
  assert auc == pytest.approx((3 + 1 + 0.5 + 0.5) / 6)
  # One point per distinct score, from (0, 0): >= 0.9, >= 0.5, >= 0.1.
  assert fpr == [0.0, 0.0, 2 / 3, 1.0]
  assert tpr == [0.0, 0.5, 1.0, 1.0]
  reversed_auc = scores.roc(-values, positive)[0]
  assert reversed_auc == pytest.approx(1 - auc)
  assert math.isnan(scores.roc(values, np.ones(5, bool))[0])


def test_roc_of_a_planted_null_is_near_one_half():
  """Scores that know nothing of the labels: AUC near 0.5, not near 1."""
  rng = np.random.default_rng(0)
  values = rng.normal(size=20000)
  positive = rng.random(20000) < 0.1
  auc = scores.roc(values, positive)[0]
  # Its standard error at 2,000 positives and 18,000 negatives is ~0.007.
  assert abs(auc - 0.5) < 0.03
  planted = values + 2.0 * positive
  assert scores.roc(planted, positive)[0] > 0.9

"""stats/bits.py: bit-packed matrices read like the bool arrays they hold."""

import numpy as np
import pytest

from tf_memorization.stats import bits
from tf_memorization.stats import membership
from tf_memorization.stats import membership_eval
from tf_memorization.stats import planner
from tf_memorization.stats import scores
from tf_memorization.stats import selection


def _pair(k=13, n=29, seed=0):
  rng = np.random.default_rng(seed)
  dense = rng.random((k, n)) < 0.4
  return dense, bits.BitMatrix.from_bool(dense)


def test_every_index_reads_what_the_bool_array_holds():
  dense, packed = _pair()
  assert packed.shape == dense.shape and len(packed) == 13
  assert packed.nbytes == 13 * 4  # 29 bits in 4 bytes a row
  np.testing.assert_array_equal(np.asarray(packed), dense)
  for t in (0, 5, -1):
    np.testing.assert_array_equal(packed[t], dense[t])
  for rows in (slice(2, 9), slice(None, None, 3), np.array([4, 0, 12, 4]),
               dense[:, 0]):
    got = packed[rows]
    assert isinstance(got, bits.BitMatrix)
    np.testing.assert_array_equal(np.asarray(got), dense[rows])
  for cols in (slice(0, 29), slice(3, 4), slice(7, 23), slice(9, 9),
               slice(5, None, 2), np.array([28, 0, 8, 7, 8]), dense[0],
               np.array([-1, -29])):
    np.testing.assert_array_equal(packed[:, cols], dense[:, cols])
    np.testing.assert_array_equal(packed[2:11:4, cols], dense[2:11:4, cols])
  np.testing.assert_array_equal(packed.sum(axis=0), dense.sum(axis=0))
  np.testing.assert_array_equal(packed.sum(axis=1), dense.sum(axis=1))
  assert packed.sum() == dense.sum()
  with pytest.raises(IndexError):
    packed[:, np.array([29])]  # pylint: disable=pointless-statement


def test_counts_by_hand():
  masks = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 0, 1]], bool)
  correct = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1], [0, 1, 0]], bool)
  for m, c in ((masks, correct), (bits.BitMatrix.from_bool(masks),
                                  bits.BitMatrix.from_bool(correct))):
    k_in, x_in, x_all = bits.column_counts(m, c, chunk=2)
    assert k_in.tolist() == [2, 2, 3]
    assert x_in.tolist() == [1, 2, 2]
    assert x_all.tolist() == [1, 3, 2]
    in_subset, right_in, right_out = bits.row_counts(m, c, rows=3)
    assert in_subset.tolist() == [2, 2, 2, 1]
    assert right_in.tolist() == [2, 2, 1, 0]
    assert right_out.tolist() == [0, 0, 0, 1]


def test_the_statistics_give_the_same_numbers_on_packed_inputs():
  dense_masks, masks = _pair(k=40, n=300, seed=1)
  rng = np.random.default_rng(1)
  dense_correct = rng.random((40, 300)) < np.where(dense_masks, 0.9, 0.5)
  correct = bits.BitMatrix.from_bool(dense_correct)
  want = scores.memorization(dense_masks, dense_correct)
  got = scores.memorization(masks, correct)
  for field in ('memorization', 'stderr', 'consistency', 'k_in', 'k_out'):
    np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
  want = selection.memorization_tests(dense_masks, dense_correct, 0.0, 0.1)
  got = selection.memorization_tests(masks, correct, 0.0, 0.1)
  for field in ('estimate', 'pvalue', 'qvalue', 'selected'):
    np.testing.assert_array_equal(got[field], want[field])
  assert got['num_tests'] == want['num_tests'] > 0
  for a, b in zip(planner._side_variances(masks, correct, chunk=64),
                  planner._side_variances(dense_masks, dense_correct)):
    np.testing.assert_array_equal(a, b)
  phi = rng.normal(0, 1, (40, 300)) + 2 * dense_masks
  for variance in membership.VARIANCES:
    a = membership_eval.evaluate(phi, masks, variance, trials=[0, 7, 39])
    b = membership_eval.evaluate(phi, dense_masks, variance,
                                 trials=[0, 7, 39])
    assert (a.auc, a.tpr_at) == (b.auc, b.tpr_at)
  a = membership.per_example_scores(phi, masks)
  b = membership.per_example_scores(phi, dense_masks)
  np.testing.assert_array_equal(a.auc, b.auc)
  np.testing.assert_array_equal(a.separation, b.separation)

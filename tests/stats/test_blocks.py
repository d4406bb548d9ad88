"""Influence within classes (stats/blocks.py) against dense float64 truth.

The class-blocked scope computes only same-label entries; on them it must
agree with the dense matrix of every influence, and everything the paper
reads (pairs, tests, nulls, the split views) must be what the cross-class
scope gives.
"""

import numpy as np
import pytest

from tf_memorization.estimation import settings
from tf_memorization.core import errors
from tf_memorization.stats import blocks
from tf_memorization.stats import scores
from tf_memorization.stats import selection
from tf_memorization.stats import views

# Classes: 0 has several test examples, 1 has one, 2 has none, 3 has test
# examples but no training example.
TRAIN_LABELS = np.array([2, 0, 1, 0, 2, 1, 0, 0, 1, 2, 0, 1, 0, 0])
TEST_LABELS = np.array([0, 3, 0, 1, 0, 0, 3])


def _dense(masks, values):
  """Every influence in float64: mean over in-trials minus out-trials."""
  m = masks.astype(np.float64)
  t = values.astype(np.float64)
  return m.T @ t / m.sum(0)[:, None] - (1 - m).T @ t / (1 - m).sum(0)[:, None]


def _case(seed, k=60):
  rng = np.random.default_rng(seed)
  n, n_test = len(TRAIN_LABELS), len(TEST_LABELS)
  masks = rng.random((k, n)) < 0.5
  masks[0], masks[1] = True, False  # every example both in and out
  values = rng.random((k, n_test)).astype(np.float32)  # soft: no ties
  return masks, values


def test_class_members_by_hand():
  members = {c: (rows.tolist(), cols.tolist())
             for c, rows, cols in blocks.class_members(TRAIN_LABELS,
                                                        TEST_LABELS)}
  assert members == {0: ([1, 3, 6, 7, 10, 12, 13], [0, 2, 4, 5]),
                     1: ([2, 5, 8, 11], [3]), 2: ([0, 4, 9], [])}
  # 7 x 4 + 4 x 1 entries (class 2 has no test example, class 3 no
  # training example), against 14 x 7 for every pair.
  assert blocks.num_entries(TRAIN_LABELS, TEST_LABELS, 'same_label') == 32
  assert blocks.num_entries(TRAIN_LABELS, TEST_LABELS, 'all') == 98
  got = [(index.tolist(), cols.tolist()) for _, index, cols in
         blocks.blocks(TRAIN_LABELS, TEST_LABELS, 3, 'same_label')]
  assert got == [([1, 3, 6], [0, 2, 4, 5]), ([7, 10, 12], [0, 2, 4, 5]),
                 ([13], [0, 2, 4, 5]), ([2, 5, 8], [3]), ([11], [3])]
  got = [(take, index.tolist(), cols) for take, index, cols in
         blocks.blocks(TRAIN_LABELS, TEST_LABELS, 8, 'all')]
  assert got == [(slice(0, 8), list(range(8)), None),
                 (slice(8, 14), list(range(8, 14)), None)]
  with pytest.raises(ValueError, match='scope'):
    list(blocks.blocks(TRAIN_LABELS, TEST_LABELS, 8, 'cross'))


@pytest.mark.parametrize('block_size', [1, 3, 5, 14])
def test_same_label_influence_is_the_dense_matrix_within_classes(block_size):
  masks, values = _case(seed=3)
  dense = _dense(masks, values)
  same = TRAIN_LABELS[:, None] == TEST_LABELS[None, :]
  mem = np.linspace(-0.2, 1.0, len(TRAIN_LABELS))
  topk = 5
  got = scores.influence(masks, values, TRAIN_LABELS, TEST_LABELS, mem,
                         topk=topk, influence_threshold=0.0,
                         memorization_threshold=0.25, block_size=block_size,
                         scope='same_label')
  within = np.where(same, dense, -np.inf)
  for j, label in enumerate(TEST_LABELS):
    order = np.argsort(-within[:, j], kind='stable')
    want = [i for i in order[:topk] if np.isfinite(within[i, j])]
    # Class 0 has 7 training examples (top 5 of them), class 1 has 4 (all
    # 4, then padding), class 3 none (padding only).
    assert len(want) == {0: 5, 1: 4, 3: 0}[label]
    assert got.topk_indices[j, :len(want)].tolist() == want
    np.testing.assert_allclose(got.topk_influence[j, :len(want)],
                               dense[want, j], atol=1e-6)
    assert (got.topk_indices[j, len(want):] == -1).all()
    assert np.isnan(got.topk_influence[j, len(want):]).all()
  # The largest influence of each training example over the test examples
  # of its label; NaN for class 2, which has none.
  has_test = same.any(axis=1)
  np.testing.assert_allclose(got.max_influence[has_test],
                             within.max(axis=1)[has_test], atol=1e-6)
  assert np.isnan(got.max_influence[~has_test]).all()
  assert (~has_test).sum() == 3
  # The pairs: every same-label entry over the thresholds, exactly.
  want_pairs = set(zip(*np.nonzero(same & (dense >= 0.0)
                                   & (mem >= 0.25)[:, None])))
  pairs = dict(zip(zip(got.pair_train.tolist(), got.pair_test.tolist()),
                   got.pair_influence.tolist()))
  assert set(pairs) == {(int(i), int(j)) for i, j in want_pairs}
  assert len(pairs) > 5
  for (i, j), value in pairs.items():
    assert value == pytest.approx(dense[i, j], abs=1e-6)
  # The cross-class scope finds the same same-label pairs.
  every = scores.influence(masks, values, TRAIN_LABELS, TEST_LABELS, mem,
                           topk=topk, influence_threshold=0.0,
                           memorization_threshold=0.25,
                           block_size=block_size, scope='all')
  assert set(zip(every.pair_train.tolist(), every.pair_test.tolist())) == (
      set(pairs))
  np.testing.assert_allclose(every.max_influence, dense.max(axis=1),
                             atol=1e-6)


def test_progress_reaches_every_training_example():
  masks, values = _case(seed=4)
  seen = []
  scores.influence(masks, values, TRAIN_LABELS, TEST_LABELS,
                   np.ones(len(TRAIN_LABELS)), block_size=2,
                   scope='same_label',
                   progress=lambda done, total: seen.append((done, total)))
  # 11 examples in classes with test examples (in blocks of 2), then the 3
  # of class 2, which has none, at once.
  assert seen == [(2, 14), (4, 14), (6, 14), (7, 14), (9, 14), (11, 14),
                  (14, 14)]


@pytest.mark.parametrize('binary', [True, False])
def test_views_agree_across_scopes(binary):
  # Every view the estimator builds (nested, split halves, a sampled null):
  # its pairs, candidates, p-values, selections and coverage are the same
  # under both scopes, since all of them are same-label.
  rng = np.random.default_rng(11)
  k, n, n_test = 48, 300, 40
  train_labels = rng.integers(0, 4, n)
  test_labels = rng.integers(0, 5, n_test)  # class 4: no training example
  train_labels[train_labels == 3] = 2       # class 3: no training example
  test_labels[:2] = 3
  masks = rng.random((k, n)) < 0.5
  planted = rng.choice(n, 12, replace=False)
  test = rng.random((k, n_test)) < 0.6
  for j, i in enumerate(planted[:8]):
    test_labels[j + 2] = train_labels[i]
    test[:, j + 2] = masks[:, i] | (rng.random(k) < 0.1)
  if not binary:
    test = np.clip(test * 0.7 + rng.uniform(0, 0.3, test.shape), 0, 1)
    test = test.astype(np.float32)
  mem = np.full(n, 0.1)
  mem[planted] = 0.6
  mem[rng.choice(n, 60, replace=False)] = 0.3
  specs = [views.Spec(name, r, mem)
           for name, r in views.nested_rows(k).items()]
  specs.append(views.Spec('null0', np.arange(k), mem,
                          selection.derangement(k, 2), every=2))
  args = dict(topk=4, influence_threshold=0.15, memorization_threshold=0.25,
              same_label=True, delta=0.05, block_size=37)
  _, every = views.influence_views(masks, test, train_labels, test_labels,
                                   specs, scope='all', **args)
  infl, within = views.influence_views(masks, test, train_labels,
                                       test_labels, specs,
                                       scope='same_label', **args)
  assert len(every['all'].raw_train) >= 8
  assert 0 < every['null0'].coverage < 1
  for name, want in every.items():
    got = within[name]
    assert (got.num_tests, got.coverage) == (want.num_tests, want.coverage)
    assert got.raw_set() == want.raw_set(), name
    order_got = np.lexsort((got.test_test, got.test_train))
    order_want = np.lexsort((want.test_test, want.test_train))
    for field in ('test_train', 'test_test', 'pvalue', 'qvalue', 'selected'):
      np.testing.assert_array_equal(getattr(got, field)[order_got],
                                    getattr(want, field)[order_want])
  # The full view's top-k: the best training examples of each test
  # example's label, by the exact influence.
  exact = _dense(masks, test)
  for j in range(n_test):
    rows = np.flatnonzero(train_labels == test_labels[j])
    listed = infl.topk_indices[j][infl.topk_indices[j] >= 0]
    assert len(listed) == min(4, len(rows))
    assert set(listed) <= set(rows)
    if len(rows):
      best = np.sort(exact[rows, j])[::-1][:4]
      np.testing.assert_allclose(np.sort(exact[listed, j])[::-1], best,
                                 atol=1e-6)


def test_scope_bindings_that_contradict_each_other_are_refused():
  assert settings.Estimator().influence_scope == 'same_label'
  for binding in (dict(same_label=False), dict(dense_influence=True)):
    with pytest.raises(ValueError, match="influence_scope = 'all' as well"):
      settings.Estimator(**binding)
    assert settings.Estimator(influence_scope='all', **binding)
  with pytest.raises(errors.ConfigError, match='influence_scope'):
    settings.Estimator(influence_scope='classes')

"""ablation.train_linear_heads: many softmax heads trained at once."""

import numpy as np

from tf_memorization.experiments import ablation

NUM_CLASSES = 4


def _features(n, seed):
  """Separable features: a class direction plus small noise."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, n)
  x = np.eye(NUM_CLASSES, 8)[labels] * 3 + rng.normal(0, 0.3, (n, 8))
  return x.astype(np.float32), labels


def _train(masks, seeds, train_x, train_y, test_x, test_y):
  return ablation.train_linear_heads(
      {'train': train_x, 'test': test_x}, train_y, test_y, masks, seeds,
      NUM_CLASSES, epochs=20, batch_size=32, learning_rate=0.1, momentum=0.9,
      weight_decay=1e-4)


def test_heads_learn_from_their_subsets_only_and_do_not_interact():
  train_x, train_y = _features(300, 0)
  test_x, test_y = _features(100, 1)
  rng = np.random.default_rng(2)
  subset = rng.random(300) < 0.7
  only_class_0 = train_y == 0
  masks = np.stack([subset, only_class_0])
  together = _train(masks, [11, 12], train_x, train_y, test_x, test_y)
  alone = _train(masks[:1], [11], train_x, train_y, test_x, test_y)
  # A head on a 70% subset of separable data classifies the test set.
  assert together[0].metrics['test_accuracy'] > 0.95
  assert together[0].metrics['subset_size'] == subset.sum()
  # Examples outside a head's mask contribute no gradient: relabelling them
  # leaves the head exactly as it was.
  relabelled = train_y.copy()
  relabelled[~subset] = (relabelled[~subset] + 1) % NUM_CLASSES
  other = _train(masks, [11, 12], train_x, relabelled, test_x, test_y)
  np.testing.assert_allclose(other[0].test_prob, together[0].test_prob,
                             atol=1e-6)
  assert not np.allclose(other[1].test_prob, together[1].test_prob)
  # Training next to another head changes nothing for a head.
  np.testing.assert_array_equal(together[0].test_pred, alone[0].test_pred)
  np.testing.assert_allclose(together[0].train_prob, alone[0].train_prob,
                             atol=1e-4)
  # Reported scores are consistent with the predictions.
  for result in together:
    correct = result.train_pred == train_y
    assert np.all((result.train_prob >= 0) & (result.train_prob <= 1))
    clear = np.abs(result.train_margin) > 1e-4
    np.testing.assert_array_equal((result.train_margin > 0)[clear],
                                  correct[clear])


def test_head_initialisation_follows_its_seed():
  train_x, train_y = _features(120, 3)
  masks = np.ones((2, 120), bool)
  first = _train(masks, [5, 6], train_x, train_y, train_x, train_y)
  again = _train(masks, [5, 6], train_x, train_y, train_x, train_y)
  np.testing.assert_array_equal(first[1].train_prob, again[1].train_prob)
  assert not np.array_equal(first[0].train_prob, first[1].train_prob)


def test_a_head_trained_in_another_group_is_the_same_head():
  """A resumed ablation trains its pending heads in other groups than the
  first run did: with the same order_seed, a head sees the same batches
  whichever heads it trains with."""
  train_x, train_y = _features(200, 4)
  test_x, test_y = _features(80, 5)
  rng = np.random.default_rng(6)
  masks = rng.random((3, 200)) < 0.6
  first = _train(masks, [21, 22, 23], train_x, train_y, test_x, test_y)
  later = ablation.train_linear_heads(
      {'train': train_x, 'test': test_x}, train_y, test_y, masks[1:],
      [22, 23], NUM_CLASSES, epochs=20, batch_size=32, learning_rate=0.1,
      momentum=0.9, weight_decay=1e-4, order_seed=21)
  for one, other in zip(first[1:], later):
    np.testing.assert_array_equal(one.test_pred, other.test_pred)
    np.testing.assert_allclose(one.train_prob, other.train_prob, atol=1e-4)
  # Without it a group's batches follow its first head's seed.
  alone = _train(masks[1:], [22, 23], train_x, train_y, test_x, test_y)
  assert not np.allclose(alone[0].train_prob, first[1].train_prob, atol=1e-4)

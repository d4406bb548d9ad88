"""The learning-dynamics proxies: accumulated in the compiled step, they equal
the same quantities recomputed eagerly from the same batches."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_memorization.data import pipelines
from tf_memorization.training import dynamics
from tf_memorization.training import strategy as strategy_lib
from tf_memorization.training import trainer as trainer_lib

N, N_TEST, CLASSES, BATCH, EPOCHS = 90, 20, 3, 16, 4


def _random_batches(rng, steps, batch, n, copies):
  """Batches with repeated examples, as a batch across a pass boundary has."""
  return [(rng.integers(0, n, (batch, copies)), rng.random((batch, copies)),
           rng.random((batch, copies)) < 0.6) for _ in range(steps)]


def test_update_equals_the_numpy_definition_with_repeats_in_a_batch():
  rng = np.random.default_rng(0)
  batches = _random_batches(rng, steps=30, batch=8, n=10, copies=2)
  accumulated = dynamics.LearningDynamics(2, 10)
  update = tf.function(accumulated.update)
  for batch in batches:
    update(*batch)
  repeated = 0
  for k in range(2):
    expected = dynamics.reference(
        10, [(i[:, k], l[:, k], c[:, k]) for i, l, c in batches])
    got = accumulated.state(k)
    for name, value in expected.items():
      np.testing.assert_allclose(got[name], value, rtol=1e-6, err_msg=name)
    repeated += sum(len(i[:, k]) - len(set(i[:, k])) for i, _, _ in batches)
  assert repeated > 0  # the case the occurrence ranks are there for
  assert accumulated.state(0)['forgetting'].sum() > 0


def test_reference_by_hand():
  # Example 0: wrong, right, wrong, right -> 1 forgetting event, learned
  # after visit 3. Example 1: right, right -> never wrong. Example 2: right
  # then wrong at its last visit -> learned_epoch = visits = 2.
  batches = [([0, 1, 2], [2.0, 0.5, 0.1], [0, 1, 1]),
             ([0, 1, 2], [1.0, 0.25, 3.0], [1, 1, 0]),
             ([0], [1.5], [0]), ([0], [0.5], [1])]
  state = dynamics.reference(3, batches)
  np.testing.assert_allclose(state['csl'], [5.0, 0.75, 3.1])
  np.testing.assert_allclose(state['final_loss'], [0.5, 0.25, 3.0])
  np.testing.assert_array_equal(state['visits'], [4, 2, 2])
  np.testing.assert_array_equal(state['forgetting'], [1, 0, 1])
  np.testing.assert_array_equal(state['learned_epoch'], [3, 0, 2])


def _dataset():
  rng = np.random.default_rng(1)

  def split(n):
    labels = rng.integers(0, CLASSES, n).astype(np.int64)
    # Noise: crops and flips change what a fixed model predicts, so that
    # an example is right at some visits and wrong at others.
    images = rng.integers(0, 256, (n, 8, 8, 1))
    return pipelines.Split(images.astype(np.uint8), labels,
                           np.array([f'e{i}' for i in range(n)]))

  return pipelines.Dataset('user_data', '1', CLASSES, split(N), split(N_TEST),
                           normalization=((128.0,), (64.0,)))


def user_model(input_shape, num_classes, batch_norm=True):
  """A model a user writes: dense, batch norm, dense (no dropout)."""
  x = keras.Input(input_shape)
  y = keras.layers.Dense(16)(keras.layers.Flatten()(x))
  if batch_norm:
    y = keras.layers.BatchNormalization()(y)
  y = keras.layers.ReLU()(y)
  return keras.Model(x, keras.layers.Dense(num_classes)(y))


def _frozen_trainer(dataset, strategy, batch_norm=True, in_graph='auto'):
  return trainer_lib.TrialTrainer(
      dataset, strategy, epochs=EPOCHS, batch_size=BATCH,
      model_fn=lambda **kw: user_model(batch_norm=batch_norm, **kw),
      base_learning_rate=1e-30, momentum=0.0, schedule='constant',
      in_graph_input=in_graph,
      preprocessing=pipelines.Preprocessing(augment='crop_flip',
                                            crop_padding=2))


@pytest.fixture(scope='module')
def frozen_run():
  """A trial whose SGD steps move no weight (learning rate 1e-30), so each
  step's logits can be recomputed afterwards from its batch alone; random
  crops and flips make an example's visits differ."""
  dataset = _dataset()
  trainer = _frozen_trainer(dataset, strategy_lib.get_strategy('one_device'))
  mask = np.random.default_rng(2).random(N) < 0.7
  result = trainer.train_trial(mask, seed=7)
  return dataset, trainer, mask, result


def _eager_batches(trainer, mask, seed):
  pipeline = trainer.pipeline
  indices = np.flatnonzero(mask)
  steps = trainer.total_steps(mask)
  rows = pipeline.index_stream(indices, seed, steps, BATCH).numpy()
  key = pipeline.augment_key(seed)
  batches = []
  for step in range(steps):
    images, labels = pipeline.train_batch(
        tf.constant(rows[step]), tf.stack([key, tf.constant(step, tf.int64)]))
    logits = trainer.model(images, training=True).numpy().astype(np.float64)
    label = np.argmax(labels.numpy(), axis=1)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    batches.append((rows[step], -log_probs[np.arange(BATCH), label],
                    logits.argmax(axis=1) == label))
  return batches


def test_proxies_equal_an_eager_recomputation_from_the_same_batches(
    frozen_run):
  _, trainer, mask, result = frozen_run
  expected = dynamics.reference(N, _eager_batches(trainer, mask, seed=7))
  got = result.dynamics
  inside = mask
  for name in ('visits', 'forgetting', 'learned_epoch'):
    np.testing.assert_array_equal(got[f'train_{name}'][inside],
                                  expected[name][inside], err_msg=name)
    assert (got[f'train_{name}'][~inside] == -1).all()
  for name in ('csl', 'final_loss'):
    np.testing.assert_allclose(got[f'train_{name}'][inside],
                               expected[name][inside], rtol=1e-4, err_msg=name)
    assert np.isnan(got[f'train_{name}'][~inside]).all()
  # The check could fail: the visits differ (augmentation), so examples
  # are forgotten and learned late, and a batch crosses a pass boundary.
  assert got['train_forgetting'][inside].max() >= 1
  assert 0 < (got['train_learned_epoch'][inside] > 0).mean() < 1
  assert set(np.unique(got['train_visits'][inside])) <= {EPOCHS, EPOCHS + 1}
  assert expected['csl'][~inside].sum() == 0  # never visited


@pytest.mark.slow
def test_the_tf_data_path_and_a_mirrored_pair_record_the_same(frozen_run):
  # Without batch norm, whose statistics a replica takes over its half of
  # the batch, every way of feeding the trial computes the same losses.
  dataset, _, mask, _ = frozen_run
  one_device = strategy_lib.get_strategy('one_device')
  baseline = _frozen_trainer(dataset, one_device, batch_norm=False,
                             in_graph=True).train_trial(mask, seed=7)
  mirrored = strategy_lib.get_strategy('mirrored')  # conftest's 2 CPUs
  for name, strategy, in_graph in (('tf.data input', one_device, False),
                                   ('mirrored, in-graph', mirrored, True),
                                   ('mirrored, tf.data', mirrored, False)):
    other = _frozen_trainer(dataset, strategy, batch_norm=False,
                            in_graph=in_graph).train_trial(mask, seed=7)
    for field, value in baseline.dynamics.items():
      np.testing.assert_allclose(other.dynamics[field], value, rtol=1e-4,
                                 err_msg=f'{name}: {field}')
  assert baseline.dynamics['train_forgetting'][mask].max() >= 1


def test_a_learning_run_records_consistent_proxies():
  dataset = _dataset()
  trainer = trainer_lib.TrialTrainer(
      dataset, strategy_lib.get_strategy('one_device'), model_fn=user_model,
      epochs=EPOCHS, batch_size=BATCH, base_learning_rate=0.05,
      models_per_step=2)
  masks = [np.random.default_rng(s).random(N) < 0.7 for s in (3, 4)]
  first, second = trainer.train_trials(masks, [3, 4])
  for result, mask in ((first, masks[0]), (second, masks[1])):
    proxies = result.dynamics
    visits = proxies['train_visits'][mask]
    assert (proxies['train_learned_epoch'][mask] <= visits).all()
    assert (proxies['train_forgetting'][mask] <= visits - 1).all()
    assert (proxies['train_csl'][mask] >= proxies['train_final_loss'][mask]
            - 1e-6).all()
    # Final correctness in training mode ~ a small final loss.
    learned = proxies['train_learned_epoch'][mask] < visits
    assert (np.median(proxies['train_final_loss'][mask][learned]) <
            np.median(proxies['train_final_loss'][mask][~learned]))
  # Packed copies record their own trials, not each other's.
  assert not np.array_equal(first.dynamics['train_visits'],
                            second.dynamics['train_visits'])


def test_what_a_record_keeps_is_not_part_of_the_fingerprint():
  from tf_memorization.core import config  # pylint: disable=g-import-not-at-top
  from tf_memorization.training import runs  # pylint: disable=g-import-not-at-top,unused-import
  base = "TrialTrainer.epochs = 3\nTrialTrainer.batch_size = 64\n"
  kept = base + ('TrialTrainer.record_dynamics = False\n'
                 'TrialTrainer.record_heldout_probs = True\n')
  assert config.fingerprinted_lines(kept) == config.fingerprinted_lines(base)
  # What a trial computes still is.
  assert config.fingerprinted_lines(base + 'TrialTrainer.epochs = 4\n') != (
      config.fingerprinted_lines(base))

"""Synthetic trial records at any scale, for the estimator benchmarks.

Each trial trains on an independent 70% subset; example i is correct with a
probability that depends on whether it is in the subset (some examples are
memorized), and a few test examples depend on single training examples (planted
influence). Written through records.write_record, exactly as the train binary
writes them, with the fields record format 3 added (format3=True, the
default): the log-odds of the true class (higher for the subset's examples, so LiRA has a signal) and
the five learning-dynamics proxies, so that LiRA and the proxy table are
measured at scale too. Probabilities, margins and predictions agree with
each other as a model's would (record_checks.check_consistency).
"""

import dataclasses
import time

import numpy as np

from tf_memorization.stats import masks as masks_lib
from tf_memorization.training import trainer
from tf_memorization.workdir import records


@dataclasses.dataclass
class _Split:
  labels: np.ndarray
  ids: np.ndarray

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass
class _Dataset:
  name: str
  train: _Split
  test: _Split
  num_classes: int

  def describe(self):
    return {'name': self.name, 'version': 'synthetic', 'num_classes':
            self.num_classes, 'num_train': len(self.train),
            'num_test': len(self.test), 'image_shape': [32, 32, 3]}


def _side(rng, correct, labels, num_classes, member=None):
  """pred, prob, margin and log-odds of one split, consistent as a model's:
  log-odds phi > 0 when correct (the subset's examples higher), < 0 when
  wrong; p = sigmoid(phi); margin of phi's sign."""
  size = len(correct)
  phi = rng.normal(0.0, 1.0, size).astype(np.float32)
  phi = np.where(correct, 1.0 + np.abs(phi), -0.5 - np.abs(phi))
  if member is not None:
    phi = phi + np.where(member & correct, 1.5, 0.0)
  prob = 1.0 / (1.0 + np.exp(-phi))
  margin = np.where(correct, 0.5 + 0.5 * phi, -0.5 + 0.5 * phi)
  wrong = (labels + 1) % num_classes
  return (np.where(correct, labels, wrong), prob.astype(np.float32),
          margin.astype(np.float32), phi.astype(np.float32))


def _result(rng, mask, correct, test_correct, train_labels, test_labels,
            num_classes, format3):
  """A trainer.TrialResult of the planted outcomes (format 3: with the
  log-odds and the learning-dynamics proxies)."""
  train = _side(rng, correct, train_labels, num_classes, mask)
  test = _side(rng, test_correct, test_labels, num_classes)
  extra = {}
  if format3:
    n = len(mask)
    visits = np.where(mask, 8, 0).astype(np.int16)
    learned = np.where(mask, rng.integers(0, 9, n), -1).astype(np.int16)
    forgetting = np.where(mask, rng.integers(0, 8, n), -1).astype(np.int16)
    loss = np.where(mask, rng.exponential(0.5, n), np.nan).astype(np.float32)
    extra = dict(train_logodds=train[3], test_logodds=test[3], dynamics={
        'train_csl': loss * 8, 'train_final_loss': loss,
        'train_learned_epoch': learned, 'train_forgetting': forgetting,
        'train_visits': visits})
  return trainer.TrialResult(
      train_pred=train[0], train_prob=train[1], train_margin=train[2],
      test_pred=test[0], test_prob=test[1], test_margin=test[2],
      metrics={'train_accuracy': float(correct[mask].mean()),
               'heldout_accuracy': float(correct[~mask].mean()),
               'test_accuracy': float(test_correct.mean())}, **extra)


def make_records(workdir, num_trials, num_train, num_test, num_classes=100,
                 subset_ratio=0.7, seed=0, log=print, format3=True):
  """Writes `num_trials` synthetic records (skips those already there)."""
  rng = np.random.default_rng(seed)
  train_labels = rng.integers(0, num_classes, num_train)
  test_labels = rng.integers(0, num_classes, num_test)
  # Per-example accuracy when in / out of the subset: most examples are easy,
  # 10% are memorized (right only when trained on).
  p_in = np.full(num_train, 0.99)
  p_out = rng.uniform(0.5, 0.99, num_train)
  p_out[rng.random(num_train) < 0.1] = 0.05
  test_p = rng.uniform(0.3, 0.95, num_test)
  # Test example j < 200 is right exactly when memorized train example
  # planted[j] (same label) is in the subset: a high-influence pair.
  planted = rng.choice(num_train, size=min(200, num_test, num_train),
                       replace=False)
  p_out[planted] = 0.05
  test_labels[:len(planted)] = train_labels[planted]
  dataset = _Dataset(
      'synthetic', _Split(train_labels, np.array([f'train_{i}' for i in
                                                  range(num_train)])),
      _Split(test_labels, np.array([f'test_{j}' for j in range(num_test)])),
      num_classes)
  info = records.write_dataset_file(workdir, dataset)
  design = masks_lib.SubsetDesign(num_trials=num_trials,
                                  subset_ratio=subset_ratio, seed=seed)
  existing = records.list_records(workdir)
  start = time.perf_counter()
  for t in range(num_trials):
    if t in existing:
      continue
    trial_rng = np.random.default_rng([seed, t])
    mask = design.mask(num_train, t)
    correct = trial_rng.random(num_train) < np.where(mask, p_in, p_out)
    test_correct = trial_rng.random(num_test) < test_p
    test_correct[:len(planted)] = mask[planted]
    result = _result(trial_rng, mask, correct, test_correct, train_labels,
                     test_labels, num_classes, format3)
    records.write_record(workdir, t, mask, result, {
        'fingerprint': 'synthetic', 'seed': design.trial_seed(t),
        'dataset': info,
        'design': design.fingerprint_fields(), 'subset_ratio': subset_ratio,
        'num_trials': num_trials})
    if log and (t + 1) % 250 == 0:
      elapsed = time.perf_counter() - start
      log(f'  wrote {t + 1}/{num_trials} synthetic records ({elapsed:.0f}s)')
  return workdir

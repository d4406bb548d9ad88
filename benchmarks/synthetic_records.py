"""Synthetic trial records at any scale, for the estimator benchmarks.

Each trial trains on an independent 70% subset; example i is correct with a
probability that depends on whether it is in the subset (some examples are
memorized), and a few test examples depend on single training examples (planted
influence). Written through records.write_record, exactly as the train binary
writes them.
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


def make_records(workdir, num_trials, num_train, num_test, num_classes=100,
                 subset_ratio=0.7, seed=0, log=print):
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
    wrong = (train_labels + 1) % num_classes
    wrong_test = (test_labels + 1) % num_classes
    result = trainer.TrialResult(
        train_pred=np.where(correct, train_labels, wrong),
        train_prob=np.where(correct, 0.9, 0.1).astype(np.float32),
        train_margin=np.where(correct, 2.0, -2.0).astype(np.float32),
        test_pred=np.where(test_correct, test_labels, wrong_test),
        test_prob=np.where(test_correct, 0.9, 0.1).astype(np.float32),
        test_margin=np.where(test_correct, 2.0, -2.0).astype(np.float32),
        metrics={'train_accuracy': float(correct[mask].mean()),
                 'heldout_accuracy': float(correct[~mask].mean()),
                 'test_accuracy': float(test_correct.mean())})
    records.write_record(workdir, t, mask, result, {
        'fingerprint': 'synthetic', 'seed': design.trial_seed(t),
        'dataset': info,
        'design': design.fingerprint_fields(), 'subset_ratio': subset_ratio,
        'num_trials': num_trials})
    if log and (t + 1) % 250 == 0:
      elapsed = time.perf_counter() - start
      log(f'  wrote {t + 1}/{num_trials} synthetic records ({elapsed:.0f}s)')
  return workdir

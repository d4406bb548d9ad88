"""End-to-end tests of the retraining experiments (tf_memorization.experiments).

One small workdir of gin_configs/tiny.gin (4 trials, 1 epoch, 5% label noise)
is trained once in process with the real train binary's run(); the estimate
binary's run() then runs once in process with the removal, ablation,
leave-one-out and subset-ratio experiments at tiny sizes. Every test only
reads what those runs wrote, and derives its expectations independently:
from the masks and predictions in the trial records, from memorization
recomputed with plain numpy, and from the estimates' CSVs.

Resuming is checked twice: a second in-process run with the same bindings
(nothing retrained), and an estimate subprocess killed with SIGKILL in the
middle of the removal experiment and run again.
"""

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import gin
import numpy as np
import pytest

from tf_memorization.core import errors
from tf_memorization.data import pipelines
from tf_memorization.estimation import analyses
from tf_memorization import experiments
from tf_memorization.experiments import ablation
from tf_memorization import train
from tf_memorization.training import models
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

from conftest import GIN_DIR, REPO, layer_names

pytestmark = pytest.mark.slow  # trains real runs; see conftest

NUM_TRIALS, NUM_TRAIN = 4, 1442
NOISE_FRACTION, NOISE_SEED = 0.05, 3
TRAIN_BINDINGS = [f'SubsetDesign.num_trials = {NUM_TRIALS}',
                  'TrialTrainer.epochs = 1', "get_strategy.kind = 'one_device'",
                  f'label_noise.fraction = {NOISE_FRACTION}',
                  f'label_noise.seed = {NOISE_SEED}']
THRESHOLD, REPEATS = 0.5, 2
REMOVAL_BINDINGS = [f'RemovalExperiment.thresholds = ({THRESHOLD},)',
                    f'RemovalExperiment.repeats = {REPEATS}']
MAX_ABLATION_TRIALS = 2
SWEEP_RATIO, SWEEP_TRIALS = 0.3, 2
ESTIMATE_BINDINGS = [
    "Estimator.experiments = ('removal', 'ablation', 'leave_one_out', "
    "'ratio_sweep')",
    *REMOVAL_BINDINGS,
    'AblationExperiment.trainable_blocks = (0, 1)',
    f'AblationExperiment.max_trials = {MAX_ABLATION_TRIALS}',
    'LeaveOneOutExperiment.per_stratum = 1',
    'LeaveOneOutExperiment.repeats = 1',
    'LeaveOneOutExperiment.full_repeats = 2',
    'LeaveOneOutExperiment.max_repeats = 3',
    f'SubsetRatioSweep.ratios = ({SWEEP_RATIO},)',
    f'SubsetRatioSweep.num_trials = {SWEEP_TRIALS}',
]
CONDITIONS = ('full', 'memorized', 'random', 'influence_set',
              'influence_random')


def _round_half_up(x):
  return int(np.floor(x + 0.5))


def _experiment_dir(workdir, name):
  return os.path.join(workdir, 'experiments', name)


def _record_files(workdir):
  """{path: (inode, mtime_ns)} of every record under W/experiments."""
  found = {}
  root = os.path.join(workdir, 'experiments')
  for name in sorted(os.listdir(root)):
    for path in records.list_records(os.path.join(root, name)).values():
      st = os.stat(path)
      found[path] = (st.st_ino, st.st_mtime_ns)
  return found


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, digits_data_dir):
  """Four real trials of tiny.gin with 5% label noise, then every experiment."""
  path = str(tmp_path_factory.mktemp('experiments') / 'w')
  summary = train.run(path, [os.path.join(GIN_DIR, 'tiny.gin')],
                      TRAIN_BINDINGS, data_dir=digits_data_dir,
                      log=lambda _: None)
  gin.clear_config()
  assert summary.trained == list(range(NUM_TRIALS))
  return path


@pytest.fixture(scope='module')
def estimated(workdir, digits_data_dir):
  """pipeline.run() in process with all four experiments; (summary, lines).

  The data dir comes from the caller (as --data_dir): the workdir's config
  holds no location.
  """
  from tf_memorization.estimation import pipeline  # pylint: disable=g-import-not-at-top
  lines = []
  try:
    summary = pipeline.run(workdir, gin_bindings=ESTIMATE_BINDINGS,
                           data_dir=digits_data_dir, log=lines.append)
  finally:
    gin.clear_config()
  return summary, lines


@pytest.fixture(scope='module')
def rerun(workdir, estimated, digits_data_dir):
  """The same pipeline.run() again; record files before and after."""
  from tf_memorization.estimation import pipeline  # pylint: disable=g-import-not-at-top
  del estimated
  before = _record_files(workdir)
  lines = []
  try:
    summary = pipeline.run(workdir, gin_bindings=ESTIMATE_BINDINGS,
                           data_dir=digits_data_dir, log=lines.append)
  finally:
    gin.clear_config()
  return before, _record_files(workdir), summary, lines


@pytest.fixture(scope='module')
def main(workdir):
  return loading.load(workdir, predictions=True, margins=False)


def _memorization(masks, correct):
  """mean correctness over in-trials minus over out-trials; NaN if undefined."""
  m, c = masks.astype(bool), correct.astype(np.float64)
  k_in, k_out = m.sum(0), (~m).sum(0)
  with np.errstate(invalid='ignore', divide='ignore'):
    est = (c * m).sum(0) / k_in - (c * ~m).sum(0) / k_out
  est[(k_in == 0) | (k_out == 0)] = np.nan
  return est


@pytest.fixture(scope='module')
def main_mem(main):
  return _memorization(main.masks, main.train_correct)


def _read_csv(path):
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  return rows


def _float(text):
  return float(text) if text != '' else float('nan')


def _mask_digest(mask):
  return hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------
# Removal


@pytest.fixture(scope='module')
def removal(workdir, estimated):
  del estimated
  return loading.load(_experiment_dir(workdir, 'removal'), margins=False)


@pytest.fixture(scope='module')
def pairs(workdir, estimated):
  del estimated
  rows = _read_csv(os.path.join(workdir, 'estimates', 'influence_pairs.csv'))
  return (np.array([int(r['train_index']) for r in rows], np.int64),
          np.array([int(r['test_index']) for r in rows], np.int64))


def _removed(mask):
  return set(np.flatnonzero(~mask).tolist())


def test_removal_plan_matches_the_records(workdir, removal, main):
  with open(os.path.join(_experiment_dir(workdir, 'removal'),
                         'plan.json')) as f:
    plan = json.load(f)
  assert plan['fingerprint'] == main.fingerprint == removal.fingerprint
  jobs = plan['jobs']
  # full, memorized at θ, random at θ, influence set, influence random.
  assert len(jobs) == REPEATS * len(CONDITIONS)
  assert [j['index'] for j in jobs] == list(range(len(jobs)))
  assert removal.trial_indices.tolist() == [j['index'] for j in jobs]
  for row, job in enumerate(jobs):
    meta = removal.metadata[row]
    for key in ('seed', 'condition', 'repeat', 'num_removed'):
      assert meta[key] == job[key], (row, key)
    assert job['mask'] == _mask_digest(removal.masks[row])
    assert job['num_removed'] == int((~removal.masks[row]).sum())


def test_removal_masks(removal, main_mem, pairs):
  by_condition = {}
  for row, meta in enumerate(removal.metadata):
    by_condition.setdefault(meta['condition'], []).append(row)
  assert sorted(by_condition) == sorted(CONDITIONS)
  for condition, rows in by_condition.items():
    assert len(rows) == REPEATS, condition
    assert sorted(removal.metadata[r]['repeat'] for r in rows) == list(
        range(REPEATS))
    # The same subset for every repeat of a condition.
    for r in rows[1:]:
      np.testing.assert_array_equal(removal.masks[r], removal.masks[rows[0]])
  seeds = [m['seed'] for m in removal.metadata]
  assert len(set(seeds)) == len(seeds)

  first = {c: removal.masks[rows[0]] for c, rows in by_condition.items()}
  assert first['full'].all()

  defined = np.isfinite(main_mem)
  memorized = set(np.flatnonzero(defined & (main_mem >= THRESHOLD)).tolist())
  assert memorized, 'a 1-epoch model on 4 trials memorizes some examples'
  assert _removed(first['memorized']) == memorized
  assert not (~first['memorized'] & ~defined).any()  # NaN never removed
  for r in by_condition['memorized']:
    assert removal.metadata[r]['threshold'] == THRESHOLD
    assert removal.metadata[r]['num_removed'] == len(memorized)

  random_removed = _removed(first['random'])
  assert len(random_removed) == len(memorized)
  assert random_removed != memorized
  for r in by_condition['random']:
    assert removal.metadata[r]['threshold'] == THRESHOLD

  pair_train, _ = pairs
  influence_set = set(np.unique(pair_train).tolist())
  assert influence_set, 'the workdir has high-influence pairs'
  assert _removed(first['influence_set']) == influence_set
  influence_random = _removed(first['influence_random'])
  assert len(influence_random) == len(influence_set)
  assert influence_random != influence_set


def test_removal_outputs(workdir, removal, pairs):
  out = os.path.join(workdir, 'estimates')
  for name in ('removal.csv', 'removal.json', 'removal.png'):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  rows = _read_csv(os.path.join(out, 'removal.csv'))
  _, pair_test = pairs
  influenced = np.unique(pair_test)
  assert len(influenced)
  expected = {}
  for row, meta in enumerate(removal.metadata):
    key = (meta['condition'], meta.get('threshold'))
    expected.setdefault(key, []).append(row)
  got = {(r['condition'], float(r['threshold']) if r['threshold'] else None): r
         for r in rows}
  assert len(rows) == len(got) == len(expected) == len(CONDITIONS)
  assert set(got) == set(expected)
  for key, record_rows in expected.items():
    row = got[key]
    overall = removal.test_correct[record_rows].mean(axis=1)
    on_influenced = removal.test_correct[record_rows][:, influenced].mean(axis=1)
    assert int(row['models']) == len(record_rows) == REPEATS
    assert int(row['num_removed']) == int((~removal.masks[record_rows[0]]).sum())
    # The CSV holds 6 significant digits.
    assert _float(row['test_accuracy_mean']) == pytest.approx(
        overall.mean(), abs=1e-5), key
    assert _float(row['test_accuracy_std']) == pytest.approx(
        overall.std(ddof=1), abs=1e-5), key
    assert _float(row['influenced_accuracy_mean']) == pytest.approx(
        on_influenced.mean(), abs=1e-5), key
  with open(os.path.join(out, 'removal.json')) as f:
    summary = json.load(f)
  assert summary['repeats'] == REPEATS
  assert summary['thresholds'] == [THRESHOLD]
  assert summary['num_influenced_test_examples'] == len(influenced)


# --------------------------------------------------------------------------
# Ablation


def _ablation(workdir, num_blocks):
  return loading.load(_experiment_dir(workdir, f'ablation_last{num_blocks}'),
                      predictions=True, margins=False)


def test_ablation_reference_weights(workdir, estimated, main):
  del estimated
  path = os.path.join(_experiment_dir(workdir, 'ablation_reference'),
                      'reference.weights.npz')
  model = models.small_resnet(input_shape=(8, 8, 1),
                              num_classes=main.dataset_info['num_classes'],
                              width=8)
  expected = [w.shape for w in model.get_weights()]
  with np.load(path, allow_pickle=False) as npz:
    assert len(npz.files) == len(expected)
    shapes = [npz[f'w{i}'].shape for i in range(len(npz.files))]
  assert shapes == expected


@pytest.mark.parametrize('num_blocks', [0, 1])
def test_ablation_records(workdir, estimated, main, num_blocks):
  del estimated
  loaded = _ablation(workdir, num_blocks)
  np.testing.assert_array_equal(loaded.trial_indices,
                                main.trial_indices[:MAX_ABLATION_TRIALS])
  np.testing.assert_array_equal(loaded.masks,
                                main.masks[:MAX_ABLATION_TRIALS])
  assert all(m['trainable_blocks'] == num_blocks for m in loaded.metadata)
  main_seeds = {m['seed'] for m in main.metadata}
  assert not {m['seed'] for m in loaded.metadata} & main_seeds
  # Other models than the main trials on the same subsets.
  for row in range(MAX_ABLATION_TRIALS):
    assert not np.array_equal(loaded.train_pred[row], main.train_pred[row])
    assert not np.array_equal(loaded.test_pred[row], main.test_pred[row])
  # ... and other models than those of the other ablation variant.
  other = _ablation(workdir, 1 - num_blocks)
  assert not np.array_equal(loaded.test_pred, other.test_pred)


def test_ablation_csv(workdir, estimated, main):
  del estimated
  rows = _read_csv(os.path.join(workdir, 'estimates', 'ablation.csv'))
  assert [r['variant'] for r in rows] == ['full network', 'last layer only',
                                          'last 1 blocks + head']
  assert [r['trainable_blocks'] for r in rows] == ['', '0', '1']
  expected = [main.test_correct[:MAX_ABLATION_TRIALS].mean(),
              _ablation(workdir, 0).test_correct.mean(),
              _ablation(workdir, 1).test_correct.mean()]
  for row, value in zip(rows, expected):
    assert _float(row['mean_test_accuracy']) == pytest.approx(value,
                                                              abs=1e-5), row
  for row, num_blocks in zip(rows[1:], (0, 1)):
    loaded = _ablation(workdir, num_blocks)
    mem = _memorization(loaded.masks, loaded.train_correct)
    assert int(row['examples_memorization_ge_0.25']) == int(
        np.nansum(mem >= 0.25))
  with open(os.path.join(workdir, 'estimates', 'ablation.json')) as f:
    assert json.load(f)['trials_used'] == MAX_ABLATION_TRIALS


def test_trainable_layers_of_small_resnet():
  model = models.small_resnet(input_shape=(8, 8, 1), num_classes=10, width=4)
  names = [layer.name for layer in model.layers]

  def trainable(num_blocks):
    return layer_names(model, ablation.trainable_indices(model, num_blocks))

  assert trainable(0) == ['logits']
  last = [n for n in names if n.startswith('stage2_block1_')]
  assert last  # conv, bn, relu, projection, add, out
  assert set(trainable(1)) == set(last) | {'logits'}
  assert trainable(1)[-1] == 'logits'
  both = [n for n in names if n.startswith(('stage1_block1_',
                                            'stage2_block1_'))]
  assert set(trainable(2)) == set(both) | {'logits'}
  assert not any(n.startswith('stem') for n in trainable(2))
  with pytest.raises(errors.UserError, match='2'):
    trainable(3)


def test_ablation_trainer_keeps_the_reference_below_the_head(
    workdir, estimated, digits_data_dir):
  """The ablation's mechanism: only the chosen layers move from the reference."""
  from tf_memorization.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  from tf_memorization.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  del estimated
  with np.load(os.path.join(_experiment_dir(workdir, 'ablation_reference'),
                            'reference.weights.npz')) as npz:
    reference = [npz[f'w{i}'] for i in range(len(npz.files))]
  dataset = pipelines.load_dataset('sklearn_digits', data_dir=digits_data_dir)

  def model_fn(**kwargs):
    return models.small_resnet(width=8, **kwargs)

  probe = model_fn(input_shape=(8, 8, 1), num_classes=10)
  layers = layer_names(probe, ablation.trainable_indices(probe, 1))
  trainer = trainer_lib.TrialTrainer(
      dataset, strategy_lib.get_strategy('one_device'), model_fn=model_fn,
      epochs=1, batch_size=32, trainable_layers=layers)
  trainer.set_base_weights(reference)
  mask = np.zeros(len(dataset.train), bool)
  mask[::4] = True
  trainer.train_trial(mask, seed=5)
  by_path = dict(zip([w.path for w in trainer.model.weights], reference))
  moved = set()
  for layer in trainer.model.layers:
    for weight in layer.weights:
      if not np.array_equal(weight.numpy(), by_path[weight.path]):
        moved.add(layer.name)
  assert moved, 'the trainable layers trained'
  assert moved <= set(layers), sorted(moved - set(layers))
  assert 'logits' in moved


# --------------------------------------------------------------------------
# Label noise


def _toy_dataset(n=50, num_classes=5, seed=0):
  rng = np.random.default_rng(seed)

  def split(size):
    return pipelines.Split(
        images=rng.integers(0, 256, (size, 4, 4, 1), dtype=np.uint8),
        labels=rng.integers(0, num_classes, size).astype(np.int64),
        ids=np.array([str(i) for i in range(size)]))

  return pipelines.Dataset(name='toy', version='0', num_classes=num_classes,
                           train=split(n), test=split(7))


@pytest.mark.parametrize('fraction', [0.1, 0.27, 0.5])
def test_label_noise_flips_a_seeded_set(fraction):
  dataset = _toy_dataset()
  original = dataset.train.labels.copy()
  noisy, flipped = pipelines.label_noise(dataset, fraction=fraction, seed=7)
  expected_count = _round_half_up(fraction * len(original))
  assert len(flipped) == expected_count
  assert len(set(flipped.tolist())) == expected_count
  changed = np.flatnonzero(noisy.train.labels != original)
  np.testing.assert_array_equal(changed, np.sort(flipped))
  new = noisy.train.labels[flipped]
  assert ((new >= 0) & (new < dataset.num_classes)).all()
  np.testing.assert_array_equal(dataset.train.labels, original)  # not mutated
  np.testing.assert_array_equal(noisy.test.labels, dataset.test.labels)
  np.testing.assert_array_equal(noisy.train.images, dataset.train.images)
  again, flipped_again = pipelines.label_noise(dataset, fraction=fraction, seed=7)
  np.testing.assert_array_equal(flipped_again, flipped)
  np.testing.assert_array_equal(again.train.labels, noisy.train.labels)
  _, other = pipelines.label_noise(dataset, fraction=fraction, seed=8)
  assert set(other.tolist()) != set(flipped.tolist())


@pytest.mark.parametrize('fraction', [-0.1, 1.0])
def test_label_noise_rejects_bad_fractions(fraction):
  with pytest.raises(ValueError, match='fraction'):
    pipelines.label_noise(_toy_dataset(), fraction=fraction)


def test_label_noise_fraction_zero_flips_nothing():
  dataset = _toy_dataset()
  noisy, flipped = pipelines.label_noise(dataset, fraction=0.0, seed=7)
  assert len(flipped) == 0
  np.testing.assert_array_equal(noisy.train.labels, dataset.train.labels)


def test_workdir_label_noise(workdir, estimated, main, main_mem,
                             digits_data_dir):
  del estimated
  clean = pipelines.load_dataset('sklearn_digits', data_dir=digits_data_dir)
  assert len(clean.train) == NUM_TRAIN
  noisy, flipped = pipelines.label_noise(clean, fraction=NOISE_FRACTION,
                                         seed=NOISE_SEED)
  count = _round_half_up(NOISE_FRACTION * NUM_TRAIN)
  assert len(flipped) == count == 72
  np.testing.assert_array_equal(main.original_train_labels,
                                clean.train.labels)
  np.testing.assert_array_equal(main.train_labels, noisy.train.labels)
  np.testing.assert_array_equal(
      np.flatnonzero(main.train_labels != main.original_train_labels),
      np.sort(flipped))
  with open(os.path.join(workdir, 'estimates', 'label_noise.json')) as f:
    report = json.load(f)
  assert report['num_flipped'] == count
  assert report['num_flipped_estimable'] == count  # balanced: all defined
  assert report['num_clean_estimable'] == NUM_TRAIN - count
  # AUC by brute force over (flipped, clean) pairs, ties counted 1/2.
  is_flipped = np.zeros(NUM_TRAIN, bool)
  is_flipped[flipped] = True
  pos, neg = main_mem[is_flipped], main_mem[~is_flipped]
  auc = ((pos[:, None] > neg[None, :]).sum()
         + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
  assert report['auc'] == pytest.approx(auc, abs=1e-9)
  roc = _read_csv(os.path.join(workdir, 'estimates', 'label_noise.csv'))
  assert _float(roc[-1]['true_positive_rate']) == pytest.approx(1.0)
  assert _float(roc[-1]['false_positive_rate']) == pytest.approx(1.0)


def test_label_noise_report_perfect_and_reversed():
  mem = np.array([0.9, 0.1, 0.8, 0.2, 0.0, 0.7])
  flipped = np.array([True, False, True, False, False, True])
  report = analyses.label_noise_report(mem, flipped)
  assert report['auc'] == pytest.approx(1.0)
  assert report['precision_at_flipped'] == pytest.approx(1.0)
  assert report['num_flipped'] == 3
  reversed_report = analyses.label_noise_report(-mem, flipped)
  assert reversed_report['auc'] == pytest.approx(0.0)
  assert reversed_report['precision_at_flipped'] == pytest.approx(0.0)


def test_label_noise_report_ties_and_nan():
  # Positives 0.5, 0.5, 0.2; negatives 0.5, 0.2, 0.1 (NaNs left out).
  # Pairs (pos, neg): 0.5 vs 0.5 -> 1/2 (x2), 0.5 vs 0.2 -> 1 (x2),
  # 0.5 vs 0.1 -> 1 (x2), 0.2 vs 0.5 -> 0, 0.2 vs 0.2 -> 1/2, 0.2 vs 0.1 -> 1.
  # AUC = (1 + 2 + 2 + 0 + 0.5 + 1) / 9 = 6.5 / 9.
  mem = np.array([0.5, 0.5, 0.2, 0.5, 0.2, 0.1, np.nan, np.nan])
  flipped = np.array([True, True, True, False, False, False, True, False])
  report = analyses.label_noise_report(mem, flipped)
  assert report['auc'] == pytest.approx(6.5 / 9)
  assert report['num_flipped'] == 4
  assert report['num_flipped_estimable'] == 3
  assert report['num_clean_estimable'] == 3
  assert report['roc_fpr'][0] == report['roc_tpr'][0] == 0.0
  assert report['roc_fpr'][-1] == report['roc_tpr'][-1] == 1.0


def test_label_noise_report_without_positives():
  report = analyses.label_noise_report(np.array([0.1, 0.2]),
                                       np.array([False, False]))
  assert np.isnan(report['auc']) and report['num_flipped'] == 0


# --------------------------------------------------------------------------
# Leave-one-out


def test_leave_one_out(workdir, estimated, main_mem):
  del estimated
  from tf_memorization.experiments import leave_one_out  # pylint: disable=g-import-not-at-top
  loaded = loading.load(_experiment_dir(workdir, 'leave_one_out'),
                        margins=False)
  left_out = np.array([m['left_out'] for m in loaded.metadata])
  full_rows = np.flatnonzero(left_out == -1)
  assert len(full_rows) == 2  # one shared set: full_repeats = 2
  assert loaded.masks[full_rows].all()
  chosen = sorted(set(left_out[left_out >= 0].tolist()))
  # per_stratum = 1: one example of each middle bin that holds any (the
  # tails get per_stratum // 2 = 0).
  strata = leave_one_out.strata_of(main_mem, (0.1, 0.3, 0.5, 0.7, 0.9))
  middle = [j for j in range(1, 5) if (strata == j).any()]
  assert sorted(strata[chosen].tolist()) == middle
  for row in np.flatnonzero(left_out >= 0):
    assert _removed(loaded.masks[row]) == {int(left_out[row])}

  with open(os.path.join(workdir, 'estimates', 'leave_one_out.json')) as f:
    summary = json.load(f)
  per_example = dict(zip(summary['examples'],
                         summary['repeats_per_example']))
  assert sorted(per_example) == chosen
  for i, r in per_example.items():
    assert 1 <= r <= 3 and (left_out == i).sum() == r
  assert summary['models_trained'] == len(loaded.metadata)
  rows = _read_csv(os.path.join(workdir, 'estimates', 'leave_one_out.csv'))
  assert sorted(int(r['index']) for r in rows) == chosen
  correct = loaded.train_correct.astype(np.float64)
  for r in rows:
    i = int(r['index'])
    without = np.flatnonzero(left_out == i)
    p_f, p_o = correct[full_rows, i].mean(), correct[without, i].mean()
    assert _float(r['memorization_loo']) == pytest.approx(p_f - p_o,
                                                          abs=1e-6)
    stderr = np.sqrt(p_f * (1 - p_f) / 2 + p_o * (1 - p_o) / len(without))
    assert _float(r['memorization_loo_stderr']) == pytest.approx(stderr,
                                                                 abs=1e-6)
    assert _float(r['memorization_subsampled']) == pytest.approx(
        main_mem[i], abs=1e-5)
    assert int(r['repeats']) == len(without)
    assert r['in_middle_band'] == str(bool(0.1 <= main_mem[i] <= 0.9))


# --------------------------------------------------------------------------
# Subset-ratio sweep


def test_ratio_sweep(workdir, estimated, main):
  del estimated
  with open(os.path.join(workdir, 'operative_config.gin')) as f:
    assert "SubsetDesign.design = 'balanced'" in f.read()
  loaded = loading.load(_experiment_dir(workdir, f'ratio_{SWEEP_RATIO:g}'),
                        margins=False)
  assert loaded.num_trials == SWEEP_TRIALS
  assert all(m['subset_ratio'] == SWEEP_RATIO for m in loaded.metadata)
  # Balanced design: every example in exactly round(p * k) of the k trials.
  per_example = _round_half_up(SWEEP_RATIO * SWEEP_TRIALS)
  np.testing.assert_array_equal(loaded.masks.sum(0), per_example)
  assert not any(np.array_equal(a, b) for a in loaded.masks
                 for b in main.masks)

  rows = _read_csv(os.path.join(workdir, 'estimates', 'ratio_sweep.csv'))
  assert [float(r['subset_ratio']) for r in rows] == [SWEEP_RATIO, 0.5]
  assert [int(r['trials']) for r in rows] == [SWEEP_TRIALS, NUM_TRIALS]
  for r, loaded_ in zip(rows, (loaded, main)):
    assert _float(r['mean_test_accuracy']) == pytest.approx(
        loaded_.test_correct.mean(), abs=1e-5)
    mem = _memorization(loaded_.masks, loaded_.train_correct)
    assert int(r['examples_memorization_ge_0.25']) == int(
        np.nansum(mem >= 0.25))


def test_memorization_vs_influence(workdir, estimated, main, main_mem):
  from scipy import stats  # pylint: disable=g-import-not-at-top
  del estimated
  m = main.masks.astype(np.float64)
  t = main.test_correct.astype(np.float64)
  influence = m.T @ t / m.sum(0)[:, None] - (1 - m).T @ t / (1 - m).sum(0)[
      :, None]
  # Influence scope 'same_label' (the default): the largest influence on a
  # test example of the training example's own label, NaN for a label with
  # no test example.
  same = main.train_labels[:, None] == main.test_labels[None, :]
  largest = np.where(same.any(axis=1),
                     np.where(same, influence, -np.inf).max(axis=1), np.nan)
  rows = _read_csv(os.path.join(workdir, 'estimates',
                                'memorization_vs_influence.csv'))
  assert [int(r['index']) for r in rows] == list(range(NUM_TRAIN))
  np.testing.assert_allclose([_float(r['memorization']) for r in rows],
                             main_mem, atol=1e-5)
  np.testing.assert_allclose([_float(r['max_influence']) for r in rows],
                             largest, atol=1e-5)
  with open(os.path.join(workdir, 'estimates',
                         'memorization_vs_influence.json')) as f:
    summary = json.load(f)
  both = np.isfinite(main_mem) & np.isfinite(largest)
  if np.std(largest[both]) == 0:  # 4 trials: influences of 1 for all
    # Correlation with a constant is undefined: reported as NaN (null).
    assert summary['pearson'] is None or np.isnan(summary['pearson'])
    assert summary['spearman'] is None or np.isnan(summary['spearman'])
  else:
    assert summary['pearson'] == pytest.approx(
        stats.pearsonr(main_mem[both], largest[both])[0], abs=1e-6)
    assert summary['spearman'] == pytest.approx(
        stats.spearmanr(main_mem[both], largest[both])[0], abs=1e-6)


def test_summary_lists_the_experiments(workdir, estimated):
  summary, _ = estimated
  assert set(summary['experiments']) == set(experiments.BY_KIND)
  with open(os.path.join(workdir, 'estimates', 'summary.json')) as f:
    assert set(json.load(f)['experiments']) == set(experiments.BY_KIND)


# --------------------------------------------------------------------------
# Resuming


def test_second_run_retrains_nothing(rerun):
  before, after, summary, lines = rerun
  loo_models = summary['experiments']['leave_one_out']['models_trained']
  assert loo_models >= 2 + 1  # the shared full-data models, one per example
  assert len(before) == (REPEATS * len(CONDITIONS)
                         + 2 * MAX_ABLATION_TRIALS + loo_models
                         + SWEEP_TRIALS)
  assert after == before
  assert set(summary['experiments']) == set(experiments.BY_KIND)
  assert not [l for l in lines if 'Ablation: training the reference' in l]
  assert not [l for l in lines if ' models, ' in l and 'ETA' in l]


def _estimate_command(workdir, *bindings):
  return [sys.executable, '-m', 'tf_memorization.estimate',
          f'--workdir={workdir}',
          *(f'--gin_bindings={b}' for b in bindings)]


@pytest.fixture(scope='module')
def killed_and_resumed(workdir, estimated, tmp_path_factory):
  """Removal in a copy: SIGKILL after the first record, then run again."""
  del estimated
  root = tmp_path_factory.mktemp('resume')
  copy = str(root / 'killed')
  shutil.copytree(workdir, copy)
  shutil.rmtree(_experiment_dir(copy, 'removal'))
  changed = str(root / 'changed_plan')
  shutil.copytree(workdir, changed)
  removal_only = ["Estimator.experiments = ('removal',)", *REMOVAL_BINDINGS]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')

  # The changed plan runs alongside the first (killed) run.
  changed_before = _record_files(changed)
  changed_proc = subprocess.Popen(
      _estimate_command(changed, "Estimator.experiments = ('removal',)",
                        'RemovalExperiment.thresholds = (0.25,)',
                        f'RemovalExperiment.repeats = {REPEATS}'),
      cwd=REPO, env=env, text=True, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE)
  log_path = str(root / 'first.log')
  with open(log_path, 'w') as log:
    first = subprocess.Popen(_estimate_command(copy, *removal_only), cwd=REPO,
                             env=env, stdout=log, stderr=subprocess.STDOUT)
    removal_dir = _experiment_dir(copy, 'removal')
    try:
      deadline = time.monotonic() + 300
      while not records.list_records(removal_dir):
        assert first.poll() is None, open(log_path).read()[-3000:]
        assert time.monotonic() < deadline, 'no removal record appeared'
        time.sleep(0.05)
      first.send_signal(signal.SIGKILL)
    finally:
      if first.poll() is None:
        first.kill()
      first.wait()
  killed_rc = first.returncode
  before = {}
  for path in records.list_records(removal_dir).values():
    st = os.stat(path)
    before[path] = (st.st_ino, st.st_mtime_ns)
  second = subprocess.run(_estimate_command(copy, *removal_only), cwd=REPO,
                          env=env, text=True, capture_output=True, timeout=400)
  changed_out, changed_err = changed_proc.communicate(timeout=400)
  return {'copy': copy, 'killed_rc': killed_rc, 'before': before,
          'second': second, 'changed': changed,
          'changed_result': (changed_proc.returncode, changed_out,
                             changed_err),
          'changed_before': changed_before}


def test_killed_removal_resumes(killed_and_resumed, removal):
  r = killed_and_resumed
  assert r['killed_rc'] == -signal.SIGKILL
  assert r['second'].returncode == 0, r['second'].stderr[-3000:]
  assert r['before']  # at least one record was written before the kill
  removal_dir = _experiment_dir(r['copy'], 'removal')
  with open(os.path.join(removal_dir, 'plan.json')) as f:
    plan = json.load(f)
  planned = [j['index'] for j in plan['jobs']]
  assert len(planned) == REPEATS * len(CONDITIONS)
  found = records.list_records(removal_dir)
  assert sorted(found) == planned
  assert len(r['before']) < len(planned)  # killed mid-experiment
  for path, identity in r['before'].items():
    st = os.stat(path)
    assert (st.st_ino, st.st_mtime_ns) == identity, path
  # The second run trained exactly the jobs the killed one had not finished.
  pending = len(planned) - len(r['before'])
  progress = [l for l in r['second'].stdout.splitlines()
              if ' removal models, ' in l]
  assert len(progress) == pending, r['second'].stdout[-3000:]
  assert all(l.startswith(f'[{i + 1}/{pending} removal models')
             for i, l in enumerate(progress)), progress
  resumed = loading.load(removal_dir, margins=False)  # checksums verified
  # The same plan as the uninterrupted run: same masks and seeds.
  np.testing.assert_array_equal(resumed.masks, removal.masks)
  assert [m['seed'] for m in resumed.metadata] == [
      m['seed'] for m in removal.metadata]
  assert os.path.exists(os.path.join(r['copy'], 'estimates', 'removal.csv'))


def test_changed_plan_is_refused(killed_and_resumed):
  r = killed_and_resumed
  rc, out, err = r['changed_result']
  assert rc == 2, (out[-2000:], err[-2000:])
  assert 'Traceback' not in err
  error_lines = [l for l in err.splitlines() if l.startswith('error:')]
  assert len(error_lines) == 1, err[-2000:]
  plan = os.path.join(_experiment_dir(r['changed'], 'removal'), 'plan.json')
  assert plan in error_lines[0]
  assert _record_files(r['changed']) == r['changed_before']

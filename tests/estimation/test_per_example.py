"""End-to-end tests of the estimator's per-example outputs (per_example.py).

No model is trained: `write_planted_records` writes k synthetic trial
records through records.write_record, exactly as the train binary writes
them (as benchmarks/synthetic_records.py does), with a planted truth:

  * n = 300 training / 60 test examples of 5 classes, each trial on an
    independent 70% subset (masks.SubsetDesign);
  * a third of the examples are *memorized*: the log-odds of their label
    are N(5, 1) when trained on and N(-3.5, 1) when held out, so they are
    right in their trials and wrong out of them; every other example has
    the same N(mu_i, 1) in and out (mu_i in [3.5, 6]): a planted null for
    membership inference and for memorization;
  * learning-dynamics proxies for each trial's subset (dynamics.
    values_for_record's layout, NaN / -1 elsewhere): a memorized example
    loses more per visit (csl, final_loss), is learned later and forgotten
    more often;
  * optionally the class-probability rows of the held-out examples, with
    30 labels flipped (W/dataset.npz trains on labels that differ from
    original_train_labels): the flipped examples are memorized ones whose
    held-out probability sits on their original class, far below that of
    the other memorized examples on their label.

Each test runs pipeline.run (or the estimate binary's main, in process:
conftest.run_in_process) on such a workdir and checks the outputs against
the planted truth. The module takes about 25 s on two cores, half of it
importing TensorFlow.
"""

import csv
import dataclasses
import functools
import json
import math
import os
import shutil

import gin
import numpy as np
import pytest

from tf_memorization.estimation import per_example
from tf_memorization.estimation import pipeline
from tf_memorization.stats import masks as masks_lib
from tf_memorization.stats import proxies as proxies_lib
from tf_memorization.stats import ranks
from tf_memorization.stats import scores
from tf_memorization.training import dynamics
from tf_memorization.training import trainer
from tf_memorization.workdir import estimates
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

from conftest import (LabelsDataset, LabelsSplit, read_npz, rewrite_record,
                      run_in_process, snapshot)

NUM_TRAIN, NUM_TEST, NUM_CLASSES = 300, 60, 5
NUM_TRIALS = 16
SUBSET_RATIO = 0.7
EPOCHS = 10  # visits of each subset example per trial
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# The estimator without the parts these tests do not look at (they cost
# most of its time).
BINDINGS = ['Estimator.report = False', 'Estimator.null_permutations = 0',
            'Estimator.planner = False']
ATTACK_NAMES = [name for name, _, _ in per_example.ATTACKS]


# ------------------------------------------------------------ the helper


_Split = LabelsSplit
_Dataset = functools.partial(LabelsDataset, version='planted')


@dataclasses.dataclass
class Planted:
  """A workdir of planted records and the truth planted in it."""
  workdir: str
  masks: np.ndarray            # bool [k, n]
  memorized: np.ndarray        # bool [n]
  flipped: np.ndarray          # bool [n]
  train_labels: np.ndarray     # the labels trained on (noisy)
  original_labels: np.ndarray  # before the flips
  train_ids: np.ndarray


def _margins(probs, labels):
  """The true class's logit minus the largest other's, of softmax `probs`."""
  rows = np.arange(len(labels))
  others = probs.copy()
  others[rows, labels] = 0
  return (np.log(probs[rows, labels]) -
          np.log(others.max(axis=1))).astype(np.float32)


def _class_probabilities(rng, logodds, labels, pulled_to):
  """[m, C] rows with p_y = sigmoid(logodds) on each label y; the rest of
  the mass spread at random over the other classes, 85% of it on
  pulled_to[i] where that is >= 0 (a flipped example's original class)."""
  m = len(labels)
  p_label = 1.0 / (1.0 + np.exp(-logodds))
  others = np.array([[c for c in range(NUM_CLASSES) if c != y]
                     for y in range(NUM_CLASSES)])[labels]
  probs = np.zeros((m, NUM_CLASSES))
  np.put_along_axis(probs, others,
                    rng.dirichlet(np.ones(NUM_CLASSES - 1), m)
                    * (1.0 - p_label)[:, None], axis=1)
  pulled = np.flatnonzero(pulled_to >= 0)
  probs[pulled] *= 0.15
  probs[pulled, pulled_to[pulled]] += 0.85 * (1.0 - p_label[pulled])
  probs[np.arange(m), labels] = p_label
  return probs


def write_planted_records(workdir, num_trials=NUM_TRIALS, num_train=NUM_TRAIN,
                          num_test=NUM_TEST, memorized_share=1 / 3,
                          num_flipped=0, format_3_fields=True,
                          heldout_probs=False, seed=0):
  """Writes `num_trials` records with a planted truth (module docstring).

  Args:
    workdir: where (W/dataset.npz and W/trials/ are written).
    num_trials, num_train, num_test: k, n and n_test.
    memorized_share: the share of memorized examples (0: a planted null
      everywhere).
    num_flipped: memorized examples whose training label is flipped.
    format_3_fields: write the log-odds and learning-dynamics proxies
      (False: a TrialResult as older code built it, without them).
    heldout_probs: write the held-out class-probability rows.
    seed: of everything.

  Returns:
    Planted.
  """
  rng = np.random.default_rng(seed)
  n = num_train
  original = rng.integers(0, NUM_CLASSES, n)
  test_labels = rng.integers(0, NUM_CLASSES, num_test)
  memorized = np.zeros(n, bool)
  memorized[rng.choice(n, round(memorized_share * n), replace=False)] = True
  flipped = np.zeros(n, bool)
  flipped[rng.choice(np.flatnonzero(memorized), num_flipped,
                     replace=False)] = True
  labels = original.copy()
  labels[flipped] = (original[flipped] +
                     rng.integers(1, NUM_CLASSES, num_flipped)) % NUM_CLASSES
  train_ids = np.array([f'train_{i}' for i in range(n)])
  dataset = _Dataset(
      'planted', _Split(original, train_ids),
      _Split(test_labels, np.array([f'test_{j}' for j in range(num_test)])),
      NUM_CLASSES)
  info = records.write_dataset_file(workdir, dataset, train_labels=labels)

  typical = rng.uniform(3.5, 6.0, n)  # the same in and out: the null
  mu_in = np.where(memorized, 5.0, typical)
  mu_out = np.where(flipped, -6.0, np.where(memorized, -3.5, typical))
  loss_per_visit = np.where(memorized, 1.0, rng.uniform(0.1, 0.4, n))
  test_mu = rng.uniform(1.0, 4.0, num_test)
  design = masks_lib.SubsetDesign(num_trials=num_trials,
                                  subset_ratio=SUBSET_RATIO, seed=seed)
  masks = []
  for t in range(num_trials):
    trial_rng = np.random.default_rng([seed, t])
    mask = design.mask(n, t)
    masks.append(mask)
    logodds = np.where(mask, mu_in, mu_out) + trial_rng.normal(0, 1, n)
    # Held out, a flipped example's probability goes to its original class.
    probs = _class_probabilities(trial_rng, logodds, labels,
                                 np.where(flipped & ~mask, original, -1))
    test_logodds = test_mu + trial_rng.normal(0, 1, num_test)
    test_probs = _class_probabilities(trial_rng, test_logodds, test_labels,
                                      np.full(num_test, -1))
    optional = {}
    if format_3_fields:
      state = {  # the accumulators of dynamics.LearningDynamics, per example
          'visits': np.full(n, EPOCHS),
          'csl': EPOCHS * loss_per_visit * trial_rng.lognormal(0, 1.0, n),
          'final_loss': (np.where(memorized, 0.3, 0.05) *
                         trial_rng.lognormal(0, 0.5, n)),
          'learned_epoch': np.where(memorized,
                                    trial_rng.integers(4, EPOCHS + 1, n),
                                    trial_rng.integers(0, 4, n)),
          'forgetting': np.minimum(
              trial_rng.poisson(np.where(memorized, 2.0, 0.3)), EPOCHS - 1)}
      optional = dict(train_logodds=logodds, test_logodds=test_logodds,
                      dynamics=dynamics.values_for_record(state, mask))
    if heldout_probs:
      optional['heldout_probs'] = probs[~mask]  # in index order
    train_pred, test_pred = probs.argmax(1), test_probs.argmax(1)
    correct = train_pred == labels
    result = trainer.TrialResult(
        train_pred=train_pred,
        train_prob=probs[np.arange(n), labels].astype(np.float32),
        train_margin=_margins(probs, labels),
        test_pred=test_pred,
        test_prob=test_probs[np.arange(num_test),
                             test_labels].astype(np.float32),
        test_margin=_margins(test_probs, test_labels),
        metrics={'train_accuracy': float(correct[mask].mean()),
                 'heldout_accuracy': float(correct[~mask].mean()),
                 'test_accuracy': float(np.mean(test_pred == test_labels))},
        **optional)
    records.write_record(workdir, t, mask, result, {
        'fingerprint': 'planted', 'seed': design.trial_seed(t),
        'dataset': info, 'design': design.fingerprint_fields(),
        'subset_ratio': SUBSET_RATIO, 'num_trials': num_trials})
  return Planted(workdir, np.stack(masks), memorized, flipped, labels,
                 original, train_ids)


def _estimate(workdir, bindings=(), output_dir=None):
  """pipeline.run as a library user calls it: (summary, logged lines)."""
  lines = []
  gin.clear_config()
  try:
    summary = pipeline.run(workdir, [], BINDINGS + list(bindings),
                           output_dir=output_dir, log=lines.append)
  finally:
    gin.clear_config()
  return summary, lines


def _estimate_main(workdir, bindings=()):
  """What the estimate binary runs, for run_in_process."""
  return lambda: pipeline.run(workdir, [], BINDINGS + list(bindings),
                              log=lambda _: None)


def _read_csv(path):
  with open(path, newline='') as f:
    reader = csv.reader(f)
    header = next(reader)
    return header, [dict(zip(header, row)) for row in reader]


def _floats(rows, column):
  return np.array([float(r[column]) if r[column] != '' else np.nan
                   for r in rows])


def _mann_whitney(positive, negative):
  """P(positive > negative) + P(=)/2 over all pairs, by brute force."""
  positive = np.asarray(positive, np.float64)[:, None]
  negative = np.asarray(negative, np.float64)[None, :]
  return float(np.mean((positive > negative) + 0.5 * (positive == negative)))


def _one_error_line(err):
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: '), err
  return lines[0]


# -------------------------------------------------------------- fixtures


@pytest.fixture(scope='module')
def planted(tmp_path_factory):
  """Every format-3 field, held-out probabilities, 30 flipped labels; the
  estimate of it: (Planted, summary, logged lines, W/estimates)."""
  workdir = str(tmp_path_factory.mktemp('planted') / 'w')
  truth = write_planted_records(workdir, num_flipped=30, heldout_probs=True)
  summary, lines = _estimate(workdir)
  return truth, summary, lines, estimates.estimates_dir(workdir)


@pytest.fixture(scope='module')
def old_records(tmp_path_factory):
  """Records without the format-3 fields, estimated with the defaults:
  (Planted, summary, logged lines, snapshot of W/estimates)."""
  workdir = str(tmp_path_factory.mktemp('old') / 'w')
  truth = write_planted_records(workdir, num_trials=8, format_3_fields=False)
  summary, lines = _estimate(workdir)
  return truth, summary, lines, snapshot(estimates.estimates_dir(workdir))


def _records_loaded(workdir):
  """The records as the estimator loads them, and their memorization."""
  loaded = loading.load(workdir, fields=('train_logodds', 'train_csl'))
  mem = scores.memorization(loaded.masks, loaded.train_correct,
                            loaded.train_prob)
  return loaded, mem.memorization


# ----------------------------------------------------------------- tests


def test_membership_finds_the_planted_memorized_examples(planted):
  truth, summary, lines, out = planted
  k, n = truth.masks.shape
  result = summary['membership']
  assert result['source'] == 'train_logodds'
  assert result['targets'] == k  # membership_targets 64 > k: every trial
  assert sorted(result['attacks']) == sorted(ATTACK_NAMES)
  for name, attack in result['attacks'].items():
    # A third of the members are memorized: far above chance.
    assert attack['auc'] > 0.65, (name, attack)
    assert attack['tpr_at_1%_fpr'] > 0.05, (name, attack)
    assert attack['tpr_at_0.1%_fpr'] <= attack['tpr_at_1%_fpr']
    # Every (trial, example) but those of an example in every trial.
    assert k * (n - 2) <= attack['scored'] <= k * n
  with open(os.path.join(out, 'membership.json')) as f:
    assert json.load(f) == result

  # membership.csv: one row per training example, in index order.
  header, rows = _read_csv(os.path.join(out, 'membership.csv'))
  assert tuple(header) == per_example.MEMBERSHIP_HEADER
  assert len(rows) == n
  assert [int(r['index']) for r in rows] == list(range(n))
  assert [r['id'] for r in rows] == list(truth.train_ids)
  assert [int(r['label']) for r in rows] == list(truth.train_labels)
  k_in, k_out = _floats(rows, 'k_in'), _floats(rows, 'k_out')
  np.testing.assert_array_equal(k_in, truth.masks.sum(0))
  np.testing.assert_array_equal(k_in + k_out, k)
  auc = _floats(rows, 'lira_auc')
  defined = (k_in > 0) & (k_out > 0)
  np.testing.assert_array_equal(np.isfinite(auc), defined)

  # The per-example AUC by hand, from the records' log-odds (float16).
  loaded, memorization = _records_loaded(truth.workdir)
  logodds = loaded.extra['train_logodds'].astype(np.float64)
  for i in np.flatnonzero(defined)[:: n // 6]:
    member = truth.masks[:, i]
    assert float(rows[i]['lira_auc']) == pytest.approx(
        _mann_whitney(logodds[member, i], logodds[~member, i]), abs=1e-6)
  np.testing.assert_allclose(_floats(rows, 'memorization'), memorization,
                             atol=1e-6)

  # Planted: memorized examples' in and out log-odds barely overlap.
  memorized = truth.memorized & defined
  assert auc[memorized].mean() > 0.97
  assert auc[memorized].min() > 0.8
  # Planted null: the Mann-Whitney AUC of k_in vs k_out values of one
  # continuous distribution has mean 1/2 and variance
  # (k_in + k_out + 1) / (12 k_in k_out).
  null = ~truth.memorized & defined
  sd_of_mean = math.sqrt(np.sum((k_in[null] + k_out[null] + 1) /
                                (12 * k_in[null] * k_out[null]))) / null.sum()
  assert abs(auc[null].mean() - 0.5) < 4 * sd_of_mean, (auc[null].mean(),
                                                        sd_of_mean)
  assert result['mean_example_auc_memorized'] == pytest.approx(
      auc[memorized].mean(), abs=1e-6)
  assert abs(result['mean_example_auc_others'] - 0.5) < 4 * sd_of_mean

  # Exposure to membership inference follows memorization.
  assert result['memorization_spearman'] > 0.6
  assert result['memorization_spearman'] == pytest.approx(
      ranks.spearman(auc, memorization), abs=1e-6)

  with open(os.path.join(out, per_example.MEMBERSHIP_PNG), 'rb') as f:
    assert f.read(8) == PNG_MAGIC
  online = result['attacks']['online']
  assert (f'Membership inference (LiRA, {k} target trials): AUC '
          f'{online["auc"]:.3f}') in '\n'.join(lines)


def test_membership_planted_null(tmp_path):
  # No example memorized, in and out log-odds from one distribution: the
  # attack must do no better than chance. More trials and examples than
  # elsewhere, so that the bands below are tight.
  num_trials, num_train = 32, 600
  truth = write_planted_records(str(tmp_path / 'w'), num_trials=num_trials,
                                num_train=num_train, memorized_share=0)
  assert not truth.memorized.any()
  summary, _ = _estimate(truth.workdir, ['PerExampleScores.proxies = False'])
  assert 'proxies' not in summary
  online = summary['membership']['attacks']['online']
  members = int(truth.masks.sum())
  others = num_trials * num_train - members
  assert online['scored'] == members + others  # no example in every trial
  # Mann-Whitney sd of the pooled AUC were the P x N scored pairs
  # independent. They are not (an example's k scores share its fitted
  # Gaussians): over 200 seeds of this helper the sd was 1.34x this, so the
  # band is 4 sd with a design factor of 2 (+-0.036 here).
  iid_sd = math.sqrt((members + others + 1) / (12 * members * others))
  for name, attack in summary['membership']['attacks'].items():
    assert abs(attack['auc'] - 0.5) < 4 * 2 * iid_sd, (name, attack['auc'],
                                                       iid_sd)
  # TPR at 1% FPR: 1% by construction; over 200 seeds its sd was 0.21%
  # (the binomial sqrt(0.01 0.99 (1/P + 1/N)) = 0.16%, times 1.37), its
  # range 0.49% ... 1.63%: [0.3%, 2.5%] is 3.3 of those sd below 1%.
  assert 0.003 <= online['tpr_at_1%_fpr'] <= 0.025, online
  # Nothing is memorized (the null examples are always right): no example
  # counts as memorized, and a constant memorization ranks nothing.
  assert summary['memorization_counts']['0.25'] == 0
  assert summary['membership']['mean_example_auc_memorized'] is None
  assert summary['membership']['memorization_spearman'] is None


def test_proxy_table_from_few_trials(planted):
  truth, summary, lines, out = planted
  k = truth.masks.shape[0]
  table = summary['proxies']
  assert table['dynamics_recorded'] is True
  rows = table['rows']
  csl = {r['trials']: r for r in rows if r['proxy'] == 'csl'}
  assert sorted(csl) == [1, 2, 4, 8, 16]  # PerExampleScores.proxy_trials
  assert all(r['all_trials'] == k for r in rows)
  spearman = [csl[trials]['spearman'] for trials in (1, 2, 4, 8)]
  assert spearman[0] > 0.3
  # Averaging more trials' csl removes its per-trial noise. From 1 to 2
  # trials the gain is small (a trial holds 70% of the examples, so at 2
  # most examples still have 1 or 2 values): that step may fall by one
  # standard error of a Spearman, (1 - rho^2) / sqrt(m); the later ones
  # must not fall.
  slack = (1 - spearman[0]**2) / math.sqrt(csl[1]['examples'])
  assert spearman[1] >= spearman[0] - slack, spearman
  assert spearman[1] <= spearman[2] <= spearman[3], spearman
  assert spearman[3] > spearman[0] + 0.1, spearman
  # 1 trial: only the examples of trial 0's subset (those with a
  # memorization estimate), its csl values.
  loaded, memorization = _records_loaded(truth.workdir)
  assert csl[1]['examples'] == int(
      (truth.masks[0] & np.isfinite(memorization)).sum())
  first = np.where(truth.masks[0], loaded.extra['train_csl'][0], np.nan)
  assert csl[1]['spearman'] == pytest.approx(
      ranks.spearman(first, memorization), abs=1e-9)
  for name in proxies_lib.LEARNING_DYNAMICS:  # each oriented to memorization
    assert all(r['spearman'] > 0.3 for r in rows if r['proxy'] == name), name

  header, written = _read_csv(os.path.join(out, 'proxies.csv'))
  assert tuple(header) == per_example.PROXIES_HEADER
  assert [(r['proxy'], int(r['trials'])) for r in written] == [
      (r['proxy'], r['trials']) for r in rows]
  for r, w in zip(rows, written):
    if r['spearman'] is not None:
      assert float(w['spearman']) == pytest.approx(r['spearman'], abs=1e-5)
  with open(os.path.join(out, 'proxies.json')) as f:
    assert json.load(f) == {'rows': rows, 'line': table['line'],
                            'dynamics_recorded': True}
  with open(os.path.join(out, per_example.PROXIES_PNG), 'rb') as f:
    assert f.read(8) == PNG_MAGIC

  # The line names the best proxy at the largest shared count, with its
  # Spearman.
  line = table['line']
  assert line in lines
  assert line.startswith(f'From {k} trials, ')
  at_k = [r for r in rows if r['trials'] == k and
          r['proxy'] != proxies_lib.REFERENCE]
  best = max(at_k, key=lambda r: r['spearman'])
  assert line.startswith(
      f'From {k} trials, {proxies_lib.TITLES[best["proxy"]]} ranks examples '
      f'most like the memorization from all {k} trials '
      f'(Spearman {best["spearman"]:.2f})')
  assert proxies_lib.TITLES['csl'] in line


def test_proxy_table_loads_only_the_first_trials(planted, tmp_path):
  # Asked for at most 8 trials, the proxies of trials 0..7 alone are loaded:
  # the same rows as the full table's for those counts.
  truth, summary, _, _ = planted
  fewer, lines = _estimate(
      truth.workdir, ['PerExampleScores.proxy_trials = (1, 2, 4, 8)',
                      'PerExampleScores.membership = False',
                      'PerExampleScores.heldout_probs = False'],
      output_dir=str(tmp_path / 'out'))
  assert 'membership' not in fewer and 'label_issues' not in fewer
  rows = fewer['proxies']['rows']
  assert {r['trials'] for r in rows} == {1, 2, 4, 8}
  full = {(r['proxy'], r['trials']): r for r in summary['proxies']['rows']}
  for r in rows:
    assert r == full[r['proxy'], r['trials']], r
  assert fewer['proxies']['line'].startswith('From 8 trials, ')
  assert fewer['proxies']['line'] in lines


def test_heldout_class_probabilities_find_the_flipped_labels(planted):
  truth, summary, lines, out = planted
  k, n = truth.masks.shape
  written = read_npz(os.path.join(out, per_example.PRED_PROBS_NPZ))
  pred_probs = written['pred_probs']
  assert pred_probs.shape == (n, NUM_CLASSES)
  np.testing.assert_array_equal(written['labels'], truth.train_labels)
  np.testing.assert_array_equal(written['ids'], truth.train_ids)
  held_out = (~truth.masks).sum(0)
  np.testing.assert_array_equal(written['heldout_trials'], held_out)
  rows = held_out > 0
  assert np.isfinite(pred_probs[rows]).all()
  assert np.isnan(pred_probs[~rows]).all()
  np.testing.assert_allclose(pred_probs[rows].sum(1), 1.0, atol=1e-5)

  # By hand, from the records: example i's row in trial t's heldout_probs
  # is its place among t's held-out examples.
  heldout = [records.read_record(records.record_path(truth.workdir, t))[0][
      records.HELDOUT_PROBS].astype(np.float64) for t in range(k)]
  chosen = [np.flatnonzero(truth.flipped & rows)[0],
            np.flatnonzero(truth.memorized & ~truth.flipped & rows)[0],
            np.flatnonzero(~truth.memorized & rows)[0]]
  for i in chosen:
    vectors = [heldout[t][np.count_nonzero(~truth.masks[t, :i])]
               for t in range(k) if not truth.masks[t, i]]
    mean = np.mean(vectors, axis=0)
    np.testing.assert_allclose(pred_probs[i], mean / mean.sum(), atol=1e-6)
    # The renormalisation only undoes float16 rounding.
    np.testing.assert_allclose(pred_probs[i], mean,
                               atol=NUM_CLASSES * 5e-4)
  flipped = chosen[0]
  assert pred_probs[flipped].argmax() == truth.original_labels[flipped]

  issues = summary['label_issues']
  with open(os.path.join(out, 'label_issues.json')) as f:
    assert json.load(f) == issues
  assert issues['file'] == per_example.PRED_PROBS_NPZ
  assert issues['examples'] == int(rows.sum())
  assert issues['flipped'] == int(truth.flipped.sum()) == 30
  detectors = issues['detectors']
  assert detectors['self_confidence']['auc'] > 0.9
  assert detectors['normalized_margin']['auc'] > 0.9
  assert detectors['self_confidence']['average_precision'] > 0.8
  # Self-confidence p[i, y_i]: the flipped ones should look least confident.
  confidence = pred_probs[np.arange(n), truth.train_labels]
  assert detectors['self_confidence']['auc'] == pytest.approx(
      _mann_whitney(-confidence[rows & truth.flipped],
                    -confidence[rows & ~truth.flipped]), abs=1e-9)
  # Memorization cannot tell a flip from the other memorized examples.
  assert 0.5 < detectors['memorization']['auc'] < 0.95
  assert (f'held-out self-confidence AUC '
          f'{detectors["self_confidence"]["auc"]:.3f}') in '\n'.join(lines)


def test_old_records_are_skipped_with_a_line(old_records):
  truth, summary, lines, estimates_files = old_records
  first_record = records.record_path(truth.workdir, 0)
  assert 'membership' not in summary
  assert 'label_issues' not in summary  # opt-in when training: no line
  assert 'membership.csv' not in estimates_files
  assert per_example.PRED_PROBS_NPZ not in estimates_files
  skipped = [line for line in lines if 'skipped' in line]
  assert skipped == [
      f'Membership inference: skipped, 8 of the records lack train_logodds '
      f'(e.g. {first_record}: written before record format 3, or with it '
      'turned off).',
      f'Learning-dynamics proxies: skipped, 8 of the records lack train_csl '
      f'(e.g. {first_record}: written before record format 3, or with it '
      'turned off).']
  # The proxy table still holds the held-out scores, from the predictions.
  assert summary['proxies']['dynamics_recorded'] is False
  assert {r['proxy'] for r in summary['proxies']['rows']} == {
      'heldout_accuracy', 'heldout_prob', proxies_lib.REFERENCE}


@pytest.mark.parametrize('binding, field', [
    ('PerExampleScores.membership = True', 'train_logodds'),
    ('PerExampleScores.proxies = True', 'train_csl'),
    ('PerExampleScores.heldout_probs = True', 'heldout_probs'),
])
def test_old_records_asked_for_explicitly(old_records, binding, field):
  truth = old_records[0]
  before = snapshot(estimates.estimates_dir(truth.workdir))
  assert 'summary.json' in before
  status, _, err = run_in_process(_estimate_main(truth.workdir, [binding]))
  assert status == 2
  line = _one_error_line(err)
  assert f'{records.record_path(truth.workdir, 0)} holds no {field}' in line
  assert binding.split(' = ')[0] + ' = False' in line  # the fix
  assert 'Traceback' not in err
  # The earlier estimates are left as they were.
  assert snapshot(estimates.estimates_dir(truth.workdir)) == before


def test_records_of_format_2_asked_for_log_odds(old_records, tmp_path):
  workdir = str(tmp_path / 'w')
  shutil.copytree(old_records[0].workdir, workdir,
                  ignore=shutil.ignore_patterns('estimates'))
  for path in records.list_records(workdir).values():
    rewrite_record(path, metadata={'format_version': 2})
  status, _, err = run_in_process(
      _estimate_main(workdir, ['PerExampleScores.membership = True']))
  assert status == 2
  line = _one_error_line(err)
  assert (f'{records.record_path(workdir, 0)} holds no train_logodds: it is '
          'a record of format 2') in line
  assert not os.path.exists(estimates.estimates_dir(workdir))


def test_old_records_membership_from_probabilities(old_records, tmp_path):
  truth = old_records[0]
  summary, lines = _estimate(truth.workdir,
                             ["PerExampleScores.membership = 'prob'"],
                             output_dir=str(tmp_path / 'out'))
  result = summary['membership']
  assert result['source'] == 'train_prob'
  online = result['attacks']['online']
  # float16 p keeps the planted gap (log-odds 5 in, -3.5 out, below 7.6).
  assert math.isfinite(online['auc']) and online['auc'] > 0.65
  assert result['mean_example_auc_memorized'] > 0.95
  assert not any('Membership inference: skipped' in line for line in lines)
  header, rows = _read_csv(str(tmp_path / 'out' / 'membership.csv'))
  assert len(rows) == NUM_TRAIN


@pytest.mark.parametrize('binding, named', [
    ("PerExampleScores.membership = 'maybe'", 'PerExampleScores.membership'),
    ("PerExampleScores.proxies = 'yes'", 'PerExampleScores.proxies'),
    ('PerExampleScores.membership_targets = 0',
     'PerExampleScores.membership_targets'),
    ('PerExampleScores.proxy_trials = (4, 0)',
     'PerExampleScores.proxy_trials[1]'),
    # 0 == False and 1 == True: refused, not taken for a boolean.
    ('PerExampleScores.membership = 0', 'PerExampleScores.membership'),
])
def test_bad_binding_is_one_error_line(old_records, binding, named):
  truth = old_records[0]
  before = snapshot(estimates.estimates_dir(truth.workdir))
  assert 'summary.json' in before
  status, _, err = run_in_process(_estimate_main(truth.workdir, [binding]))
  assert status == 2
  line = _one_error_line(err)
  assert named in line
  value = binding.split(' = ')[1].strip("'")
  assert value.split(',')[-1].strip(' )') in line
  assert snapshot(estimates.estimates_dir(truth.workdir)) == before

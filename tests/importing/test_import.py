"""Trials trained elsewhere (importing/): logits summarized as a record keeps
them, the arrays and LiRA layouts imported and estimated, TrialWriter used
as a training loop would, and bad input refused with nothing written.

Every workdir here is built with numpy (no training): masks and float16
logits with planted ground truth, so the estimates are checked against an
independent numpy computation of the paper's difference of means, and the
planted memorized examples (right only when trained on) and influence pairs
(a test example right only when its training partner was in the subset)
against their known values. The estimates run in process (about a second
each); only the binary's own test starts subprocesses (marked slow).
"""

import concurrent.futures
import csv
import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

from tf_memorization import TrialWriter
from tf_memorization import import_trials as binary_lib
from tf_memorization.core import errors
from tf_memorization.estimation import pipeline
from tf_memorization.importing import logits as logits_lib
from tf_memorization.importing import npy
from tf_memorization.importing import run
from tf_memorization.importing import sources
from tf_memorization.importing import writer as writer_lib
from tf_memorization.workdir import estimates
from tf_memorization.workdir import imported
from tf_memorization.workdir import loading

from conftest import REPO, error_line, snapshot

# The estimate's cheap settings: no HTML report, no planted-null product,
# no planner (none of them is what these tests check).
CHEAP = ['Estimator.report = False', 'Estimator.null_permutations = 0',
         'Estimator.planner = False']

K, N, N_TEST, C = 32, 400, 150, 6
MEMORIZED = (3, 50, 123, 299)          # right iff in the trial's subset
PAIRS = ((10, 7), (200, 42), (377, 149))  # (train i, test j): j right iff i in


# ----------------------------------------------------------------- helpers


def balanced_masks(rng, k, n):
  """bool [k, n], each example in exactly k/2 trials (every estimate is
  defined)."""
  column = np.arange(k) < k // 2
  return np.stack([rng.permutation(column) for _ in range(n)], axis=1)


def set_correct(logits, label, correct):
  """Makes argmax(logits[t]) == label exactly where correct[t] (logits
  [k, C], changed in place; float16 values stay float16-exact)."""
  logits[correct, label] = logits[correct].max(axis=1) + 1
  logits[~correct, label] = logits[~correct].min(axis=1) - 1


def planted_arrays(seed=0, k=K, n=N, n_test=N_TEST, num_classes=C):
  """Masks, float16 logits and labels with MEMORIZED and PAIRS planted
  (the training example of each pair is memorized too: a raw pair needs
  memorization >= 0.25); everything else random."""
  rng = np.random.default_rng(seed)
  masks = balanced_masks(rng, k, n)
  train_labels = rng.integers(0, num_classes, n)
  test_labels = rng.integers(0, num_classes, n_test)
  train = (2 * rng.standard_normal((k, n, num_classes))).astype(np.float16)
  test = (2 * rng.standard_normal((k, n_test, num_classes))).astype(
      np.float16)
  # (Smaller cases plant those that fit.)
  pairs = [(i, j) for i, j in PAIRS if i < n and j < n_test]
  for i in [i for i in MEMORIZED if i < n] + [i for i, _ in pairs]:
    set_correct(train[:, i], train_labels[i], masks[:, i])
  for i, j in pairs:
    test_labels[j] = train_labels[i]
    set_correct(test[:, j], test_labels[j], masks[:, i])
  return dict(masks=masks, train_logits=train, test_logits=test,
              train_labels=train_labels, test_labels=test_labels)


def save_arrays(directory, arrays):
  """Each array as directory/<name>.npy; {name: path}."""
  os.makedirs(directory, exist_ok=True)
  paths = {}
  for name, array in arrays.items():
    paths[name] = os.path.join(directory, f'{name}.npy')
    np.save(paths[name], array)
  return paths


def difference_of_means(masks, correct):
  """The paper's estimate, by hand: mean correctness in minus out."""
  masks = np.asarray(masks, bool)
  correct = np.asarray(correct, bool)
  mean_in = (correct & masks).sum(0) / masks.sum(0)
  mean_out = (correct & ~masks).sum(0) / (~masks).sum(0)
  return mean_in - mean_out


def read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def estimated_memorization(workdir, n):
  rows = read_csv(os.path.join(estimates.estimates_dir(workdir),
                               estimates.MEMORIZATION_CSV))
  assert [int(row['index']) for row in rows] == list(range(n))
  return np.array([float(row['memorization']) for row in rows])


def raw_pairs(workdir):
  """{(train_index, test_index): influence} of the raw pairs."""
  rows = read_csv(os.path.join(estimates.estimates_dir(workdir),
                               estimates.PAIRS_CSV))
  return {(int(r['train_index']), int(r['test_index'])): float(r['influence'])
          for r in rows if r['raw'] == '1'}


def estimate(workdir, bindings=()):
  lines = []
  summary = pipeline.run(workdir, gin_bindings=CHEAP + list(bindings),
                         log=lines.append)
  return summary, lines


def check_planted(workdir, masks, correct, pairs=PAIRS):
  """Memorization against the independent computation for every example,
  the planted ones at 1, and the planted pairs raw at influence 1."""
  want = difference_of_means(masks, correct)
  got = estimated_memorization(workdir, masks.shape[1])
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  memorized = list(MEMORIZED) + [i for i, _ in PAIRS]
  np.testing.assert_array_equal(got[memorized], 1.0)
  found = raw_pairs(workdir)
  for pair in pairs:
    assert pair in found, (pair, sorted(found)[:20])
    assert found[pair] == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------ 1. logits.summarize


def test_summarize_by_hand():
  z = np.array([[2.0, 1.0, 0.0],    # label 0: right, margin 1
                [0.0, 3.0, 1.0],    # label 2: wrong (pred 1), margin -2
                [1.0, 1.0, 0.0]],   # label 1: tie, the first (0) predicted
               np.float32)
  labels = np.array([0, 2, 1])
  pred, prob, margin, logodds = logits_lib.summarize(z, labels)
  e = np.e
  assert pred.dtype == np.int32
  for column in (prob, margin, logodds):
    assert column.dtype.kind == 'f' and column.dtype.itemsize >= 4
  np.testing.assert_array_equal(pred, [0, 1, 0])
  np.testing.assert_allclose(
      prob, [e**2 / (e**2 + e + 1), e / (1 + e**3 + e), e / (2 * e + 1)],
      rtol=1e-6)
  np.testing.assert_array_equal(margin, [1.0, -2.0, 0.0])
  np.testing.assert_allclose(
      logodds, [2 - np.log(e + 1), 1 - np.log(1 + e**3), 1 - np.log(e + 1)],
      rtol=1e-6)
  # log-odds = log(prob / (1 - prob)) where prob is not near 1.
  np.testing.assert_allclose(logodds, np.log(prob / (1 - prob)), rtol=1e-5)


def reference_summary(logits, labels):
  """The summary by another route: a softmax over all classes, and the
  log-odds by np.logaddexp over the other classes (float64)."""
  z = np.asarray(logits, np.float64)
  rows = np.arange(len(z))
  shifted = z - z.max(axis=1, keepdims=True)
  softmax = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
  others = np.where(np.arange(z.shape[1]) == labels[:, None], -np.inf, z)
  true = z[rows, labels]
  return (np.argmax(z, axis=1), softmax[rows, labels],
          true - others.max(axis=1),
          true - np.logaddexp.reduce(others, axis=1))


@pytest.mark.parametrize('dtype', [np.float16, np.float32, np.float64])
def test_summarize_matches_a_numpy_reference(dtype):
  rng = np.random.default_rng(1)
  n, num_classes = 5000, 10     # more than one block of 4096
  z = (3 * rng.standard_normal((n, num_classes))).astype(dtype)
  labels = rng.integers(0, num_classes, n)
  got = logits_lib.summarize(z, labels)
  want = reference_summary(z, labels)
  np.testing.assert_array_equal(got[0], want[0])
  for column, reference in zip(got[1:], want[1:]):
    assert column.dtype.kind == 'f' and column.dtype.itemsize >= 4
    np.testing.assert_allclose(column, reference, rtol=2e-6, atol=1e-6)
  # Blocks are an implementation detail: block=7 gives the same values.
  for column, small in zip(got, logits_lib.summarize(z, labels, block=7)):
    np.testing.assert_array_equal(column, small)


def test_summarize_a_huge_gap():
  """Prob 1.0 (or 0.0) in float32, yet the log-odds stay finite and exact."""
  z = np.zeros((4, 5), np.float16)
  z[0, 1] = 200     # label 1 far above: prob 1
  z[1, 2] = -200    # label 2 far below the others (at 0): prob ~0
  z[2, 0] = 60000   # near float16's max
  z[3] = [0, 0, 0, 0, 30]  # label 3, wrong by 30
  labels = np.array([1, 2, 0, 3])
  pred, prob, margin, logodds = logits_lib.summarize(z, labels)
  np.testing.assert_array_equal(pred, [1, 0, 0, 4])
  assert prob[0] == 1.0 and prob[2] == 1.0
  assert prob[1] < 1e-30
  assert np.all(np.isfinite(logodds)) and np.all(np.isfinite(margin))
  np.testing.assert_allclose(logodds[:3], [200 - np.log(4), -200 - np.log(4),
                                           60000 - np.log(4)], rtol=1e-6)
  np.testing.assert_allclose(margin, [200, -200, 60000, -30])
  # log-odds of a wrong prediction: -30 - log(3 + e^30) ~ -30 - 30.
  assert logodds[3] == pytest.approx(-np.logaddexp(np.log(3), 30.0),
                                     rel=1e-6)


def test_summarize_a_gap_beyond_exp_range_warns_nothing():
  z = np.zeros((1, 3), np.float16)
  z[0, 1] = -1000   # the true class 1000 below the others (float16-exact)
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    pred, prob, margin, logodds = logits_lib.summarize(z, np.array([1]))
  assert pred[0] == 0 and prob[0] == 0.0 and margin[0] == -1000
  assert logodds[0] == pytest.approx(-1000 - np.log(2))


@pytest.mark.parametrize('num_classes', [2, 3, 10])
def test_equivalent_logits_round_trip(num_classes):
  """summarize(equivalent_logits(summary)) is the summary: the prediction
  exactly, the rest to the float16 rounding a record applies."""
  rng = np.random.default_rng(num_classes)
  n = 3000
  z = (3 * rng.standard_normal((n, num_classes))).astype(np.float16)
  z[:20] = 0            # exact ties of every class
  z[20:40, 0] = 40      # confident (prob 1 in float16)
  labels = rng.integers(0, num_classes, n)
  labels[20:30] = 0
  pred, prob, margin, logodds = logits_lib.summarize(z, labels)
  # What a record keeps: float16.
  kept = [v.astype(np.float16) for v in (prob, margin, logodds)]
  back = logits_lib.equivalent_logits(pred, *kept, labels, num_classes)
  assert back.shape == (n, num_classes) and back.dtype == np.float32
  assert np.all(np.isfinite(back))
  pred2, prob2, margin2, logodds2 = logits_lib.summarize(back, labels)
  np.testing.assert_array_equal(pred2, pred)
  for got, want in ((prob2, kept[0]), (margin2, kept[1]),
                    (logodds2, kept[2])):
    # float16: 11 significant bits; a small absolute slack near 0.
    np.testing.assert_allclose(got, want.astype(np.float64), rtol=2**-10,
                               atol=1e-3)
  # As a record rounds them: the same float16 prob and margin; the
  # log-odds within one float16 step (near 0 a float16 step is finer than
  # float32 logits of magnitude ~1 can place them).
  np.testing.assert_array_equal(prob2.astype(np.float16), kept[0])
  np.testing.assert_array_equal(margin2.astype(np.float16), kept[1])
  steps = np.abs(logodds2.astype(np.float16).astype(np.float64) -
                 kept[2].astype(np.float64)) / np.spacing(
                     np.abs(kept[2])).astype(np.float64)
  assert steps.max() <= 1, steps.max()


# ---------------------------------------------------------------- npy rows


def test_npy_rows_reads_slices_and_blocks(tmp_path):
  array = np.arange(4 * 5 * 3, dtype=np.float16).reshape(4, 5, 3)
  path = str(tmp_path / 'a.npy')
  np.save(path, array)
  rows = npy.NpyRows(path, '--train_logits')
  assert rows.shape == (4, 5, 3) and rows.dtype == np.float16
  assert len(rows) == 4
  np.testing.assert_array_equal(rows[1:3], array[1:3])
  np.testing.assert_array_equal(rows[:], array)
  np.testing.assert_array_equal(rows.block(2, 1, 4), array[2, 1:4])
  np.testing.assert_array_equal(rows.block(3, 0, 5), array[3])
  with pytest.raises(TypeError):
    rows[::2]  # pylint: disable=pointless-statement
  # A Fortran-ordered or truncated file is refused with the fix.
  np.save(str(tmp_path / 'f.npy'), np.asfortranarray(array[0]))
  with pytest.raises(errors.UserError, match='Fortran order'):
    npy.NpyRows(str(tmp_path / 'f.npy'), '--masks')
  with open(path, 'rb') as f:
    data = f.read()
  with open(tmp_path / 't.npy', 'wb') as f:
    f.write(data[:-10])
  with pytest.raises(errors.UserError, match='truncated'):
    npy.NpyRows(str(tmp_path / 't.npy'), '--masks')


# ------------------------------------------------------- 2. arrays layout


def test_arrays_import_estimates_the_planted_truth(tmp_path):
  arrays = planted_arrays(seed=0)
  paths = save_arrays(str(tmp_path / 'in'), arrays)
  workdir = str(tmp_path / 'W')
  lines = []
  source = sources.ArraysSource(
      paths['masks'], paths['train_logits'], paths['test_logits'],
      paths['train_labels'], paths['test_labels'], name='planted')
  result = run.import_trials(workdir, source, log=lines.append)
  assert result == {'trials': K, 'workdir': workdir, 'format': 'arrays',
                    'name': 'planted'}
  assert any(line.startswith(f'Imported {K} trials') for line in lines)
  # Nothing beside the workdir (no staging folder left).
  assert sorted(os.listdir(tmp_path)) == ['W', 'in']

  loaded = loading.load(workdir)
  np.testing.assert_array_equal(loaded.masks, arrays['masks'])
  np.testing.assert_array_equal(loaded.trial_indices, np.arange(K))
  np.testing.assert_array_equal(loaded.train_labels, arrays['train_labels'])
  np.testing.assert_array_equal(loaded.test_labels, arrays['test_labels'])
  train_correct = (np.argmax(arrays['train_logits'], axis=-1) ==
                   arrays['train_labels'])
  test_correct = (np.argmax(arrays['test_logits'], axis=-1) ==
                  arrays['test_labels'])
  np.testing.assert_array_equal(loaded.train_correct, train_correct)
  np.testing.assert_array_equal(loaded.test_correct, test_correct)

  _, lines = estimate(workdir)
  check_planted(workdir, arrays['masks'], train_correct)
  assert any(line.startswith('Learning-dynamics proxies: skipped') for line
             in lines), lines


# --------------------------------------------------------- 3. LiRA layout


def lira_root(directory, arrays, augmentations=2, extra_labels=0):
  """arrays (planted_arrays) written in LiRA's layout: y_train.npy and one
  experiment-<id>_<k> folder per trial (keep.npy, logits/<epoch>.npy of
  [n, 1, augmentations, C] float32), with two earlier epochs of other
  logits. The planted examples are right or wrong only by the mean of the
  augmentations (each augmentation alone says the opposite in one case);
  the random ones get independent logits per augmentation, multiples of
  1/64 (so their float32 mean is exact, whatever order it is summed in).

  Returns:
    the logits written as the last epoch, [k, n, augmentations, C].
  """
  rng = np.random.default_rng(7)
  masks, labels = arrays['masks'], arrays['train_labels']
  k, n = masks.shape
  logits = (np.round(128 * rng.standard_normal((k, n, augmentations, C)))
            / 64).astype(np.float32)
  for i in [i for i in MEMORIZED + tuple(i for i, _ in PAIRS) if i < n]:
    y, w = labels[i], (labels[i] + 1) % C
    logits[:, i] = 0
    right = masks[:, i]
    # Right: aug 0 says y by 3, aug 1 says w by 1 (mean: y by 1).
    logits[right, i, 0, y], logits[right, i, 1, w] = 3, 1
    # Wrong: aug 0 says y by 1, aug 1 says w by 3 (mean: w by 1).
    logits[~right, i, 0, y], logits[~right, i, 1, w] = 1, 3
  os.makedirs(directory)
  y_train = np.concatenate([labels, rng.integers(0, C, extra_labels)])
  np.save(os.path.join(directory, 'y_train.npy'), y_train)
  # Every model right on every example in the earlier epochs.
  early = np.zeros((n, 1, augmentations, C), np.float32)
  early[np.arange(n), :, :, labels] = 5
  for t in rng.permutation(k):  # created in any order; read by id
    folder = os.path.join(directory, f'experiment-{t}_{k}')
    os.makedirs(os.path.join(folder, 'logits'))
    np.save(os.path.join(folder, 'keep.npy'), masks[t])
    for epoch, values in ((9, early), (2, early),
                          (10, logits[t][:, None])):
      np.save(os.path.join(folder, 'logits', '%010d.npy' % epoch), values)
  return logits


@pytest.mark.parametrize('with_test', [True, False])
def test_lira_import_reads_the_last_epoch_and_the_augmentation_mean(
    tmp_path, with_test):
  k = 24  # ids 0..23: their id order is not their names' order
  arrays = planted_arrays(seed=1, k=k)
  root = str(tmp_path / 'exp')
  logits = lira_root(root, arrays, extra_labels=25 if with_test else 0)
  test_logits = test_labels = None
  if with_test:
    paths = save_arrays(str(tmp_path / 'in'), {
        'test_logits': arrays['test_logits'],
        'test_labels': arrays['test_labels']})
    test_logits, test_labels = paths['test_logits'], paths['test_labels']
  lines = []
  source = sources.LiraSource(root, test_logits, test_labels, name=None,
                              log=lines.append)
  assert source.augmentations == 2 and source.num_classes == C
  assert source.name == 'exp'
  workdir = str(tmp_path / 'W')
  run.import_trials(workdir, source, log=lines.append)
  if with_test:
    assert any(f'first {N} of the {N + 25} training examples' in line
               for line in lines), lines
  else:
    assert any('LiRA keeps no test split' in line for line in lines), lines

  loaded = loading.load(workdir)
  np.testing.assert_array_equal(loaded.trial_indices, np.arange(k))
  np.testing.assert_array_equal(loaded.masks, arrays['masks'])
  assert loaded.test_correct.shape == (k, N_TEST if with_test else 0)
  # The prediction of the mean over the augmentations (exact in float32
  # and float64 alike: see lira_root).
  correct = (np.argmax(logits.astype(np.float64).mean(axis=2), axis=-1) ==
             arrays['train_labels'])
  np.testing.assert_array_equal(loaded.train_correct, correct)
  # Neither augmentation alone gives the planted memorization.
  for a in range(2):
    alone = np.argmax(logits[:, :, a], axis=-1) == arrays['train_labels']
    assert np.all(difference_of_means(arrays['masks'], alone)[
        list(MEMORIZED)] == 0)

  _, lines = estimate(workdir)
  check_planted(workdir, arrays['masks'], correct,
                pairs=PAIRS if with_test else ())
  skipped = [line for line in lines if 'Influence: skipped' in line]
  if with_test:
    assert not skipped
  else:
    assert len(skipped) == 1, lines
    assert raw_pairs(workdir) == {}


# -------------------------------------------------------- 4. TrialWriter


def test_trial_writer_as_a_training_loop(tmp_path):
  arrays = planted_arrays(seed=2)
  masks = arrays['masks']
  train, test = arrays['train_logits'], arrays['test_logits']
  labels = (arrays['train_labels'], arrays['test_labels'])
  workdir = str(tmp_path / 'W')
  half = K // 2

  with TrialWriter(workdir, *labels, num_classes=C, name='loop') as writer:
    for t in range(half):
      # A 0/1 int mask and float32 logits are taken as well.
      mask = masks[t].astype(np.int8) if t % 2 else masks[t]
      assert writer.add(t, mask, train[t].astype(np.float32), test[t],
                        seed=t) is True
    # A restarted loop adds a trial again: nothing written.
    assert writer.add(0, masks[0], train[0], test[0], seed=0) is False
    before = snapshot(workdir)
    with pytest.raises(errors.UserError, match='another mask or seed'):
      writer.add(1, ~masks[1], train[1], test[1], seed=1)
    with pytest.raises(errors.UserError, match='shape'):
      writer.add(half, masks[half], train[half][:, :-1], test[half])
    with pytest.raises(errors.UserError, match='NaN or infinite'):
      bad = train[half].copy()
      bad[5, 2] = np.inf
      writer.add(half, masks[half], bad, test[half])
    with pytest.raises(errors.UserError, match='other than 0 and 1'):
      writer.add(half, masks[half].astype(np.int8) * 2, train[half],
                 test[half])
    assert snapshot(workdir) == before
  assert writer.written == half

  # Another process resumes with the same name and labels.
  resumed = TrialWriter(workdir, *labels, num_classes=C, name='loop')
  assert resumed.add(half - 1, masks[half - 1], train[half - 1],
                     test[half - 1], seed=half - 1) is False
  for t in range(half, K):
    assert resumed.add(t, masks[t], train[t], test[t], seed=t) is True
  assert resumed.written == K - half
  # Another name (other models) or other labels (other data): refused.
  with pytest.raises((errors.RecordError, errors.UserError),
                     match='other models'):
    TrialWriter(workdir, *labels, num_classes=C, name='another')
  with pytest.raises((errors.RecordError, errors.UserError),
                     match='other labels'):
    TrialWriter(workdir, (labels[0] + 1) % C, labels[1], num_classes=C,
                name='loop')

  loaded = loading.load(workdir)
  np.testing.assert_array_equal(loaded.masks, masks)
  assert [m['seed'] for m in loaded.metadata] == list(range(K))

  summary, lines = estimate(workdir, ["Estimator.experiments = ('ablation',)"])
  correct = np.argmax(train, axis=-1) == arrays['train_labels']
  check_planted(workdir, masks, correct)
  for what in ('Learning-dynamics proxies', 'ablation'):
    found = [line for line in lines if line.startswith(f'{what}: skipped')]
    assert len(found) == 1, (what, lines)
    assert 'imported' in found[0] and 'loop' in found[0]
  assert 'skipped' in summary['experiments']['ablation']


def test_trial_writer_default_classes_and_bad_labels(tmp_path):
  labels = np.array([0, 1, 2, 1])
  writer = TrialWriter(str(tmp_path / 'W'), labels, np.array([3, 0]))
  assert writer.num_classes == 4 and writer.n == 4 and writer.n_test == 2
  with pytest.raises(errors.UserError, match='holds class 5'):
    writer_lib.check_labels('--train_labels', np.array([0, 5]), 4)
  with pytest.raises(errors.UserError, match='negative'):
    writer_lib.check_labels('--train_labels', np.array([0, -1]))
  with pytest.raises(errors.UserError, match='integer'):
    writer_lib.check_labels('--train_labels', np.array([0.5, 1.0]))
  np.testing.assert_array_equal(
      writer_lib.check_labels('y', np.array([0.0, 2.0])), [0, 2])
  np.testing.assert_array_equal(
      writer_lib.check_mask('m', np.array([0, 1, 1]), 3), [False, True, True])
  with pytest.raises(errors.UserError, match=r'shape \(4,\)'):
    writer_lib.check_mask('m', np.ones(3, bool), 4)
  with pytest.raises(errors.UserError, match='float logits'):
    writer_lib.check_logits('z', np.zeros((2, 3), np.int32), 2, 3)


# ----------------------------------------------------------- 5. bad input


class Payload:
  """Unpickling this creates a directory: proof that a pickle ran."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.mkdir, (self.path,))


def flags_of(**given):
  """The import binary's flags (build_source reads them), None unless
  given."""
  names = ('format', 'name', 'masks', 'train_logits', 'test_logits',
           'train_labels', 'test_labels', 'lira_dir', 'margins',
           'train_margins', 'completed')
  return types.SimpleNamespace(**{name: given.get(name) for name in names})


def bad_case(directory, name):
  """Writes the input of one bad case under `directory`; (flags, message
  the error must hold, sentinel path that must not appear or None)."""
  arrays = planted_arrays(seed=3, k=8, n=60, n_test=20)
  sentinel = None
  if name == 'mask_value_2':
    masks = arrays['masks'].astype(np.int8)
    masks[-1, 5] = 2
    arrays['masks'] = masks
    message = 'values other than 0 and 1'
  elif name == 'nan_last_trial':
    arrays['train_logits'][-1, 7, 0] = np.nan
    message = 'row 7 of --train_logits'
  elif name == 'inf_test_logits':
    arrays['test_logits'][3, 2, 1] = np.inf
    message = 'row 3 of --test_logits'
  elif name == 'wrong_n':
    arrays['train_logits'] = arrays['train_logits'][:, :-1]
    message = '--train_logits'
  elif name == 'label_out_of_range':
    arrays['train_labels'][4] = C
    message = f'holds class {C}'
  elif name == 'object_array':
    sentinel = os.path.join(directory, 'pickle_ran')
    arrays['masks'] = np.array([Payload(sentinel)] * 3, dtype=object)
    message = 'not numbers'
  elif name == 'lira_missing_keep':
    root = os.path.join(directory, 'exp')
    lira_root(root, planted_arrays(seed=3, k=4, n=60, n_test=20))
    os.remove(os.path.join(root, 'experiment-2_4', 'keep.npy'))
    return (flags_of(format='lira', lira_dir=root),
            'experiment-2_4/keep.npy is missing', None)
  else:
    raise ValueError(name)
  os.makedirs(directory, exist_ok=True)
  paths = {}
  for key, array in arrays.items():
    paths[key] = os.path.join(directory, f'{key}.npy')
    np.save(paths[key], array, allow_pickle=array.dtype.hasobject)
  return flags_of(format='arrays', **paths), message, sentinel


BAD_CASES = ('mask_value_2', 'nan_last_trial', 'inf_test_logits', 'wrong_n',
             'label_out_of_range', 'object_array', 'lira_missing_keep')


@pytest.mark.parametrize('existing', [False, True])
@pytest.mark.parametrize('name', BAD_CASES)
def test_bad_input_writes_nothing(tmp_path, name, existing):
  """A UserError naming the input; the workdir absent (or, given empty,
  still empty), nothing beside it (no staging folder), no pickle run."""
  flags, message, sentinel = bad_case(str(tmp_path / 'in'), name)
  parent = tmp_path / 'out'
  parent.mkdir()
  workdir = parent / 'W'
  if existing:
    workdir.mkdir()
  lines = []
  with pytest.raises(errors.UserError) as raised:
    run.import_trials(str(workdir), binary_lib.build_source(
        flags, lines.append), lines.append)
  assert message in str(raised.value)
  assert os.listdir(parent) == (['W'] if existing else [])
  if existing:
    assert os.listdir(workdir) == []
  if sentinel:
    assert not os.path.exists(sentinel)


def test_import_refuses_a_workdir_in_use(tmp_path):
  paths = save_arrays(str(tmp_path / 'in'), planted_arrays(seed=4, k=4, n=30,
                                                           n_test=10))
  workdir = tmp_path / 'W'
  workdir.mkdir()
  (workdir / 'notes.txt').write_text('mine')
  before = snapshot(str(workdir))
  source = sources.ArraysSource(
      paths['masks'], paths['train_logits'], paths['test_logits'],
      paths['train_labels'], paths['test_labels'])
  with pytest.raises(errors.UserError, match='is not empty'):
    run.import_trials(str(workdir), source, log=lambda _: None)
  assert snapshot(str(workdir)) == before
  with pytest.raises(errors.UserError, match='--test_logits and --test_labels go together'):
    sources.ArraysSource(paths['masks'], paths['train_logits'], None,
                         paths['train_labels'], paths['test_labels'])
  with pytest.raises(errors.UserError, match='--test_logits and --test_labels go together'):
    sources.ArraysSource(paths['masks'], paths['train_logits'],
                         paths['test_logits'], paths['train_labels'], None)


# The binary's own cases (flags, main, exit status): each a subprocess
# (each spends ~5-7 s importing TensorFlow), two at a time. The in-process
# cases above cover the other kinds of bad input.
BINARY_CASES = ('nan_last_trial', 'ok')
MAX_PROCESSES = 2


@pytest.fixture(scope='module')
def binary_runs(tmp_path_factory):
  """{case: (returncode, stdout, stderr, parent listing after, case info)}."""
  root = tmp_path_factory.mktemp('binary')
  prepared = {}
  for name in BINARY_CASES:
    directory = str(root / name)
    if name == 'ok':
      paths = save_arrays(os.path.join(directory, 'in'),
                          planted_arrays(seed=5, k=8, n=60, n_test=20))
      flags, sentinel = flags_of(format='arrays', **paths), None
    else:
      flags, _, sentinel = bad_case(os.path.join(directory, 'in'), name)
    parent = os.path.join(directory, 'out')
    os.makedirs(parent)
    args = [f'--workdir={os.path.join(parent, "W")}']
    args += [f'--{key}={value}' for key, value in vars(flags).items()
             if value is not None]
    prepared[name] = dict(
        command=[sys.executable, '-m', 'tf_memorization.import_trials',
                 *args], parent=parent, sentinel=sentinel)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')

  def run_case(case):
    proc = subprocess.run(case['command'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300,
                          check=False)
    return (proc.returncode, proc.stdout, proc.stderr,
            sorted(os.listdir(case['parent'])), case)

  with concurrent.futures.ThreadPoolExecutor(MAX_PROCESSES) as pool:
    futures = {name: pool.submit(run_case, case)
               for name, case in prepared.items()}
    return {name: future.result() for name, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize('name, message', [
    ('nan_last_trial', 'NaN or infinite'),
])
def test_the_binary_exits_2_with_one_line(binary_runs, name, message):
  status, out, err, listing, case = binary_runs[name]
  line = error_line(status, out, err)
  assert message in line, line
  assert 'error:' not in out
  # The binary filters TensorFlow's log lines: the error is all of stderr.
  assert err.strip().splitlines() == [line], err[-3000:]
  assert listing == []  # no W, no staging folder beside it
  if case['sentinel']:
    assert not os.path.exists(case['sentinel'])


@pytest.mark.slow
def test_the_binary_imports(binary_runs):
  status, out, err, listing, case = binary_runs['ok']
  assert status == 0, (out[-2000:], err[-3000:])
  assert listing == ['W']
  workdir = os.path.join(case['parent'], 'W')
  assert 'Imported 8 trials' in out
  loaded = loading.load(workdir)
  assert loaded.num_trials == 8
  assert imported.source(loaded) == {'source': 'arrays', 'name': 'arrays'}

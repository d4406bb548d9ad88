"""Trials written out in the LiRA and datamodels layouts and read back in
(importing/exports.py, sources.py), and workdirs of test margins alone.

1. LiRA round trip: arrays imported and estimated, exported as a LiRA
   experiment root, imported from it: every record field and every
   estimate the same; the layout as LiRA's score.py reads it.
2. datamodels round trip: the same through masks and margins (the soft
   scores excepted: margins alone give no softmax), and a second export
   byte-identical to the first (a fixed point).
3. datamodels without train margins: planted influence pairs against an
   independent computation from the margins' signs; memorization, the
   planner and the memorization figures of the summary skipped or n/a.
4. --completed: only the finished rows are read (a NaN in an unfinished
   row is never read, one in a finished row refused with nothing written).
5. Records imported from margins, altered and re-signed: refused.

Every workdir is built with numpy (no training); float16 logits hold exact
ties (some rounded to integers, and four planted by hand), so the tie rules
of each layout are exercised: a tie the model broke toward the label is
right (datamodels writes it as the smallest positive float16), one broken
toward another class is wrong.
"""

import json
import os
import shutil
import sys

import numpy as np
import pytest

from tf_memorization.core import errors
from tf_memorization.importing import exports
from tf_memorization.importing import npy
from tf_memorization.importing import run
from tf_memorization.importing import sources
from tf_memorization.workdir import estimates
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

from conftest import REPO, read_npz, rewrite_record
# The import tests' module-level helpers (same folder, on sys.path).
from test_import import (MEMORIZED, PAIRS, balanced_masks, estimate,
                         planted_arrays, read_csv, save_arrays)

sys.path.insert(0, os.path.join(REPO, 'tools'))
import compare_workdirs  # pylint: disable=g-import-not-at-top,wrong-import-position

K, N, N_TEST, C = 32, 400, 150, 6
# Ties planted by hand in every trial: (example, label, the other top
# class). The label first among the two tied classes: argmax picks it,
# right with margin 0; the other first: wrong with margin 0.
RIGHT_TIE, WRONG_TIE = (5, 1, 4), (6, 4, 1)
TEST_RIGHT_TIE, TEST_WRONG_TIE = (0, 2, 3), (1, 3, 0)
# The smallest positive float16: datamodels' margin of a right tie.
TINY = np.float16(2.0 ** -24)
LOGODDS = ('train_logodds', 'test_logodds')
RECORD_FIELDS = ('masks', 'train_correct', 'test_correct', 'train_pred',
                 'test_pred', 'train_prob', 'test_prob', 'train_margin',
                 'test_margin')


# ----------------------------------------------------------------- helpers


def plant_tie(logits, example, label, other):
  """Every trial's logits of `example` [k, n, C]: `label` and `other` at
  2, the rest at -3 (exact in float16)."""
  logits[:, example] = -3
  logits[:, example, [label, other]] = 2


def tied_arrays(seed=0):
  """test_import.planted_arrays with exact float16 ties: about a third of
  the (trial, example) rows of the unplanted examples rounded to integers,
  and the ties above planted in every trial."""
  arrays = planted_arrays(seed=seed)
  rng = np.random.default_rng(seed + 100)
  planted = list(MEMORIZED) + [i for i, _ in PAIRS]
  planted_test = [j for _, j in PAIRS]
  for name, keep in (('train_logits', planted), ('test_logits',
                                                 planted_test)):
    logits = arrays[name]
    rows = rng.random(logits.shape[:2]) < 0.35
    rows[:, keep] = False  # (rounding could tie their planted gap of 1)
    logits[rows] = np.round(logits[rows])
  for (example, label, other), logits, labels in (
      (RIGHT_TIE, arrays['train_logits'], arrays['train_labels']),
      (WRONG_TIE, arrays['train_logits'], arrays['train_labels']),
      (TEST_RIGHT_TIE, arrays['test_logits'], arrays['test_labels']),
      (TEST_WRONG_TIE, arrays['test_logits'], arrays['test_labels'])):
    assert example not in planted + planted_test
    labels[example] = label
    plant_tie(logits, example, label, other)
  return arrays


def load_all(workdir):
  return loading.load(workdir, predictions=True, fields=LOGODDS)


def summary_of(workdir):
  with open(os.path.join(estimates.estimates_dir(workdir),
                         estimates.SUMMARY_JSON)) as f:
    return json.load(f)


def compare_estimates(a, b):
  """compare_workdirs over the two estimates folders: {file: [what
  differs]} ('only in' lines under the file's name)."""
  lines = []
  compare_workdirs.compare(estimates.estimates_dir(a),
                           estimates.estimates_dir(b), log=lines.append)
  found = {}
  for line in lines[:-1]:  # the last: the total
    if line.startswith('only in '):
      found.setdefault(line.rsplit(': ', 1)[1], []).append(line)
    else:
      name, what = line.split(': ', 1)
      found.setdefault(name, []).append(what)
  return found


def datamodels_source(directory, train_margins=True, completed=True):
  """A DatamodelsSource of an export's files (as its layout names them)."""
  path = lambda name: os.path.join(directory, f'{name}.npy')
  return sources.DatamodelsSource(
      path('masks'), path('margins'), path('train_labels'),
      path('test_labels'),
      train_margins=path('train_margins') if train_margins else None,
      completed=path('_completed') if completed else None)


def lira_score(logits, labels):
  """LiRA's score.py on one model's logits [n, 1, augmentations, C]: the
  softmax (in float64 here), y_true over the sum of the others, the log
  ratio; [n] (one augmentation)."""
  z = logits.astype(np.float64)
  z = z - z.max(axis=3, keepdims=True)
  p = np.exp(z)
  p /= p.sum(axis=3, keepdims=True)
  count = len(p)
  y_true = p[np.arange(count), :, :, labels[:count]].copy()
  p[np.arange(count), :, :, labels[:count]] = 0
  y_wrong = p.sum(axis=3)
  score = np.log(y_true.mean(axis=1) + 1e-45) - np.log(
      y_wrong.mean(axis=1) + 1e-45)
  assert score.shape == (count, 1)
  return score[:, 0]


def planted_margins(rng, masks, train_labels, test_labels, pairs):
  """float16 test margins [k, n_test]: noise (a tenth exactly 0, i.e. a
  tie: wrong), and for each planted (i, j) a margin positive iff i is in
  the trial's subset (j's label set to i's)."""
  k = len(masks)
  margins = rng.standard_normal((k, len(test_labels))).astype(np.float16)
  margins[rng.random(margins.shape) < 0.1] = 0
  for i, j in pairs:
    test_labels[j] = train_labels[i]
    size = np.abs(rng.standard_normal(k)).astype(np.float16) + np.float16(0.5)
    margins[:, j] = np.where(masks[:, i], size, -size)
  return margins


def influence_by_hand(masks, correct):
  """infl[i, j] = mean over trials with i in of correct[:, j] minus the
  mean over those without (float64 [n, n_test])."""
  m = np.asarray(masks, np.float64)
  c = np.asarray(correct, np.float64)
  return (m.T @ c) / m.sum(0)[:, None] - ((1 - m).T @ c) / (
      (1 - m).sum(0)[:, None])


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope='module')
def original(tmp_path_factory):
  """The arrays (with ties) imported and estimated: the workdir both round
  trips start from."""
  root = tmp_path_factory.mktemp('original')
  arrays = tied_arrays(seed=11)
  paths = save_arrays(str(root / 'in'), arrays)
  workdir = str(root / 'A')
  run.import_trials(workdir, sources.ArraysSource(
      paths['masks'], paths['train_logits'], paths['test_logits'],
      paths['train_labels'], paths['test_labels']), log=lambda _: None)
  estimate(workdir)
  loaded = load_all(workdir)
  # The ties are there: the planted ones, and many from the rounding.
  for (i, *_), right, correct, margin in (
      (RIGHT_TIE, True, loaded.train_correct, loaded.train_margin),
      (WRONG_TIE, False, loaded.train_correct, loaded.train_margin),
      (TEST_RIGHT_TIE, True, loaded.test_correct, loaded.test_margin),
      (TEST_WRONG_TIE, False, loaded.test_correct, loaded.test_margin)):
    assert np.all(correct[:, i] == right) and np.all(margin[:, i] == 0)
  ties = loaded.train_margin == 0
  assert np.count_nonzero(ties & loaded.train_correct) > 2 * K
  assert np.count_nonzero(ties & ~loaded.train_correct) > 2 * K
  return dict(workdir=workdir, root=root, arrays=arrays, loaded=loaded)


@pytest.fixture(scope='module')
def margins_only(tmp_path_factory):
  """A datamodels import of masks and planted test margins alone (no
  train margins): k = 32 balanced trials, so every influence is a
  multiple of 1/16, exact in float16."""
  root = tmp_path_factory.mktemp('margins_only')
  rng = np.random.default_rng(3)
  masks = balanced_masks(rng, K, N)
  train_labels = rng.integers(0, C, N)
  test_labels = rng.integers(0, C, N_TEST)
  margins = planted_margins(rng, masks, train_labels, test_labels, PAIRS)
  paths = save_arrays(str(root / 'in'), dict(
      masks=masks, margins=margins, train_labels=train_labels,
      test_labels=test_labels))
  workdir = str(root / 'W')
  lines = []
  run.import_trials(workdir, sources.DatamodelsSource(
      paths['masks'], paths['margins'], paths['train_labels'],
      paths['test_labels']), log=lines.append)
  return dict(workdir=workdir, root=root, masks=masks, margins=margins,
              train_labels=train_labels, test_labels=test_labels,
              import_lines=lines)


# ------------------------------------------------------ 1. LiRA round trip


def test_lira_round_trip(original):
  a = original['workdir']
  root = original['root']
  lira = str(root / 'lira')
  lines = []
  exports.export_trials(a, lira, 'lira', log=lines.append)
  b = str(root / 'B_lira')
  run.import_trials(b, sources.LiraSource(
      lira, os.path.join(lira, 'test_logits.npy'),
      os.path.join(lira, 'y_test.npy'), log=lines.append), log=lines.append)
  estimate(b)

  first, again = original['loaded'], load_all(b)
  np.testing.assert_array_equal(again.trial_indices, first.trial_indices)
  assert again.predicted == first.predicted == ('train', 'test')
  for field in RECORD_FIELDS:
    x, y = getattr(first, field), getattr(again, field)
    assert x.dtype == y.dtype and np.array_equal(x, y), field
  for field in LOGODDS:
    x, y = first.extra[field], again.extra[field]
    differ = x != y
    # Allowed only within one float16 step of 0 (none here).
    step = np.finfo(np.float16).smallest_subnormal
    assert np.all(np.abs(x[differ].astype(np.float64)) <= step), field
    assert np.all(np.abs(y[differ].astype(np.float64)) <= step), field
  # The planted ties came back as they were.
  for (i, *_), right in ((RIGHT_TIE, True), (WRONG_TIE, False)):
    assert np.all(again.train_correct[:, i] == right)
    assert np.all(again.train_margin[:, i] == 0)

  # Every estimate the same: compare_workdirs finds summary.json alone
  # differing, and only in the workdir, fingerprint, timings and name.
  assert set(compare_estimates(a, b)) == {estimates.SUMMARY_JSON}
  listed = sorted(os.listdir(estimates.estimates_dir(a)))
  for name in (estimates.MEMORIZATION_CSV, estimates.PAIRS_CSV,
               estimates.TOPK_NPZ, 'membership.csv'):
    assert name in listed
  summaries = [summary_of(w) for w in (a, b)]
  assert summaries[0]['dataset']['name'] == 'arrays'
  assert summaries[1]['dataset']['name'] == 'lira'
  for summary in summaries:
    for key in ('workdir', 'fingerprint', 'timings'):
      summary.pop(key)
    summary['dataset'].pop('name')
  assert summaries[0] == summaries[1]

  # The layout as LiRA's score.py reads it.
  k = first.num_trials
  labels, test_labels = first.train_labels, first.test_labels
  y_train = np.load(os.path.join(lira, 'y_train.npy'))
  assert y_train.dtype == np.int64 and np.array_equal(y_train, labels)
  np.testing.assert_array_equal(np.load(os.path.join(lira, 'y_test.npy')),
                                test_labels)
  test_logits = np.load(os.path.join(lira, 'test_logits.npy'))
  assert test_logits.shape == (k, N_TEST, C)
  assert test_logits.dtype == np.float32
  folders = sorted(e for e in os.listdir(lira) if e.startswith('experiment-'))
  assert folders == sorted(f'experiment-{t}_{k}' for t in
                           first.trial_indices)
  for row, t in enumerate(first.trial_indices):
    folder = os.path.join(lira, f'experiment-{t}_{k}')
    keep = np.load(os.path.join(folder, 'keep.npy'))
    assert keep.dtype == bool
    np.testing.assert_array_equal(keep, first.masks[row])
    assert os.listdir(os.path.join(folder, 'logits')) == ['0000000000.npy']
    logits = np.load(os.path.join(folder, 'logits', '0000000000.npy'))
    assert logits.shape == (N, 1, 1, C) and logits.dtype == np.float32
    np.testing.assert_array_equal(
        np.argmax(logits[:, 0, 0], axis=-1), first.train_pred[row])
    score = lira_score(logits, labels)
    np.testing.assert_array_equal(score.astype(np.float16),
                                  first.extra['train_logodds'][row])
    # The test logits (a row per trial): the same score on the test split.
    np.testing.assert_array_equal(
        lira_score(test_logits[row][:, None, None], test_labels).astype(
            np.float16), first.extra['test_logodds'][row])


# ------------------------------------------------- 2. datamodels round trip


def test_datamodels_round_trip_and_fixed_point(original):
  a = original['workdir']
  root = original['root']
  exported = str(root / 'dm')
  exports.export_trials(a, exported, 'datamodels', log=lambda _: None)
  first = original['loaded']
  files = {name: np.load(os.path.join(exported, f'{name}.npy')) for name in (
      'masks', 'margins', 'train_margins', '_completed', 'train_labels',
      'test_labels')}
  assert files['masks'].dtype == bool and files['_completed'].all()
  assert files['margins'].dtype == files['train_margins'].dtype == np.float16
  # Datamodels' rule: positive iff correct; a right tie the smallest
  # positive float16, a wrong one 0.
  for split in ('train', 'test'):
    margins = files['margins' if split == 'test' else 'train_margins']
    np.testing.assert_array_equal(margins > 0,
                                  getattr(first, f'{split}_correct'))
  assert np.all(files['train_margins'][:, RIGHT_TIE[0]] == TINY)
  assert np.all(files['train_margins'][:, WRONG_TIE[0]] == 0)
  assert np.all(files['margins'][:, TEST_RIGHT_TIE[0]] == TINY)
  assert np.all(files['margins'][:, TEST_WRONG_TIE[0]] == 0)

  e = str(root / 'E_datamodels')
  run.import_trials(e, datamodels_source(exported), log=lambda _: None)
  again = loading.load(e, predictions=True)
  assert again.predicted == ('train', 'test')
  assert [m.get('from_margins') for m in again.metadata] == [True] * K
  np.testing.assert_array_equal(again.trial_indices, first.trial_indices)
  for field in ('masks', 'train_correct', 'test_correct'):
    np.testing.assert_array_equal(getattr(again, field),
                                  getattr(first, field))
  for split in ('train', 'test'):
    margin = getattr(first, f'{split}_margin')
    right_tie = (margin == 0) & getattr(first, f'{split}_correct')
    # The margins as they were, but a right tie's: the smallest positive.
    np.testing.assert_array_equal(getattr(again, f'{split}_margin'),
                                  np.where(right_tie, TINY, margin))
    pred = getattr(again, f'{split}_pred')
    labels = getattr(first, f'{split}_labels')
    np.testing.assert_array_equal(
        pred, np.where(getattr(first, f'{split}_correct'), labels,
                       records.UNKNOWN_CLASS))
  # The planted tie the model got right is right again; the wrong one wrong.
  assert np.all(again.train_correct[:, RIGHT_TIE[0]])
  assert np.all(again.train_margin[:, RIGHT_TIE[0]] == TINY)
  assert not again.train_correct[:, WRONG_TIE[0]].any()
  assert np.all(again.test_correct[:, TEST_RIGHT_TIE[0]])
  assert not again.test_correct[:, TEST_WRONG_TIE[0]].any()

  estimate(e)
  # Memorization and influence the same, the soft scores excepted (prob
  # is sigmoid(margin) now, not the softmax): memorization_soft and the
  # held-out probability proxy; no log-odds, so no membership files.
  differ = compare_estimates(a, e)
  assert set(differ) <= {
      estimates.MEMORIZATION_CSV, estimates.SUMMARY_JSON, 'proxies.csv',
      'proxies.json', 'proxies.png', 'membership.csv', 'membership.json',
      'membership_roc.png'}, differ
  for name in (estimates.PAIRS_CSV, estimates.TOPK_NPZ, 'convergence.csv',
               'memorization_vs_influence.csv'):
    assert name not in differ
  ours = read_csv(os.path.join(estimates.estimates_dir(a),
                               estimates.MEMORIZATION_CSV))
  theirs = read_csv(os.path.join(estimates.estimates_dir(e),
                                 estimates.MEMORIZATION_CSV))
  assert len(ours) == len(theirs) == N
  soft = 'memorization_soft'
  for column in estimates.MEMORIZATION_HEADER:
    same = [x[column] == y[column] for x, y in zip(ours, theirs)]
    assert all(same) or column == soft, column
  pairs = [read_csv(os.path.join(estimates.estimates_dir(w),
                                 estimates.PAIRS_CSV)) for w in (a, e)]
  assert pairs[0] == pairs[1] and pairs[0]

  # A fixed point: the re-imported workdir exports the same arrays.
  second = str(root / 'dm2')
  exports.export_trials(e, second, 'datamodels', log=lambda _: None)
  for name in files:
    with open(os.path.join(exported, f'{name}.npy'), 'rb') as f1, open(
        os.path.join(second, f'{name}.npy'), 'rb') as f2:
      assert f1.read() == f2.read(), name


# ---------------------------------- 3. datamodels without train margins


def test_margins_only_planted_influence(margins_only):
  workdir = margins_only['workdir']
  masks, margins = margins_only['masks'], margins_only['margins']
  train_labels = margins_only['train_labels']
  test_labels = margins_only['test_labels']
  assert any('no --train_margins' in line
             for line in margins_only['import_lines'])
  loaded = loading.load(workdir, predictions=True)
  assert loaded.predicted == ('test',)
  np.testing.assert_array_equal(loaded.test_correct, margins > 0)

  summary, lines = estimate(workdir, [
      'Estimator.planner = True', "Estimator.influence_scope = 'all'",
      'Estimator.dense_influence = True'])
  skipped = [line for line in lines if line.startswith('Memorization: skipped')]
  assert len(skipped) == 1, lines
  assert len([line for line in lines
              if line.startswith('Planner: skipped')]) == 1, lines
  assert summary['planner'] is None

  out = estimates.estimates_dir(workdir)
  rows = read_csv(os.path.join(out, estimates.MEMORIZATION_CSV))
  assert [int(r['index']) for r in rows] == list(range(N))
  for column in ('memorization', 'memorization_stderr', 'memorization_soft',
                 'consistency'):
    assert all(r[column] == '' for r in rows), column  # NaN: empty cells
  np.testing.assert_array_equal([int(r['k_in']) for r in rows],
                                masks.sum(axis=0))
  np.testing.assert_array_equal([int(r['k_out']) for r in rows],
                                (~masks).sum(axis=0))

  # Influence of every pair against the margins' signs (a tie, margin 0,
  # wrong): the dense matrix (multiples of 1/16, exact in float16).
  want = influence_by_hand(masks, margins > 0)
  dense = np.load(os.path.join(out, estimates.DENSE_NPY))
  assert dense.shape == (N, N_TEST)
  np.testing.assert_allclose(dense.astype(np.float64), want, rtol=0,
                             atol=1e-6)
  # The top-k of each test example: the largest of its column.
  with np.load(os.path.join(out, estimates.TOPK_NPZ)) as topk:
    indices, values = topk['train_indices'], topk['influence']
  for j in range(N_TEST):
    np.testing.assert_allclose(values[j], np.sort(want[:, j])[::-1][:10],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(values[j], want[indices[j], j], rtol=0,
                               atol=1e-6)
  # The raw pairs: every same-label pair over the influence threshold, no
  # memorization filter; the planted ones among them at influence 1.
  pairs = read_csv(os.path.join(out, estimates.PAIRS_CSV))
  raw = {(int(r['train_index']), int(r['test_index'])): r for r in pairs
         if r['raw'] == '1'}
  same_label = train_labels[:, None] == test_labels[None, :]
  expected = set(zip(*np.nonzero(same_label & (want >= 0.15))))
  assert set(raw) == {(int(i), int(j)) for i, j in expected}
  for (i, j), row in raw.items():
    assert abs(float(row['influence']) - want[i, j]) <= 1e-6
    assert row['memorization'] == ''
  for pair in PAIRS:
    assert float(raw[pair]['influence']) == 1.0
  family = int(sum(np.count_nonzero(train_labels == c) *
                   np.count_nonzero(test_labels == c) for c in range(C)))
  assert summary['trust']['pairs']['family'] == family
  assert summary['num_pairs'] == len(expected)

  # Memorization: not measured, said so.
  assert summary['trust']['memorized'] is None
  assert summary['pair_thresholds']['memorization'] is None
  assert all(v is None for v in summary['memorization_counts'].values())
  assert summary['mean_train_accuracy'] is None
  table = [line for line in lines
           if line.startswith('Estimates written to')]
  assert len(table) == 1
  table = table[0].splitlines()

  def row(name):
    return next(line for line in table if line.strip().startswith(name))

  assert row('controlled memorized').endswith('n/a (no train predictions)')
  assert row('examples with memorization >= 0.25').endswith('n/a')
  assert 'n/a / n/a /' in row('mean accuracy train / held-out / test')
  assert row('median / max memorization stderr').endswith('n/a / n/a')


# ------------------------------------------------------------ 4. --completed


def completed_store(directory, n=300, n_test=100, rows=10):
  """A datamodels store of `rows` models, some unfinished (their margins
  NaN, as a store's never-written rows may be); (paths, arrays)."""
  rng = np.random.default_rng(4)
  completed = np.ones(rows, bool)
  completed[[3, 6, 9]] = False
  arrays = dict(
      masks=rng.random((rows, n)) < 0.5,
      margins=rng.standard_normal((rows, n_test)).astype(np.float16),
      train_margins=rng.standard_normal((rows, n)).astype(np.float16),
      train_labels=rng.integers(0, 5, n), test_labels=rng.integers(0, 5,
                                                                   n_test),
      _completed=completed)
  for name in ('margins', 'train_margins'):
    arrays[name][~completed] = np.nan
  return save_arrays(directory, arrays), arrays


def test_completed_reads_only_the_finished_rows(tmp_path, monkeypatch):
  directory = str(tmp_path / 'store')
  _, arrays = completed_store(directory)
  completed = arrays['_completed']
  done = np.flatnonzero(completed)
  read = []
  original_getitem = npy.NpyRows.__getitem__

  def spy(self, rows):
    read.append((self.what, rows.start, rows.stop))
    return original_getitem(self, rows)

  monkeypatch.setattr(npy.NpyRows, '__getitem__', spy)
  lines = []
  workdir = str(tmp_path / 'W')
  source = datamodels_source(directory)
  assert source.num_trials == len(done)
  run.import_trials(workdir, source, log=lines.append)
  monkeypatch.undo()
  assert any(f'{len(done)} of the 10 models are completed' in line
             for line in lines), lines
  for what in ('--masks', '--margins', '--train_margins'):
    rows = sorted(start for w, start, _ in read if w == what)
    assert rows == done.tolist(), (what, rows)

  loaded = loading.load(workdir, predictions=True)
  np.testing.assert_array_equal(loaded.trial_indices, done)
  np.testing.assert_array_equal(loaded.masks, arrays['masks'][done])
  np.testing.assert_array_equal(loaded.test_margin, arrays['margins'][done])
  np.testing.assert_array_equal(loaded.train_margin,
                                arrays['train_margins'][done])
  np.testing.assert_array_equal(loaded.test_correct,
                                arrays['margins'][done] > 0)
  np.testing.assert_array_equal(loaded.train_correct,
                                arrays['train_margins'][done] > 0)


@pytest.mark.parametrize('name', ['margins', 'train_margins'])
def test_nan_in_a_completed_row_writes_nothing(tmp_path, name):
  directory = str(tmp_path / 'store')
  paths, arrays = completed_store(directory)
  bad = arrays[name]
  bad[7, 11] = np.nan  # row 7 is completed (and comes late)
  np.save(paths[name], bad)
  parent = tmp_path / 'out'
  parent.mkdir()
  with pytest.raises(errors.UserError) as raised:
    run.import_trials(str(parent / 'W'), datamodels_source(directory),
                      log=lambda _: None)
  message = str(raised.value)
  assert f'row 7 of --{name}=' in message and 'NaN or infinite' in message
  assert os.listdir(parent) == []  # no workdir, no staging folder


# ------------------------------------------------------------ 5. bad records


def altered_copy(margins_only, tmp_path):
  workdir = str(tmp_path / 'W')
  shutil.copytree(margins_only['workdir'], workdir)
  return workdir, records.record_path(workdir, 0)


def test_a_wrong_known_class_in_a_margins_record_is_refused(margins_only,
                                                            tmp_path):
  workdir, path = altered_copy(margins_only, tmp_path)
  arrays = read_npz(path)
  meta = json.loads(str(arrays['metadata']))
  assert meta['from_margins'] is True and meta['predicted'] == ['test']
  pred = arrays['test_pred'].copy()
  labels = margins_only['test_labels']
  j = int(np.flatnonzero(pred == records.UNKNOWN_CLASS)[0])
  # Another class, neither the label nor -1: margin <= 0 and prob <= 1/2,
  # so only the from_margins rule can tell.
  pred[j] = (labels[j] + 1) % C
  assert arrays['test_margin'][j] <= 0 and arrays['test_prob'][j] <= 0.5
  rewrite_record(path, test_pred=pred)
  records.read_record(path)  # signed properly: the checksum passes
  with pytest.raises(errors.RecordError,
                     match=r'test_pred mixes unknown classes \(-1\) with '
                     'wrong known ones'):
    loading.load(workdir)


@pytest.mark.parametrize('metadata, message', [
    pytest.param({'predicted': ['bogus']}, "metadata field 'predicted'",
                 id='predicted_bogus'),
    pytest.param({'predicted': []}, "metadata field 'predicted'",
                 id='predicted_empty'),
    pytest.param({'predicted': 'test'}, "metadata field 'predicted'",
                 id='predicted_string'),
    pytest.param({'predicted': ['test', 'test']},
                 "metadata field 'predicted'", id='predicted_twice'),
    pytest.param({'from_margins': 'yes'}, "metadata field 'from_margins'",
                 id='from_margins_string'),
    # Without the flag, its -1 predictions are classes no model predicts.
    pytest.param({'from_margins': False}, 'test_pred holds classes outside',
                 id='from_margins_dropped'),
])
def test_altered_margins_metadata_is_refused(margins_only, tmp_path,
                                             metadata, message):
  workdir, path = altered_copy(margins_only, tmp_path)
  rewrite_record(path, metadata=metadata)
  records.read_record(path)
  with pytest.raises(errors.RecordError, match=message):
    loading.load(workdir)


# ------------------------------------------- exports of margins-only records


def test_export_of_margins_only_records_claims_no_train_predictions(
    margins_only, tmp_path):
  exported = str(tmp_path / 'dm')
  exports.export_trials(margins_only['workdir'], exported, 'datamodels',
                        log=lambda _: None)
  given = os.path.exists(os.path.join(exported, 'train_margins.npy'))
  workdir = str(tmp_path / 'again')
  run.import_trials(workdir, datamodels_source(exported, train_margins=given),
                    log=lambda _: None)
  assert loading.load(workdir).predicted == ('test',)
  assert not given  # no zeros that would read as every model wrong
  with open(os.path.join(exported, exports.MARKER)) as f:
    assert '"train_predictions": false' in f.read()


def test_a_lira_export_of_margins_records_is_refused(margins_only,
                                                     tmp_path):
  exported = str(tmp_path / 'lira')
  with pytest.raises(errors.UserError, match='margins do not give.*'
                     '--format=datamodels'):
    exports.export_trials(margins_only['workdir'], exported, 'lira',
                          log=lambda _: None)
  assert not os.path.exists(exported)

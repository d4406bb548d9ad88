"""published/comparison.py, released.py and join.py: joining the released
scores, and --export.

A tiny workdir of synthetic records (40 train and 24 test examples of 4
classes, 16 trials) is written through records.write_record and estimated
by the estimator; its examples' source ids ('train_17') are a known
permutation of its order, as tfds's order is of CIFAR's original one. Files
in the release's schema are written here, in that original order, from our
own values (and a brute-force numpy influence), so that a right join gives
exact agreement and a wrong one is refused.
"""

import csv
import dataclasses
import functools
import io
import json
import operator
import os
import shutil
import struct
import subprocess
import sys
import tracemalloc
import zlib

import gin
import numpy as np
import pytest

from tf_memorization.estimation import pipeline
from tf_memorization.published import comparison
from tf_memorization.published import released as released_lib
from tf_memorization.stats import masks as masks_lib
from tf_memorization.training import trainer
from tf_memorization.workdir import estimates
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

from conftest import (REPO, LabelsDataset, LabelsSplit, error_line, read_npz,
                      run_in_process)

N, N_TEST, CLASSES, TRIALS = 40, 24, 4, 16
CHEAP = ['Estimator.report = False', 'Estimator.planner = False',
         'Estimator.convergence = False', 'Estimator.null_permutations = 0',
         'Estimator.split_half = False']


_Split = LabelsSplit
_Dataset = LabelsDataset


@dataclasses.dataclass
class Run:
  """A tiny estimated workdir and the truth it was written from."""
  path: str
  masks: np.ndarray            # bool [k, n]
  test_correct: np.ndarray     # bool [k, n_test]
  train_labels: np.ndarray
  test_labels: np.ndarray
  train_source: np.ndarray     # int [n]: original index of our example i
  test_source: np.ndarray
  memorization: np.ndarray     # as memorization.csv holds it


def _memorization_csv(workdir):
  with open(os.path.join(workdir, 'estimates', 'memorization.csv')) as f:
    return np.array([float(row['memorization']) if row['memorization']
                     else np.nan for row in csv.DictReader(f)])


def _make_run(path, source_ids=True, seed=0):
  rng = np.random.default_rng(seed)
  train_labels = np.arange(N) % CLASSES
  rng.shuffle(train_labels)
  test_labels = np.arange(N_TEST) % CLASSES
  rng.shuffle(test_labels)
  train_source = rng.permutation(N)
  test_source = rng.permutation(N_TEST)
  dataset = _Dataset(
      'synthetic',
      _Split(train_labels, np.array([f'tfds-train__{i}' for i in range(N)]),
             np.array([f'train_{s}' for s in train_source])
             if source_ids else None),
      _Split(test_labels, np.array([f'tfds-test__{j}'
                                    for j in range(N_TEST)]),
             np.array([f'test_{s}' for s in test_source])
             if source_ids else None),
      CLASSES)
  info = records.write_dataset_file(path, dataset)
  design = masks_lib.SubsetDesign(num_trials=TRIALS, subset_ratio=0.5,
                                  seed=seed)
  p_out = rng.uniform(0.3, 0.95, N)
  p_out[:12] = 0.02  # memorized: right only when trained on
  test_p = rng.uniform(0.2, 0.9, N_TEST)
  # Test example j < 8 of the label of train example planted[j] is right
  # exactly when that example is in the subset: high influence.
  planted = {}
  for j in range(8):
    same = np.flatnonzero((train_labels == test_labels[j])
                          & (np.arange(N) < 12))
    planted[j] = int(same[j % len(same)])
  masks, test_correct = [], []
  for t in range(TRIALS):
    trial_rng = np.random.default_rng([seed, t])
    mask = design.mask(N, t)
    correct = trial_rng.random(N) < np.where(mask, 0.98, p_out)
    right = trial_rng.random(N_TEST) < test_p
    for j, i in planted.items():
      right[j] = mask[i]
    masks.append(mask)
    test_correct.append(right)
    result = trainer.TrialResult(
        train_pred=np.where(correct, train_labels, (train_labels + 1) % 4),
        train_prob=np.where(correct, 0.9, 0.1).astype(np.float32),
        train_margin=np.where(correct, 2.0, -2.0).astype(np.float32),
        test_pred=np.where(right, test_labels, (test_labels + 1) % 4),
        test_prob=np.where(right, 0.9, 0.1).astype(np.float32),
        test_margin=np.where(right, 2.0, -2.0).astype(np.float32),
        metrics={'train_accuracy': 1.0, 'heldout_accuracy': 0.5,
                 'test_accuracy': float(right.mean())})
    records.write_record(path, t, mask, result, {
        'fingerprint': 'synthetic', 'seed': design.trial_seed(t),
        'dataset': info, 'design': design.fingerprint_fields(),
        'subset_ratio': 0.5, 'num_trials': TRIALS})
  pipeline.run(path, gin_bindings=CHEAP, log=lambda _: None)
  gin.clear_config()
  return Run(path, np.array(masks), np.array(test_correct), train_labels,
             test_labels, train_source, test_source, _memorization_csv(path))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  return _make_run(str(tmp_path_factory.mktemp('compare') / 'w'))


@pytest.fixture(scope='module')
def plain_run(tmp_path_factory):
  """The same data in a workdir without source ids (an older dataset.npz)."""
  return _make_run(str(tmp_path_factory.mktemp('compare_plain') / 'w'),
                   source_ids=False)


def brute_influence(masks, test_correct, i, j):
  """mean test correctness of j over the trials with i, minus without."""
  values = test_correct[:, j].astype(np.float64)
  return values[masks[:, i]].mean() - values[~masks[:, i]].mean()


def released_arrays(r, matrices=True):
  """Our values in the release's schema, in the ORIGINAL (source) order:
  position p holds our example with source index p."""
  train_at = np.argsort(r.train_source)  # our example at position p
  test_at = np.argsort(r.test_source)
  out = {'tr_mem': r.memorization[train_at],
         'tr_labels': r.train_labels[train_at],
         'tt_labels': r.test_labels[test_at]}
  if matrices:
    for k in range(CLASSES):
      rows = np.flatnonzero(out['tr_labels'] == k)
      cols = np.flatnonzero(out['tt_labels'] == k)
      out[f'tr_classidx_{k}'] = rows
      out[f'tt_classidx_{k}'] = cols
      out[f'infl_matrix_class{k}'] = np.array(
          [[brute_influence(r.masks, r.test_correct, train_at[p], test_at[q])
            for q in cols] for p in rows], np.float32)
  return out


def save(path, arrays):
  with open(path, 'wb') as f:
    np.savez(f, **arrays)
  return str(path)


def compare_in_process(workdir, **flags):
  """comparison.run through cli.binary_main: (status, stdout, stderr)."""
  return run_in_process(lambda: comparison.run(workdir, log=print, **flags))


def _compare(workdir, tmp_path, **flags):
  return comparison.run(workdir, output_dir=str(tmp_path / 'out'),
                        log=lambda _: None, **flags)


# ------------------------------------------------------------------ joining


def test_source_order_join_recovers_exact_agreement(run, tmp_path):
  path = save(tmp_path / 'infl.npz', released_arrays(run))
  result = _compare(run.path, tmp_path, published=path)
  assert result['order'] == 'source'
  mem = result['memorization']
  assert mem['joined'] == mem['compared'] == N
  assert mem['spearman'] == pytest.approx(1.0)
  assert mem['pearson'] == pytest.approx(1.0)
  assert [(e['k'], e['overlap']) for e in mem['top_overlap']] == [(N, 1.0)]
  infl = result['influence']
  assert infl['classes'] == CLASSES and infl['compared'] == infl['entries']
  assert infl['pearson'] == pytest.approx(1.0, abs=1e-6)
  assert infl['spearman'] == pytest.approx(1.0, abs=1e-6)
  pairs = result['pairs']
  assert pairs['published_from'] == 'matrices' and pairs['ours'] >= 4
  assert pairs['recall'] == pairs['precision'] == pairs['jaccard'] == 1.0
  out = tmp_path / 'out'
  with open(out / 'compare.json') as f:
    assert json.load(f) == result
  assert (out / 'memorization_scatter.png').stat().st_size > 1000
  with open(out / 'joined.csv') as f:
    rows = list(csv.DictReader(f))
  assert [int(row['index']) for row in rows] == list(range(N))
  for i in (0, 7, 31):
    assert rows[i]['source_id'] == f'train_{run.train_source[i]}'
    assert int(rows[i]['published_index']) == run.train_source[i]
    assert int(rows[i]['label']) == run.train_labels[i]
    assert rows[i]['memorization'] == rows[i]['published_memorization']


def test_a_file_in_another_order_is_refused(run, tmp_path):
  arrays = released_arrays(run, matrices=False)
  # The same values, labels in our (tfds) order instead of the original.
  arrays['tr_labels'] = run.train_labels
  path = save(tmp_path / 'wrong.npz', arrays)
  line = error_line(*compare_in_process(run.path, published=path))
  assert path in line and '--order=source' in line
  assert 'disagree' in line and f'of its {N} tr_labels' in line
  assert '--order=position' in line
  assert not os.path.exists(os.path.join(run.path, 'compare'))
  # The right file under the wrong order: refused the same way.
  right = save(tmp_path / 'right.npz', released_arrays(run, matrices=False))
  line = error_line(*compare_in_process(run.path, published=right,
                                        order='position'))
  assert '--order=position' in line and '--order=source' in line


def test_filename_order_joins_by_base_name(run, tmp_path):
  arrays = released_arrays(run, matrices=False)
  shuffle = np.random.default_rng(1).permutation(N)  # any order of names
  train_at = np.argsort(run.train_source)[shuffle]
  arrays['tr_mem'] = run.memorization[train_at]
  arrays['tr_labels'] = run.train_labels[train_at]
  arrays['tr_filenames'] = np.array(
      [f'some/dir/train_{run.train_source[i]}' for i in train_at])
  arrays['tt_filenames'] = np.array(  # bytes, as some files store names
      [f'test_{s}'.encode() for s in np.sort(run.test_source)])
  result = _compare(run.path, tmp_path,
                    published=save(tmp_path / 'names.npz', arrays))
  assert result['order'] == 'filename'
  assert result['train']['joined'] == N
  assert result['memorization']['spearman'] == pytest.approx(1.0)
  # One of our examples missing from the file: refused.
  arrays['tr_filenames'][3] = 'n01440764_10026.JPEG'
  path = save(tmp_path / 'short.npz', arrays)
  line = error_line(*compare_in_process(run.path, published=path))
  assert f'1 of this workdir\'s {N} train examples' in line
  assert '--order=filename' in line


def test_a_file_of_fewer_or_more_examples(run, tmp_path):
  arrays = released_arrays(run, matrices=False)
  fewer = {key: value[:30] if key.startswith('tr_') else value
           for key, value in arrays.items()}
  result = _compare(run.path, tmp_path,
                    published=save(tmp_path / 'fewer.npz', fewer))
  assert result['train'] == {'ours': N, 'published': 30, 'joined': 30}
  assert any('covers 30 of this workdir\'s 40 train examples' in note
             for note in result['notes'])
  assert result['memorization']['spearman'] == pytest.approx(1.0)
  more = dict(arrays, tr_mem=np.r_[arrays['tr_mem'], np.zeros(10)],
              tr_labels=np.r_[arrays['tr_labels'], np.zeros(10, int)])
  result = _compare(run.path, tmp_path,
                    published=save(tmp_path / 'more.npz', more))
  assert result['train'] == {'ours': N, 'published': 50, 'joined': N}
  assert any('a subset' in note for note in result['notes'])


# ---------------------------------------------------------------- influence


def test_class_influence_matches_brute_force(run):
  loaded = loading.load(run.path, margins=False)
  np.testing.assert_array_equal(loaded.masks, run.masks)
  np.testing.assert_array_equal(loaded.test_correct, run.test_correct)
  soft = np.where(run.test_correct, 0.9, 0.1)  # as the records' test_prob
  for k in range(CLASSES):
    rows = np.flatnonzero(run.train_labels == k)
    cols = np.flatnonzero(run.test_labels == k)
    got = released_lib.class_influence(loaded.masks, loaded.test_correct, rows,
                                       cols, block_size=3)
    want = np.array([[brute_influence(run.masks, run.test_correct, i, j)
                      for j in cols] for i in rows])
    assert got.dtype == np.float32 and got.shape == (len(rows), len(cols))
    # 0/1 correctness: the exact difference, rounded once to float32.
    np.testing.assert_array_equal(got, want.astype(np.float32))
    got = released_lib.class_influence(loaded.masks, loaded.test_prob, rows,
                                       cols, block_size=4)
    want = np.array([[brute_influence(run.masks, soft, i, j) for j in cols]
                     for i in rows])
    np.testing.assert_allclose(got, want, atol=1e-3)  # float16 probs
    assert np.abs(want).max() > 0.1
  # An example in every trial has no estimate: a NaN row.
  masks = run.masks.copy()
  masks[:, 5] = True
  got = released_lib.class_influence(masks, run.test_correct, [4, 5], [0, 1])
  assert np.isnan(got[1]).all() and np.isfinite(got[0]).all()


# -------------------------------------------------------------------- pairs


def _hand_pairs_workdir(run, tmp_path):
  """A copy of the workdir whose influence_pairs.csv holds hand-made pairs;
  (workdir, published pair positions, (our train, our test) of four
  same-label pairs)."""
  workdir = str(tmp_path / 'w')
  shutil.copytree(run.path, workdir)
  chosen = [(int(np.flatnonzero(run.train_labels == c)[0]),
             int(np.flatnonzero(run.test_labels == c)[0]))
            for c in range(CLASSES)]
  other = int(np.flatnonzero(run.train_labels == 0)[1])
  # Ours raw: chosen 0 and 1 and one pair they do not have; a raw = 0 row
  # (a controlled pair only) holds chosen 2, and must not count.
  rows = [(i, j, 1) for i, j in chosen[:2]] + [(other, chosen[0][1], 1),
                                               (*chosen[2], 0)]
  table = [(i, j, f'id{i}', f'id{j}', int(run.train_labels[i]), 0.5, 0.1,
            0.9, '', '', raw, 1 - raw) for i, j, raw in rows]
  with open(os.path.join(workdir, 'estimates', 'influence_pairs.csv'),
            'wb') as f:
    f.write(estimates.csv_bytes(estimates.PAIRS_HEADER, table))
  positions = [(int(run.train_source[i]), int(run.test_source[j]))
               for i, j in chosen]
  return workdir, positions, chosen


@pytest.mark.parametrize('source', ['file', 'matrices'])
def test_pair_recall_and_precision_by_hand(run, tmp_path, source):
  workdir, positions, chosen = _hand_pairs_workdir(run, tmp_path)
  arrays = released_arrays(run, matrices=source == 'matrices')
  flags = {}
  if source == 'file':
    flags['published_pairs'] = save(tmp_path / 'pairs.npz', {
        'tr_idx': np.array([p for p, _ in positions]),
        'tt_idx': np.array([q for _, q in positions]),
        'infl': np.full(4, 0.5), 'mem': np.full(4, 0.9)})
  else:  # the same four pairs are the matrices' only ones over thresholds
    train_of = {p: k for k in range(CLASSES)
                for p in arrays[f'tr_classidx_{k}'].tolist()}
    arrays['tr_mem'] = np.full(N, 0.1)
    for k in range(CLASSES):
      arrays[f'infl_matrix_class{k}'][:] = 0.0
    for n, (p, q) in enumerate(positions):
      k = train_of[p]
      a = arrays[f'tr_classidx_{k}'].tolist().index(p)
      b = arrays[f'tt_classidx_{k}'].tolist().index(q)
      arrays[f'infl_matrix_class{k}'][a, b] = 0.5
      arrays['tr_mem'][p] = 0.9
      if n == 0:  # below a threshold: no pair
        arrays[f'infl_matrix_class{k}'][a, (b + 1) % 6] = 0.1
        low = next(x for x, p2 in enumerate(arrays[f'tr_classidx_{k}'])
                   if p2 != p)
        arrays[f'infl_matrix_class{k}'][low, b] = 0.9  # tr_mem 0.1
  result = _compare(workdir, tmp_path,
                    published=save(tmp_path / 'infl.npz', arrays), **flags)
  pairs = result['pairs']
  assert (pairs['ours'], pairs['published'], pairs['both']) == (3, 4, 2)
  assert pairs['recall'] == pytest.approx(2 / 4)
  assert pairs['precision'] == pytest.approx(2 / 3)
  assert pairs['jaccard'] == pytest.approx(2 / 5)
  assert pairs['published_from'] == (flags['published_pairs']
                                     if source == 'file' else 'matrices')


def test_top_overlap_by_hand():
  ours = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
  theirs = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
  assert comparison.top_overlap(ours, theirs, 2) == 0.0   # {0, 1} vs {4, 3}
  assert comparison.top_overlap(ours, theirs, 3) == 1 / 3  # {0, 1, 2}, {4, 3, 2}
  assert comparison.top_overlap(ours, ours, 5) == 1.0
  # Over the entries finite in both only ({0, 1, 2, 4}), K clipped to them.
  ours[3] = np.nan
  assert comparison.top_overlap(ours, theirs, 3) == 2 / 3  # {0, 1, 2}, {4, 2, 1}
  assert comparison.top_overlap(ours, theirs, 10) == 1.0
  # Ties at the K-th place share the places left, whatever their
  # positions: three tied at 0 beside 7 share one place of a top 2.
  tied = np.array([0.0, 7.0, 0.0, 0.0])
  assert comparison.top_overlap(tied, tied, 2) == pytest.approx(1.0)
  assert comparison.top_overlap(tied, tied[::-1], 2) == pytest.approx(
      4 / 3 / 2)  # 7 meets a third of a place on each side


def test_figures_are_never_computed_from_nothing():
  theirs = np.linspace(-0.5, 0.9, N)
  for mine in (np.full(N, np.nan), np.r_[np.full(N - 2, np.nan), 0.1, 0.2]):
    figures = comparison.memorization_figures(mine, theirs, top_k=1000)
    assert figures['compared'] == np.isfinite(mine).sum()
    assert figures['pearson'] is None and figures['spearman'] is None
    if not figures['compared']:
      assert figures['mean'] is None
      assert [e['overlap'] for e in figures['top_overlap']] == [None]
    else:  # two entries rank, but correlate nothing
      assert [e['k'] for e in figures['top_overlap']] == [2]
  assert comparison.top_overlap(np.full(5, np.nan), np.arange(5.0), 3) is None
  assert comparison.top_overlap(np.arange(5.0), np.full(5, np.nan), 1) is None
  # Half of theirs NaN: the figures are those of the finite half alone.
  half = theirs.copy()
  half[::2] = np.nan
  figures = comparison.memorization_figures(theirs[::-1].copy(), half, 10)
  assert figures['compared'] == N // 2
  assert figures['spearman'] == pytest.approx(-1.0)
  assert [(e['k'], e['overlap']) for e in figures['top_overlap']] == [
      (10, 0.0), (N // 2, 1.0)]
  assert figures['published_mean'] == pytest.approx(np.nanmean(half))
  # A constant side has no top K: chance overlap, not a position's luck.
  flat = comparison.memorization_figures(theirs, np.zeros(N), 10)
  assert flat['top_overlap'][0]['overlap'] == pytest.approx(10 / N)
  assert flat['spearman'] is None


def test_pair_agreement_of_empty_sets():
  assert comparison.pair_agreement([], []) == {
      'ours': 0, 'published': 0, 'both': 0, 'recall': None,
      'precision': None, 'jaccard': None}
  got = comparison.pair_agreement([(1, 2)], [(1, 2), (3, 4)])
  assert (got['recall'], got['precision'], got['jaccard']) == (0.5, 1.0, 0.5)


# ------------------------------------------------------------------- export


def test_export_then_compare_round_trip(run, tmp_path):
  path = str(tmp_path / 'ours.npz')
  result = comparison.run(run.path, export=path, log=lambda _: None)
  assert result['export']['order'] == 'source'
  exported = read_npz(path)
  metadata = json.loads(str(exported['metadata']))
  assert metadata['order'] == 'source'
  assert metadata['num_trials'] == TRIALS and metadata['workdir'] == run.path
  # In the original order, as the released files: position p = source p.
  np.testing.assert_array_equal(exported['tr_mem'][run.train_source],
                                run.memorization)
  np.testing.assert_array_equal(exported['tr_labels'][run.train_source],
                                run.train_labels)
  np.testing.assert_array_equal(exported['tt_labels'][run.test_source],
                                run.test_labels)
  assert exported['tr_source_ids'][run.train_source[3]] == (
      f'train_{run.train_source[3]}')
  assert 'tr_filenames' not in exported
  want = released_arrays(run)
  for k in range(CLASSES):
    for key in (f'tr_classidx_{k}', f'tt_classidx_{k}'):
      np.testing.assert_array_equal(exported[key], want[key])
    np.testing.assert_allclose(exported[f'infl_matrix_class{k}'],
                               want[f'infl_matrix_class{k}'], atol=1e-6)
  pairs = read_npz(str(tmp_path / 'ours_pairs.npz'))
  assert len(pairs['tr_idx']) == result['export']['num_pairs'] >= 4
  back = _compare(run.path, tmp_path, published=path,
                  published_pairs=str(tmp_path / 'ours_pairs.npz'))
  assert back['order'] == 'source'
  mem = back['memorization']
  assert mem['spearman'] == pytest.approx(1.0)
  assert all(e['overlap'] == 1.0 for e in mem['top_overlap'])
  assert back['influence']['pearson'] == pytest.approx(1.0, abs=1e-6)
  assert back['pairs']['recall'] == back['pairs']['precision'] == 1.0


def test_an_export_compared_in_another_order_says_which(run, tmp_path):
  path = str(tmp_path / 'ours.npz')
  comparison.run(run.path, export=path, log=lambda _: None)
  line = error_line(*compare_in_process(run.path, published=path,
                                        order='position'))
  assert 'disagree' in line
  assert 'wrote it in source order: use --order=source (or auto)' in line


def test_export_of_a_workdir_without_source_ids(plain_run, tmp_path):
  path = str(tmp_path / 'plain.npz')
  comparison.run(plain_run.path, export=path, log=lambda _: None)
  exported = read_npz(path)
  assert json.loads(str(exported['metadata']))['order'] == 'position'
  np.testing.assert_array_equal(exported['tr_mem'], plain_run.memorization)
  assert 'tr_source_ids' not in exported
  back = _compare(plain_run.path, tmp_path, published=path,
                  published_pairs=str(tmp_path / 'plain_pairs.npz'),
                  order='position', top_k=10)
  assert back['order'] == 'position'
  mem = back['memorization']
  assert mem['spearman'] == pytest.approx(1.0)
  assert [(e['k'], e['overlap']) for e in mem['top_overlap']] == [(10, 1.0),
                                                                  (N, 1.0)]
  assert back['pairs']['jaccard'] == 1.0


# ------------------------------------------------------------- bad input


def _without(arrays, *keys):
  return {key: value for key, value in arrays.items() if key not in keys}


def _bad_files(run, tmp_path):
  """{case: (flags, messages the one error line must hold)}."""
  good = released_arrays(run)
  good_path = save(tmp_path / 'good.npz', good)
  pairs = {'tr_idx': np.array([0, 1]), 'tt_idx': np.array([0, 1]),
           'infl': np.array([0.5, 0.5]), 'mem': np.array([0.9, 0.9])}

  def file(name, arrays):
    return {'published': save(tmp_path / f'{name}.npz', arrays)}

  def pairs_file(name, arrays):
    return {'published': good_path,
            'published_pairs': save(tmp_path / f'{name}.npz', arrays)}

  object_path = str(tmp_path / 'object.npz')
  np.savez(object_path, **dict(good, tr_filenames=np.array(
      [f'x{i}' for i in range(N)], dtype=object)))
  matrix = good['infl_matrix_class1']
  return {
      'missing tr_mem': (file('no_mem', _without(good, 'tr_mem')),
                         ["lacks ['tr_mem']", '--published']),
      'missing a class matrix': (
          file('no_class', _without(good, 'infl_matrix_class2')),
          ["lacks ['infl_matrix_class2']"]),
      'a pairs file as --published': (file('swapped', pairs),
                                      ['pass it as --published_pairs']),
      'tr_mem of another length': (
          file('short_mem', dict(good, tr_mem=good['tr_mem'][:-1])),
          [f'tr_mem has {N - 1} entries but tr_labels {N}']),
      'a matrix of the wrong shape': (
          file('shape', dict(good, infl_matrix_class1=matrix[:, :-1])),
          ['infl_matrix_class1 is of shape',
           f'tr_classidx_1 has {matrix.shape[0]}']),
      'a class index out of range': (
          file('range', dict(good, tr_classidx_0=np.r_[
              good['tr_classidx_0'][:-1], N])),
          ['tr_classidx_0 holds the index 40', f'outside 0..{N - 1}']),
      'pairs of unequal lengths': (
          pairs_file('pairs_len', dict(pairs, mem=np.array([0.9]))),
          ['one entry per pair', "'mem': 1"]),
      'a pair index out of range': (
          pairs_file('pairs_range', dict(pairs, tt_idx=np.array([0, N_TEST]))),
          [f'tt_idx holds the index {N_TEST}']),
      'missing pair keys': (
          pairs_file('pairs_keys', _without(pairs, 'infl')),
          ["lacks ['infl']"]),
      'an object array': ({'published': object_path},
                          ['object arrays', 'Re-save it', 'allow_pickle']),
      'a missing file': ({'published': str(tmp_path / 'absent.npz')},
                         ['cannot be read']),
      'an unknown order': ({'published': good_path, 'order': 'tfds'},
                           ['--order must be one of']),
      'top_k of 0': ({'published': good_path, 'top_k': 0},
                     ['--top_k must be >= 1']),
      'nothing to do': ({}, ['Nothing to do', '--export']),
      'an export that is no .npz': ({'export': str(tmp_path / 'x.csv')},
                                    ['name an .npz file']),
  }


def test_bad_files_are_one_error_line(run, tmp_path):
  for name, (flags, messages) in _bad_files(run, tmp_path).items():
    line = error_line(*compare_in_process(run.path, **flags))
    for message in messages:
      assert message in line, (name, line)
  assert not os.path.exists(os.path.join(run.path, 'compare'))


def _refused(run, tmp_path, **flags):
  """The one error line of a compare that must write nothing."""
  out = tmp_path / 'out'
  line = error_line(*compare_in_process(run.path, output_dir=str(out),
                                        **flags))
  assert not out.exists() and not os.path.exists(
      os.path.join(run.path, 'compare'))
  return line


@pytest.mark.parametrize('nan', ['all', 'half'])
def test_nan_memorization_in_a_released_file_is_refused(run, tmp_path, nan):
  arrays = released_arrays(run, matrices=False)
  arrays['tr_mem'][slice(None) if nan == 'all' else slice(None, None, 2)] = (
      np.nan)
  path = save(tmp_path / 'nan.npz', arrays)
  line = _refused(run, tmp_path, published=path)
  count = N if nan == 'all' else N // 2
  assert path in line and f'tr_mem is NaN in {count} of its {N}' in line
  assert 'download it again' in line


@pytest.mark.parametrize('value', [1.5, -np.inf])
def test_memorization_outside_minus_one_to_one_is_refused(run, tmp_path,
                                                          value):
  arrays = released_arrays(run, matrices=False)
  arrays['tr_mem'][7] = value
  path = save(tmp_path / 'range.npz', arrays)
  line = _refused(run, tmp_path, published=path)
  assert path in line and f'tr_mem holds {value}' in line
  assert f'1 of its {N} entries' in line and 'outside [-1, 1]' in line


@pytest.mark.parametrize('case', ['matrix NaN', 'matrix inf', 'matrix 2',
                                  'pairs infl NaN', 'pairs mem NaN',
                                  'pairs infl inf'])
def test_nan_or_out_of_range_influence_is_refused(run, tmp_path, case):
  arrays = released_arrays(run)
  pairs = {'tr_idx': np.array([0, 1, 2]), 'tt_idx': np.array([0, 1, 2]),
           'infl': np.full(3, 0.5), 'mem': np.full(3, 0.9)}
  where, value = case.split()[-2:]
  value = float(value)
  if case.startswith('matrix'):
    arrays['infl_matrix_class2'][1, 0] = value
    key, flags = 'infl_matrix_class2', {}
  else:
    pairs[where][1] = value
    key = where
    flags = {'published_pairs': save(tmp_path / 'pairs.npz', pairs)}
  path = save(tmp_path / 'infl.npz', arrays)
  line = _refused(run, tmp_path, published=path, **flags)
  named = flags.get('published_pairs', path)
  assert f'{named}: {key} ' in line
  assert (f'{key} is NaN in 1 of its' in line if np.isnan(value) else
          f'{key} holds {value}' in line and 'outside [-1, 1]' in line)


def test_an_export_may_mark_examples_without_estimates_by_nan(run, tmp_path):
  arrays = released_arrays(run)
  arrays['tr_mem'][:5] = np.nan
  arrays['infl_matrix_class0'][0] = np.nan
  row = arrays['infl_matrix_class0'].shape[1]
  path = save(tmp_path / 'released.npz', arrays)
  line = _refused(run, tmp_path, published=path)
  assert 'tr_mem is NaN in 5 of its' in line
  # Our --export writes NaN where its workdir has no estimate: compared
  # over the finite entries, saying how many.
  arrays['metadata'] = np.array(json.dumps(
      {'order': 'source', 'written_by': released_lib.EXPORT_WRITER}))
  result = _compare(run.path, tmp_path,
                    published=save(tmp_path / 'exported.npz', arrays))
  mem = result['memorization']
  assert (mem['joined'], mem['compared']) == (N, N - 5)
  assert mem['spearman'] == pytest.approx(1.0)
  assert result['influence']['compared'] == (
      result['influence']['entries'] - row)
  assert f'memorization compared over {N - 5} of the {N} joined' in (
      ' '.join(result['notes']))


# A zip bomb: an .npz member as np.savez_compressed writes it, holding a
# GiB of zeros in a few MB. Written by hand (a fixed-Huffman deflate block
# of 258-byte matches, the CRC composed without the zeros) in well under a
# second; test_zip_bomb_construction checks np.load reads one back.

_ZIP_LOCAL = struct.Struct('<4s5H3L2H')
_ZIP_CENTRAL = struct.Struct('<4s6H3L5H2L')
_ZIP_END = struct.Struct('<4s4H2LH')


def _npz_bytes(members):
  """A deflated .npz of (name, raw deflate stream, crc32, size) members."""
  out, central = bytearray(), bytearray()
  for name, stream, crc, size in members:
    name = name.encode()
    central += _ZIP_CENTRAL.pack(b'PK\x01\x02', 20, 20, 0, 8, 0, 0x21, crc,
                                 len(stream), size, len(name), 0, 0, 0, 0, 0,
                                 len(out)) + name
    out += _ZIP_LOCAL.pack(b'PK\x03\x04', 20, 0, 8, 0, 0x21, crc, len(stream),
                           size, len(name), 0) + name + stream
  return bytes(out + central + _ZIP_END.pack(
      b'PK\x05\x06', 0, 0, len(members), len(members), len(central), len(out),
      0))


def _deflated(data, final=True):
  """A raw deflate stream of `data` (final=False: one more block follows)."""
  packer = zlib.compressobj(9, zlib.DEFLATED, -15)
  return packer.compress(data) + packer.flush(zlib.Z_FINISH if final else
                                              zlib.Z_SYNC_FLUSH)


def _member(name, array):
  buffer = io.BytesIO()
  np.lib.format.write_array(buffer, np.asarray(array))
  data = buffer.getvalue()
  return f'{name}.npy', _deflated(data), zlib.crc32(data), len(data)


def _crc32_of_zeros(size, crc):
  """zlib.crc32(bytes(size), crc) without the bytes: over zeros CRC-32 is
  affine in its start value, composed here from 1 MiB by squaring (size is
  1 MiB times a power of two)."""
  block = bytes(1 << 20)
  offset = zlib.crc32(block, 0)
  columns = [zlib.crc32(block, 1 << i) ^ offset for i in range(32)]

  def apply(columns, value):
    return functools.reduce(operator.xor, (c for i, c in enumerate(columns)
                                           if value >> i & 1), 0)

  covered = 1 << 20
  while covered < size:
    offset ^= apply(columns, offset)
    columns = [apply(columns, c) for c in columns]
    covered *= 2
  assert covered == size
  return apply(columns, crc) ^ offset


def _zeros_member(name, size):
  """np.zeros(size // 8) as a deflated member: the header, then one final
  fixed-Huffman block of a literal 0 and matches (length 258, distance 1),
  whose every 8 matches are the same 13 bytes."""
  buffer = io.BytesIO()
  np.lib.format.write_array_header_1_0(buffer, {
      'descr': '<f8', 'fortran_order': False, 'shape': (size // 8,)})
  header = buffer.getvalue()
  repeats, rest = divmod(size - 1, 258)
  groups, extra = divmod(repeats - 1, 8)
  literal = [0, 0, 1, 1, 0, 0, 0, 0]  # byte 0's code
  match = [1, 1, 0, 0, 0, 1, 0, 1] + [0] * 5  # 258 bytes back 1

  def packed(bits):
    return np.packbits(np.array(bits, np.uint8), bitorder='little').tobytes()

  block = (packed([1, 1, 0] + literal + match) + packed(match * 8) * groups
           + packed(match * extra + literal * rest + [0] * 7))
  return (f'{name}.npy', _deflated(header, final=False) + block,
          _crc32_of_zeros(size, zlib.crc32(header)), len(header) + size)


def _bomb(run, tmp_path, name, tr_mem):
  path = tmp_path / f'{name}.npz'
  small = released_arrays(run, matrices=False)
  path.write_bytes(_npz_bytes([_member('tr_labels', small['tr_labels']),
                               _member('tt_labels', small['tt_labels']),
                               tr_mem]))
  return str(path)


def test_zip_bomb_construction(tmp_path):
  path = tmp_path / 'small.npz'
  path.write_bytes(_npz_bytes([_member('tr_labels', np.arange(3)),
                               _zeros_member('tr_mem', 4 << 20)]))
  loaded = read_npz(str(path))
  np.testing.assert_array_equal(loaded['tr_labels'], np.arange(3))
  assert loaded['tr_mem'].shape == (1 << 19,) and not loaded['tr_mem'].any()
  assert path.stat().st_size < 40_000


@pytest.fixture(scope='module')
def zip_bomb(run, tmp_path_factory):
  """A released file whose tr_mem is a GiB of zeros, in under 7 MB."""
  return _bomb(run, tmp_path_factory.mktemp('bomb'), 'bomb',
               _zeros_member('tr_mem', 1 << 30))


def _peak_bytes(call):
  """call()'s result and the most memory Python and numpy held during it."""
  tracemalloc.start()
  try:
    tracemalloc.reset_peak()
    result = call()
    return result, tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()


def test_a_zip_bomb_is_refused_before_it_is_decompressed(run, tmp_path,
                                                         zip_bomb):
  assert os.path.getsize(zip_bomb) < 8 << 20
  line, peak = _peak_bytes(lambda: _refused(run, tmp_path,
                                            published=zip_bomb))
  assert zip_bomb in line and 'tr_mem declares' in line
  assert f'({1 << 27},)' in line and '1.0 GiB' in line
  assert peak < 64 << 20, peak  # the file itself is 7 MB; its tr_mem 1 GiB
  # A member whose .npy header declares more than the zip directory holds
  # (a GiB header on 320 bytes): refused before anything is allocated.
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(header, {
      'descr': '<f8', 'fortran_order': False, 'shape': (1 << 27,)})
  data = header.getvalue() + bytes(8 * N)
  liar = _bomb(run, tmp_path, 'liar', (
      'tr_mem.npy', _deflated(data), zlib.crc32(data), len(data)))
  line, peak = _peak_bytes(lambda: _refused(run, tmp_path, published=liar))
  assert liar in line and 'tr_mem' in line and '1.0 GiB' in line
  assert peak < 64 << 20, peak


def test_a_member_outside_the_schema_is_never_decompressed(run, tmp_path):
  arrays = released_arrays(run, matrices=False)
  path = tmp_path / 'extra.npz'
  path.write_bytes(_npz_bytes([_member(key, value)
                               for key, value in arrays.items()]
                              + [_zeros_member('tr_extra', 1 << 30)]))
  released, peak = _peak_bytes(lambda: released_lib.read(str(path)))
  np.testing.assert_array_equal(released.memorization, arrays['tr_mem'])
  assert peak < 64 << 20, peak


def test_a_compressed_file_reads_as_a_stored_one(run, tmp_path):
  """np.savez_compressed's members (as the release's), in Fortran order and
  big-endian: the values np.savez's give."""
  arrays = released_arrays(run)
  arrays['tr_mem'] = arrays['tr_mem'].astype('>f8')
  arrays['infl_matrix_class1'] = np.asfortranarray(
      arrays['infl_matrix_class1'].astype('>f4'))
  compressed = str(tmp_path / 'compressed.npz')
  np.savez_compressed(compressed, **arrays)
  for path in (save(tmp_path / 'stored.npz', arrays), compressed):
    released = released_lib.read(path)
    np.testing.assert_array_equal(released.memorization, arrays['tr_mem'])
    for k in range(CLASSES):
      np.testing.assert_array_equal(released.classes[k][2],
                                    arrays[f'infl_matrix_class{k}'])


def test_a_published_file_is_read_once(run, tmp_path, monkeypatch):
  """The bytes checked are the bytes used: the path is not opened again
  (here it is replaced by a refused file as soon as it has been read)."""
  path = save(tmp_path / 'infl.npz', released_arrays(run))
  bad = released_arrays(run)
  bad['tr_mem'][:] = np.nan
  bad_path = save(tmp_path / 'bad.npz', bad)
  reads = []
  read_bytes = released_lib.storage.read_bytes

  def read_then_replace(name, *args, **kwargs):
    payload = read_bytes(name, *args, **kwargs)
    reads.append(name)
    if name == path:
      shutil.copyfile(bad_path, path)
    return payload

  monkeypatch.setattr(released_lib.storage, 'read_bytes', read_then_replace)
  result = _compare(run.path, tmp_path, published=path)
  assert reads.count(path) == 1
  assert result['memorization']['spearman'] == pytest.approx(1.0)


def test_source_order_needs_source_ids(plain_run, tmp_path):
  path = save(tmp_path / 'infl.npz', released_arrays(plain_run))
  line = error_line(*compare_in_process(plain_run.path, published=path,
                                        order='source'))
  assert 'no train_source_ids' in line and 'earlier version' in line
  # auto falls back to position, which the labels refuse, saying why.
  line = error_line(*compare_in_process(plain_run.path, published=path))
  assert '--order=position' in line and 'lacks' in line


def test_a_workdir_without_estimates(run, tmp_path):
  workdir = str(tmp_path / 'w')
  shutil.copytree(run.path, workdir)
  shutil.rmtree(os.path.join(workdir, 'estimates'))
  path = save(tmp_path / 'infl.npz', released_arrays(run, matrices=False))
  line = error_line(*compare_in_process(workdir, published=path))
  assert 'run the estimate binary first' in line
  assert f'python -m tf_memorization.estimate --workdir={workdir}' in line


def test_estimates_of_other_trials_than_the_records(run, tmp_path):
  workdir = str(tmp_path / 'w')
  shutil.copytree(run.path, workdir)
  os.remove(records.record_path(workdir, TRIALS - 1))
  path = save(tmp_path / 'infl.npz', released_arrays(run))
  line = error_line(*compare_in_process(workdir, published=path))
  assert f'estimates of {TRIALS} trials' in line
  assert f'has {TRIALS - 1} now: run the estimate binary again' in line
  # Without influence matrices no record is read: memorization compares.
  memorization_only = save(tmp_path / 'mem.npz',
                           released_arrays(run, matrices=False))
  assert compare_in_process(workdir, published=memorization_only)[0] == 0


@pytest.mark.slow
def test_the_binary_refuses_a_file_that_is_no_npz(run, tmp_path):
  path = tmp_path / 'infl.npz'
  path.write_text('tr_mem,tr_labels\n0.5,1\n')
  proc = subprocess.run(
      [sys.executable, '-m', 'tf_memorization.compare',
       f'--workdir={run.path}', f'--published={path}'],
      cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'),
      capture_output=True, text=True, timeout=120, check=False)
  line = error_line(proc.returncode, proc.stdout, proc.stderr)
  assert f'--published={path} is not a readable .npz file' in line
  assert not os.path.exists(os.path.join(run.path, 'compare'))



def test_a_deeply_nested_metadata_member_is_not_ours_and_ignored(run,
                                                                 tmp_path):
  """A 'metadata' member of 30,000 nested lists (within its size bound) is
  no export of ours: it is not used, and it raises nothing."""
  arrays = released_arrays(run, matrices=False)
  arrays['metadata'] = np.array('[' * 30_000 + ']' * 30_000)
  path = save(tmp_path / 'infl.npz', arrays)
  result = _compare(run.path, tmp_path, published=path)
  assert result['memorization']['spearman'] == pytest.approx(1.0)

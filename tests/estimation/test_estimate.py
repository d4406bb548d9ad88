"""End-to-end tests of the estimate binary on real trials of the digits.

Six trials of gin_configs/tiny.gin are trained once (in process, with the real
train binary's run()); the estimate binary then runs on them, and on damaged
copies of them, as subprocesses. All subprocesses of the module start
together (each spends most of its time importing TensorFlow), so the module
stays well under a minute on two cores.

tf_memorization.train and tf_memorization.estimate cannot be imported into
one process (both define --gin_file etc.; see
test_train_and_estimate_import_into_one_process, the module's last test), so
pipeline.run() is called in a subprocess here.
"""

import csv
import importlib
import json
import os
import shutil
import subprocess
import sys

import gin
import numpy as np
import pytest

from tf_memorization.core import files
from tf_memorization.estimation import pipeline
from tf_memorization.stats import scores
from tf_memorization.stats import selection
from tf_memorization import train
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

from conftest import GIN_DIR, REPO, run_in_process, train_tiny

pytestmark = pytest.mark.slow  # trains real runs; see conftest

NUM_TRIALS, NUM_TRAIN, NUM_TEST = 6, 1442, 355
BINDINGS = [f'SubsetDesign.num_trials = {NUM_TRIALS}', 'TrialTrainer.epochs = 1',
            "get_strategy.kind = 'one_device'"]
MEMORIZATION_COLUMNS = ['index', 'id', 'label', 'memorization',
                        'memorization_stderr', 'memorization_soft', 'k_in',
                        'k_out', 'consistency', 'pvalue', 'qvalue',
                        'controlled']
PAIR_COLUMNS = ['train_index', 'test_index', 'train_id', 'test_id', 'label',
                'influence', 'influence_stderr', 'memorization', 'pvalue',
                'qvalue', 'raw', 'controlled']

# pipeline.run() in process, as a library user calls it; prints what it
# returned and logged as JSON.
RUN_SCRIPT = """
import json, sys
from tf_memorization.estimation import pipeline
lines = []
summary = pipeline.run(sys.argv[1], log=lines.append)
print('JSON:' + json.dumps({'summary': summary, 'lines': lines}))
"""


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, digits_data_dir):
  """Six real trials of tiny.gin (balanced design, ratio 0.5)."""
  path = str(tmp_path_factory.mktemp('estimate') / 'w')
  summary = train_tiny(path, BINDINGS, digits_data_dir)
  assert summary.trained == list(range(NUM_TRIALS))
  return path


@pytest.fixture(scope='module')
def other_config_record(tmp_path_factory, digits_data_dir):
  """Trial 99 of another config (balanced over 100 trials) on the same data."""
  path = str(tmp_path_factory.mktemp('other') / 'w')
  train.run(path, [os.path.join(GIN_DIR, 'tiny.gin')],
            BINDINGS[1:] + ['SubsetDesign.num_trials = 100'], trials='99:100',
            data_dir=digits_data_dir, log=lambda _: None)
  gin.clear_config()
  return records.record_path(path, 99)


def _estimate_binary(*args):
  return [sys.executable, '-m', 'tf_memorization.estimate', *args]


def _estimate_main(workdir, *bindings):
  """What the estimate binary runs for --workdir and --gin_bindings."""
  return lambda: pipeline.run(workdir, gin_bindings=bindings,
                              log=lambda line: print(line, flush=True))


@pytest.fixture(scope='module')
def runs(workdir, other_config_record, tmp_path_factory):
  """Starts every subprocess of the module at once; {name: (rc, out, err)}."""
  root = tmp_path_factory.mktemp('cases')

  def copy(name):
    dst = str(root / name)
    shutil.copytree(workdir, dst)
    return dst

  mixed = copy('mixed')
  shutil.copy(other_config_record, records.record_path(mixed, 99))
  truncated = copy('truncated')
  damaged = records.record_path(truncated, 2)
  with open(damaged, 'rb') as f:
    payload = f.read()
  with open(damaged, 'wb') as f:
    f.write(payload[:len(payload) // 2])
  no_records = copy('no_records')
  shutil.rmtree(os.path.join(no_records, files.TRIALS_DIR))
  no_dataset = str(root / 'no_dataset')
  os.makedirs(no_dataset)
  one_trial = copy('one_trial')
  for t in range(1, NUM_TRIALS):
    os.remove(records.record_path(one_trial, t))
  bindings_out = str(root / 'bindings_out')

  # The binary itself runs as a subprocess (twice, in the background); the
  # bad-input cases run its main in this process meanwhile (each fails
  # before any heavy work), as conftest.run_in_process does.
  commands = {
      'run': [sys.executable, '-c', RUN_SCRIPT, workdir],
      'bindings': _estimate_binary(
          f'--workdir={workdir}', f'--output_dir={bindings_out}',
          '--gin_bindings=Estimator.topk = 3',
          '--gin_bindings=Estimator.dense_influence = True',
          "--gin_bindings=Estimator.influence_scope = 'all'"),
  }
  calls = {
      'mixed': _estimate_main(mixed),
      'truncated': _estimate_main(truncated),
      'no_records': _estimate_main(no_records),
      'no_dataset': _estimate_main(no_dataset),
      'unknown_binding': _estimate_main(copy('unknown_binding'),
                                        'Estimator.top_k = 3'),
      'dense_within_classes': _estimate_main(
          copy('dense_within_classes'), 'Estimator.dense_influence = True'),
      'one_trial': _estimate_main(one_trial),
  }
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  procs = {name: subprocess.Popen(cmd, cwd=REPO, env=env, text=True,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
           for name, cmd in commands.items()}
  results = {}
  try:
    for name, call in calls.items():
      results[name] = run_in_process(call)
    for name, proc in procs.items():
      out, err = proc.communicate(timeout=300)
      results[name] = (proc.returncode, out, err)
  finally:
    for proc in procs.values():  # only after a timeout or an error
      if proc.poll() is None:
        proc.kill()
        proc.communicate()
  results['paths'] = {'mixed': mixed, 'truncated': truncated,
                      'damaged': damaged, 'no_records': no_records,
                      'no_dataset': no_dataset, 'one_trial': one_trial,
                      'bindings_out': bindings_out}
  return results


@pytest.fixture(scope='module')
def loaded(workdir):
  return loading.load(workdir)


@pytest.fixture(scope='module')
def direct_influence(loaded):
  """infl = M^T T / k_in - (1 - M)^T T / k_out in float64, [n, n_test]."""
  m = loaded.masks.astype(np.float64)
  t = loaded.test_correct.astype(np.float64)
  k_in, k_out = m.sum(0)[:, None], (1 - m).sum(0)[:, None]
  p_in, p_out = m.T @ t / k_in, (1 - m).T @ t / k_out
  stderr = np.sqrt(p_in * (1 - p_in) / k_in + p_out * (1 - p_out) / k_out)
  return p_in - p_out, stderr


def _ok(result):
  rc, out, err = result
  assert rc == 0, err[-3000:]
  assert 'Traceback' not in err
  return out


@pytest.fixture(scope='module')
def run_output(workdir, runs):
  out = _ok(runs['run'])
  payload = [l for l in out.splitlines() if l.startswith('JSON:')]
  assert len(payload) == 1, out[-3000:]
  return json.loads(payload[0][len('JSON:'):])


def _read_csv(path):
  with open(path, newline='') as f:
    reader = csv.reader(f)
    header = next(reader)
    rows = list(reader)
  return header, rows


def _floats(rows, column):
  return np.array([float(r[column]) if r[column] else np.nan for r in rows])


def test_memorization_csv(workdir, run_output, loaded):
  del run_output  # the estimates are written
  header, rows = _read_csv(os.path.join(workdir, 'estimates',
                                        'memorization.csv'))
  assert header == MEMORIZATION_COLUMNS
  assert len(rows) == NUM_TRAIN
  col = {name: i for i, name in enumerate(header)}
  np.testing.assert_array_equal([int(r[col['index']]) for r in rows],
                                np.arange(NUM_TRAIN))
  np.testing.assert_array_equal([r[col['id']] for r in rows], loaded.train_ids)
  np.testing.assert_array_equal([int(r[col['label']]) for r in rows],
                                loaded.train_labels)
  k_in = np.array([int(r[col['k_in']]) for r in rows])
  k_out = np.array([int(r[col['k_out']]) for r in rows])
  np.testing.assert_array_equal(k_in + k_out, NUM_TRIALS)
  # Balanced design at ratio 0.5: every example is in exactly 3 of 6 trials.
  np.testing.assert_array_equal(k_in, 3)
  np.testing.assert_array_equal(k_in, loaded.masks.sum(0))

  # Independent path through the public API: loading.load + scores.
  mem = scores.memorization(loaded.masks, loaded.train_correct,
                            loaded.train_prob)
  for name, expected in (('memorization', mem.memorization),
                         ('memorization_stderr', mem.stderr),
                         ('memorization_soft', mem.soft),
                         ('consistency', mem.consistency)):
    # The CSV holds 6 significant digits.
    np.testing.assert_allclose(_floats(rows, col[name]), expected, rtol=1e-5,
                               atol=1e-6, err_msg=name)
  # And straight from the definition, with plain numpy.
  m, c = loaded.masks, loaded.train_correct
  direct = (c & m).sum(0) / m.sum(0) - (c & ~m).sum(0) / (~m).sum(0)
  np.testing.assert_allclose(_floats(rows, col['memorization']), direct,
                             atol=1e-6)
  # With k_in = k_out = 3 every estimate is a multiple of 1/3.
  thirds = _floats(rows, col['memorization']) * 3
  np.testing.assert_allclose(thirds, np.round(thirds), atol=1e-4)
  # The tests (H0: mem <= 0.25, the threshold): p-values from the counts,
  # q-values >= p-values, the controlled set exactly the q-values <= 0.1.
  x_in, x_all = (c & m).sum(0), c.sum(0)
  np.testing.assert_allclose(
      _floats(rows, col['pvalue']),
      selection.difference_pvalues(x_in, k_in, x_all - x_in, k_out, 0.25),
      rtol=1e-5, atol=1e-7)
  pvalue, qvalue = _floats(rows, col['pvalue']), _floats(rows, col['qvalue'])
  assert (qvalue >= pvalue - 1e-7).all()
  controlled = np.array([int(r[col['controlled']]) for r in rows]) == 1
  np.testing.assert_array_equal(controlled, qvalue <= 0.1)


def test_influence_pairs_csv(workdir, run_output, loaded, direct_influence):
  header, rows = _read_csv(os.path.join(workdir, 'estimates',
                                        'influence_pairs.csv'))
  assert header == PAIR_COLUMNS
  # The default null (H0: influence <= the threshold) selects among the raw
  # pairs only: the file is the raw pairs, some also controlled.
  assert len(rows) == run_output['summary']['num_pairs']
  assert all(r[header.index('raw')] == '1' for r in rows)
  assert rows, 'six trials of a weak model give some high-influence pairs'
  col = {name: i for i, name in enumerate(header)}
  train_idx = np.array([int(r[col['train_index']]) for r in rows])
  test_idx = np.array([int(r[col['test_index']]) for r in rows])
  np.testing.assert_array_equal([r[col['train_id']] for r in rows],
                                loaded.train_ids[train_idx])
  np.testing.assert_array_equal([r[col['test_id']] for r in rows],
                                loaded.test_ids[test_idx])
  labels = np.array([int(r[col['label']]) for r in rows])
  np.testing.assert_array_equal(labels, loaded.train_labels[train_idx])
  np.testing.assert_array_equal(labels, loaded.test_labels[test_idx])
  infl, stderr = direct_influence
  values = _floats(rows, col['influence'])
  np.testing.assert_allclose(values, infl[train_idx, test_idx], atol=1e-5)
  np.testing.assert_allclose(_floats(rows, col['influence_stderr']),
                             stderr[train_idx, test_idx], atol=1e-5)
  mem = scores.memorization(loaded.masks, loaded.train_correct).memorization
  np.testing.assert_allclose(_floats(rows, col['memorization']),
                             mem[train_idx], atol=1e-5)
  # Sorted by influence, best first.
  assert (np.diff(values) <= 1e-6).all()
  # Exactly the pairs over the paper's thresholds (with k_in = k_out = 3,
  # values are multiples of 1/3: none sits at 0.15 or 0.25).
  keep = ((infl >= 0.15) & (mem >= 0.25)[:, None] &
          (loaded.train_labels[:, None] == loaded.test_labels[None, :]))
  assert set(zip(train_idx.tolist(), test_idx.tolist())) == set(
      zip(*[a.tolist() for a in np.nonzero(keep)]))


def test_influence_topk_npz(workdir, run_output, loaded, direct_influence):
  del run_output
  with np.load(os.path.join(workdir, 'estimates', 'influence_topk.npz'),
               allow_pickle=False) as npz:
    indices, values = npz['train_indices'], npz['influence']
    np.testing.assert_array_equal(npz['test_ids'], loaded.test_ids)
    np.testing.assert_array_equal(npz['train_ids'], loaded.train_ids)
  assert indices.shape == values.shape == (NUM_TEST, 10)
  infl, _ = direct_influence
  # The default scope ranks the training examples of each test example's
  # label. Many ties (multiples of 1/3): compare the values, and that each
  # listed train example really has the listed influence and label.
  same = loaded.train_labels[:, None] == loaded.test_labels[None, :]
  expected = -np.sort(-np.where(same, infl, -np.inf), axis=0)[:10].T
  np.testing.assert_allclose(values, expected, atol=1e-5)
  np.testing.assert_allclose(values, infl[indices, np.arange(NUM_TEST)[:, None]],
                             atol=1e-5)
  np.testing.assert_array_equal(
      loaded.train_labels[indices],
      np.broadcast_to(loaded.test_labels[:, None], indices.shape))
  assert all(len(set(row)) == 10 for row in indices.tolist())


def test_summary(workdir, run_output, loaded):
  with open(os.path.join(workdir, 'estimates', 'summary.json')) as f:
    summary = json.load(f)
  assert summary == run_output['summary']  # what run() returns is written
  assert summary['num_trials'] == NUM_TRIALS
  assert summary['num_train'] == NUM_TRAIN
  assert summary['num_test'] == NUM_TEST
  assert summary['subset_ratios'] == [0.5]
  assert summary['design']['design'] == 'balanced'
  assert summary['fingerprint'] == loaded.fingerprint
  assert summary['dataset']['name'] == 'sklearn_digits'
  # Accuracies: the records' metrics agree with the stored predictions.
  m, c = loaded.masks, loaded.train_correct
  assert summary['mean_test_accuracy'] == pytest.approx(
      loaded.test_correct.mean(), abs=1e-6)
  assert summary['mean_train_accuracy'] == pytest.approx(
      np.mean([c[t][m[t]].mean() for t in range(NUM_TRIALS)]), abs=1e-6)
  assert summary['mean_heldout_accuracy'] == pytest.approx(
      np.mean([c[t][~m[t]].mean() for t in range(NUM_TRIALS)]), abs=1e-6)
  mem = scores.memorization(loaded.masks, loaded.train_correct).memorization
  assert summary['memorization_counts'] == {
      str(t): int((mem >= t).sum()) for t in (0.1, 0.25, 0.5, 0.75)}
  assert summary['undefined_memorization'] == 0
  assert summary['mean_memorization'] == pytest.approx(mem.mean())
  assert summary['lemma_2_1_bound'] == pytest.approx(
      scores.lemma_2_1_bound(NUM_TRIALS, 0.5))
  _, pair_rows = _read_csv(os.path.join(workdir, 'estimates',
                                        'influence_pairs.csv'))
  assert summary['num_pairs'] == len(pair_rows)
  assert summary['pair_thresholds'] == {'influence': 0.15,
                                        'memorization': 0.25,
                                        'same_label': True}
  split = summary['split_half']
  assert split['trials_per_half'] == [3, 3]
  assert 0.0 <= split['pairs_jaccard'] <= 1.0
  assert -1.0 <= split['memorization_spearman'] <= 1.0
  assert summary['topk'] == 10 and summary['influence_scores'] == 'correct'
  assert summary['influence_scope'] == 'same_label'
  table = '\n'.join(run_output['lines'])
  assert 'Loaded 6 trials of sklearn_digits (1442 train, 355 test)' in table
  pair_lines = [l for l in table.splitlines() if 'high-influence pairs' in l]
  assert len(pair_lines) == 1
  assert pair_lines[0].split()[-1] == str(summary['num_pairs'])


def test_estimator_bindings_through_the_binary(workdir, runs, run_output,
                                               direct_influence):
  out = _ok(runs['bindings'])
  assert 'high-influence pairs' in out
  output_dir = runs['paths']['bindings_out']
  with np.load(os.path.join(output_dir, 'influence_topk.npz')) as npz:
    assert npz['train_indices'].shape == (NUM_TEST, 3)
    assert npz['influence'].shape == (NUM_TEST, 3)
    three = npz['influence']
  infl, _ = direct_influence
  # Scope 'all': the top 3 over every training example.
  np.testing.assert_allclose(three, -np.sort(-infl, axis=0)[:3].T, atol=1e-5)
  dense = np.load(os.path.join(output_dir, 'influence_dense.npy'),
                  mmap_mode='r')
  assert dense.dtype == np.float16 and dense.shape == (NUM_TRAIN, NUM_TEST)
  np.testing.assert_allclose(dense.astype(np.float64), infl, atol=2 ** -10,
                             rtol=0)
  # Without the binding no dense matrix is written.
  assert not os.path.exists(os.path.join(workdir, 'estimates',
                                         'influence_dense.npy'))
  with open(os.path.join(output_dir, 'summary.json')) as f:
    assert json.load(f)['topk'] == 3
  del run_output


@pytest.mark.parametrize('case, messages', [
    ('mixed', ['different training configs', 'trial_000099.npz']),
    ('truncated', ['trial_000002.npz', 'truncated']),
    ('no_records', ['no trial records']),
    ('no_dataset', ['dataset.npz is missing']),
    ('unknown_binding', ['Estimator.top_k']),
    ('dense_within_classes', ['Estimator.dense_influence = True',
                              "Estimator.influence_scope = 'all'"]),
    ('one_trial', ['1 trial record(s)', 'trials']),
])
def test_bad_input_exits_2_with_one_error_line(runs, case, messages):
  rc, out, err = runs[case]
  assert rc == 2, (out[-2000:], err[-2000:])
  assert 'Traceback' not in err
  error_lines = [l for l in err.splitlines() if l.startswith('error:')]
  assert len(error_lines) == 1, err[-2000:]
  for message in messages:
    assert message in error_lines[0], error_lines[0]
  if case == 'truncated':
    assert runs['paths']['damaged'] in error_lines[0]
  if case in runs['paths']:
    assert not os.path.exists(os.path.join(runs['paths'][case], 'estimates',
                                           'memorization.csv'))


def test_train_and_estimate_import_into_one_process():
  assert 'tf_memorization.train' in sys.modules  # imported above
  estimate = importlib.import_module('tf_memorization.estimate')
  assert callable(estimate.main)

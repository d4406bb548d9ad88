"""A workdir is untrusted input, round three: races, re-signed metadata, nulls.

Anyone who can write to a shared workdir can re-sign what they change (the
records' checksum is a plain sha256) and can replace a file between two
reads. Each test plays one such change on a copy of the session's tiny
workdir (conftest.tiny_workdir) or on planted records, through the binaries
as a user runs them, and checks the result: the right numbers, or one
`error:` line naming the file and the fix, exit status 2, and nothing
executed:

  * a workdir's config swapped by another process while it is parsed:
    what gin parses is the text that was checked (no import ever runs);
  * JSON nested 100,000 deep in a record's metadata or W/run.json;
  * re-signed metadata of the wrong type or range, labels that are no
    integers, accuracies and timings out of range, predictions that
    contradict their probabilities, held-out probabilities that are no
    softmax;
  * accuracies are derived from the predictions, whatever the metadata
    says;
  * a null over a sample of the training examples when the family sits
    in a block the sample would skip;
  * the binaries print none of TensorFlow's C++ log lines.
"""

import json
import os
import shutil
import subprocess
import sys
import uuid

import gin
import numpy as np
import pytest

from tf_memorization.core import config
from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.estimation import pipeline
from tf_memorization import inspect_workdir
from tf_memorization.reporting import images
from tf_memorization.stats import masks as masks_lib
from tf_memorization.training import runs
from tf_memorization.training import trainer
from tf_memorization.workdir import loading
from tf_memorization.workdir import records
from tf_memorization.workdir import signatures

from conftest import (REPO, LabelsDataset, LabelsSplit, error_line,
                      read_npz, rewrite_record, run_in_process)

QUIET = ['Estimator.report = False', 'Estimator.planner = False',
         'Estimator.convergence = False', 'Estimator.split_half = False']


@pytest.fixture
def workdir(tiny_workdir, tmp_path):
  path = str(tmp_path / 'w')
  shutil.copytree(tiny_workdir, path)
  return path


def estimate(workdir, *bindings):
  return run_in_process(lambda: pipeline.run(
      workdir, gin_bindings=[*QUIET, 'Estimator.null_permutations = 0',
                             *bindings], log=print))


def inspect(workdir):
  return run_in_process(
      lambda: print(inspect_workdir.summarize(workdir)))


# --------------------------------------------------------------------------
# A workdir's config swapped while it is parsed


SWAPPER = r'''
import os, sys
target, good, evil = sys.argv[1:4]
i = 0
while True:
  temporary = f'{target}.swap{i % 2}'
  if os.path.exists(temporary):
    os.remove(temporary)
  os.link(evil if i % 2 else good, temporary)
  os.rename(temporary, target)
  i += 1
'''


@pytest.mark.parametrize('parse', ['estimate', 'report'])
def test_a_config_swapped_between_check_and_parse_never_imports(
    workdir, tmp_path, monkeypatch, parse):
  """Another process swaps W/operative_config.gin between its real text
  and the same text plus an import (hard link + rename, as fast as it can)
  while the binaries' config parse runs 300 times: the import never runs;
  each parse either parses the real text or refuses the import."""
  module = f'planted_{uuid.uuid4().hex}'
  marker = tmp_path / 'imported'
  (tmp_path / f'{module}.py').write_text(
      f'open({str(marker)!r}, "a").write("imported\\n")\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  target = os.path.join(workdir, files.CONFIG_FILE)
  good, evil = str(tmp_path / 'good.gin'), str(tmp_path / 'evil.gin')
  shutil.copy(target, good)
  with open(good) as f:
    text = f.read()
  with open(evil, 'w') as f:
    f.write(text + f'\nimport {module}\n')
  if parse == 'estimate':
    run = lambda: pipeline.configure(workdir)  # pylint: disable=unnecessary-lambda-assignment
  else:
    run = lambda: images.parse_config([target], [])  # pylint: disable=unnecessary-lambda-assignment
  swapper = subprocess.Popen([sys.executable, '-c', SWAPPER, target, good,
                              evil])
  parsed = refused = 0
  try:
    for _ in range(300):
      try:
        run()
        parsed += 1
      except errors.UserError as e:
        assert f"holds 'import {module}'" in str(e), e
        refused += 1
      finally:
        gin.clear_config()
  finally:
    swapper.kill()
    swapper.wait()
  assert module not in sys.modules
  assert not marker.exists()
  # The swaps raced the parses both ways: the test saw both texts.
  assert parsed > 0 and refused > 0, (parsed, refused)


def test_the_report_shows_the_config_it_parsed(workdir):
  texts = images.parse_config(
      [os.path.join(workdir, files.CONFIG_FILE)], [])
  with open(os.path.join(workdir, files.CONFIG_FILE)) as f:
    assert list(texts.values()) == [f.read()]


# --------------------------------------------------------------------------
# JSON a workdir holds: bounded depth and size


def _deep_metadata(path):
  """Replaces a record's metadata with 100,000 nested lists (no re-signing:
  it is parsed before the checksum is checked)."""
  arrays = read_npz(path)
  arrays['metadata'] = np.array('[' * 100_000 + ']' * 100_000)
  with open(path, 'wb') as f:
    np.savez(f, **arrays)


@pytest.mark.parametrize('binary', ['estimate', 'inspect'])
def test_deeply_nested_record_metadata_is_one_error_line(workdir, binary):
  _deep_metadata(records.record_path(workdir, 2))
  line = error_line(*(estimate(workdir) if binary == 'estimate'
                      else inspect(workdir)))
  assert 'trial_000002.npz' in line and 'nested deeper' in line
  assert 'rerun the train binary' in line


@pytest.mark.parametrize('binary', ['estimate', 'inspect'])
def test_a_deeply_nested_run_file_is_one_error_line(workdir, binary):
  with open(records.run_file_path(workdir), 'w') as f:
    f.write('{"fingerprint": ' + '[' * 100_000 + ']' * 100_000 + '}')
  line = error_line(*(estimate(workdir) if binary == 'estimate'
                      else inspect(workdir)))
  assert 'run.json' in line and 'nested deeper' in line
  assert 'delete it' in line


def test_a_json_of_more_than_its_bound_is_refused(workdir):
  with open(records.run_file_path(workdir), 'w') as f:
    f.write('{"fingerprint": "' + 'x' * (2 << 20) + '"}')
  line = error_line(*inspect(workdir))
  assert 'run.json holds 2,097,' in line and 'bytes of JSON' in line


# --------------------------------------------------------------------------
# Re-signed metadata: every value checked before it is used


@pytest.mark.parametrize('field, value, message', [
    ('metrics', None, "'metrics' is None, not a JSON object"),
    ('metrics', [1, 2], "'metrics' is [1, 2], not a JSON object"),
    ('subset_ratio', '0.5', "'subset_ratio' is '0.5', not a number in"),
    ('num_trials', 'four', "'num_trials' is 'four', not a positive"),
    ('diverged', 3, "'diverged' is 3, not null or a reason"),
    ('seed', 1.5, "'seed' is 1.5, not a non-negative integer"),
    ('versions', {'numpy': 2}, "'versions' is {'numpy': 2}"),
])
@pytest.mark.parametrize('binary', ['estimate', 'inspect'])
def test_resigned_metadata_of_the_wrong_type_is_one_error_line(
    workdir, binary, field, value, message):
  rewrite_record(records.record_path(workdir, 1), metadata={field: value})
  line = error_line(*(estimate(workdir) if binary == 'estimate'
                      else inspect(workdir)))
  assert 'trial_000001.npz' in line and message in line, line


@pytest.mark.parametrize('binary', ['estimate', 'inspect'])
def test_resigned_metadata_without_metrics_is_one_error_line(workdir, binary):
  path = records.record_path(workdir, 1)
  arrays = read_npz(path)
  meta = json.loads(str(arrays.pop('metadata')))
  del meta['metrics']
  meta = signatures.sign(arrays, meta)
  arrays['metadata'] = np.array(json.dumps(meta, sort_keys=True))
  with open(path, 'wb') as f:
    np.savez(f, **arrays)
  line = error_line(*(estimate(workdir) if binary == 'estimate'
                      else inspect(workdir)))
  assert "trial_000001.npz: its metadata field 'metrics' is None" in line


@pytest.mark.parametrize('metric, value', [
    ('test_accuracy', -3.0), ('train_accuracy', 5.0),
    ('train_seconds', -1e300), ('setup_seconds', float('inf')),
    ('predict_seconds', 'fast'), ('subset_size', 10 ** 9),
    ('final_loss', -1.0)])
def test_resigned_metrics_out_of_range_are_refused(workdir, metric, value):
  path = records.record_path(workdir, 3)
  metrics = dict(json.loads(str(read_npz(path)['metadata']))['metrics'])
  metrics[metric] = value
  rewrite_record(path, metadata={'metrics': metrics})
  for run in (estimate, inspect):
    line = error_line(*run(workdir))
    assert f"trial_000003.npz: its metadata field 'metrics.{metric}'" in line


@pytest.mark.slow
def test_accuracies_are_derived_from_the_predictions(workdir):
  """A record re-signed with plausible but wrong accuracies changes
  nothing: summary.json's means come from the predictions."""
  labels = read_npz(os.path.join(workdir, files.DATASET_FILE))
  expected = {'train': [], 'heldout': [], 'test': []}
  for t in range(4):
    path = records.record_path(workdir, t)
    arrays = read_npz(path)
    metrics = dict(json.loads(str(arrays['metadata']))['metrics'])
    metrics.update(train_accuracy=0.01, heldout_accuracy=0.02,
                   test_accuracy=0.03)
    rewrite_record(path, metadata={'metrics': metrics})
    mask = np.unpackbits(arrays['mask'],
                         count=len(arrays['train_pred'])).astype(bool)
    correct = arrays['train_pred'] == labels['train_labels']
    expected['train'].append(correct[mask].mean())
    expected['heldout'].append(correct[~mask].mean())
    expected['test'].append(np.mean(arrays['test_pred']
                                    == labels['test_labels']))
  summary = pipeline.run(workdir, gin_bindings=QUIET, log=lambda _: None)
  for key, values in expected.items():
    assert summary[f'mean_{key}_accuracy'] == pytest.approx(np.mean(values),
                                                            abs=1e-12)
  assert 0.3 < summary['mean_test_accuracy'] < 1  # not the 0.03 re-signed
  status, out, _ = inspect(workdir)
  assert status == 0
  assert f'test {summary["mean_test_accuracy"]:.4f}' in out


def _resign_dataset(workdir, **replace):
  """Rewrites W/dataset.npz with arrays replaced and its checksum
  recomputed as the writer computes it."""
  path = os.path.join(workdir, files.DATASET_FILE)
  arrays = read_npz(path)
  info = json.loads(str(arrays.pop('info')))
  arrays.update(replace)
  identity = {k: v for k, v in arrays.items() if 'source_ids' not in k}
  info['checksum'] = signatures.arrays_digest(identity)
  # The records name the dataset's checksum: re-sign them with the new one.
  for t in range(4):
    rewrite_record(records.record_path(workdir, t),
                   metadata={'dataset': {**json.loads(str(read_npz(
                       records.record_path(workdir, t))['metadata']))
                                         ['dataset'],
                                         'checksum': info['checksum']}})
  arrays['info'] = np.array(json.dumps(info, sort_keys=True))
  with open(path, 'wb') as f:
    np.savez(f, **arrays)


@pytest.mark.parametrize('make, message', [
    (lambda labels: labels.astype(str), "train_labels are <U"),
    (lambda labels: labels + 0.5, 'train_labels are float64, not integer'),
])
def test_resigned_labels_that_are_no_class_indices(workdir, make, message):
  path = os.path.join(workdir, files.DATASET_FILE)
  labels = read_npz(path)['train_labels']
  _resign_dataset(workdir, train_labels=make(labels))
  for run in (estimate, inspect):
    line = error_line(*run(workdir))
    assert 'dataset.npz' in line and message in line, line
    assert 'writes it again from the data' in line


def test_resigned_predictions_that_contradict_their_probabilities(workdir):
  """A prediction flipped to right without its probability and margin: no
  set of logits gives that."""
  path = records.record_path(workdir, 0)
  arrays = read_npz(path)
  labels = read_npz(os.path.join(workdir, files.DATASET_FILE))[
      'train_labels']
  wrong = np.flatnonzero(arrays['train_pred'] != labels)
  pred = arrays['train_pred'].copy()
  pred[wrong[:3]] = labels[wrong[:3]]
  rewrite_record(path, train_pred=pred)
  line = error_line(*estimate(workdir))
  assert 'trial_000000.npz: 3 of its train predictions contradict' in line


@pytest.mark.parametrize('change, message', [
    ('halved', 'do not sum to 1 (e.g. 0.5'),
    ('nine', 'do not sum to 1 (e.g. 8.99'),
    ('wrong_class', 'are largest at another class than'),
])
def test_resigned_heldout_probabilities_that_are_no_softmax(
    workdir, change, message):
  path = records.record_path(workdir, 2)
  arrays = read_npz(path)
  probs = arrays['heldout_probs'].astype(np.float32)
  mask = np.unpackbits(arrays['mask'], count=len(arrays['train_pred']))
  pred = arrays['train_pred'][mask == 0]
  if change == 'halved':
    probs *= 0.5  # every row sums to 1/2
  elif change == 'nine':
    probs[:5] = 0.9  # ten classes: rows that sum to 9, each value in [0, 1]
  else:  # all its mass on a class the model did not predict
    probs[0] = 0
    probs[0, (pred[0] + 1) % probs.shape[1]] = 1.0
  rewrite_record(path, heldout_probs=probs.astype(np.float16))
  line = error_line(*estimate(workdir))
  assert 'trial_000002.npz' in line and message in line, line


def _predictions(right, labels):
  """Predictions, probabilities and margins of 0/1 correctness (two
  classes), as one set of logits would give them."""
  return (np.where(right, labels, 1 - labels),
          np.where(right, 0.9, 0.1).astype(np.float32),
          np.where(right, 2.0, -2.0).astype(np.float32))


def _write_planted(path, t, mask, seed, info, correct, test_correct, meta):
  train_labels = np.arange(len(mask)) % 2
  test_labels = np.arange(len(test_correct)) % 2
  train = _predictions(correct, train_labels)
  test = _predictions(test_correct, test_labels)
  result = trainer.TrialResult(
      train_pred=train[0], train_prob=train[1], train_margin=train[2],
      test_pred=test[0], test_prob=test[1], test_margin=test[2], metrics={})
  records.write_record(path, t, mask, result, {
      'fingerprint': 'planted', 'seed': seed, 'dataset': info, **meta})


def _two_class_dataset(path, n, n_test):
  return records.write_dataset_file(path, LabelsDataset(
      'planted', LabelsSplit(np.arange(n) % 2,
                             np.array([f'tr{i}' for i in range(n)])),
      LabelsSplit(np.arange(n_test) % 2,
                  np.array([f'te{j}' for j in range(n_test)])), 2))


def test_an_experiment_records_planned_fields_must_be_its_plans(tmp_path):
  """A leave-one-out model's `left_out` (what the experiment reads back
  from the records) re-signed to another example is refused, checked
  against the jobs in memory and against the folder's plan.json."""
  path = str(tmp_path / 'experiments' / 'loo')
  n, n_test = 40, 10
  info = _two_class_dataset(path, n, n_test)
  jobs = []
  for index in range(3):
    mask = np.ones(n, bool)
    mask[index] = False
    jobs.append(runs.Job(index, mask, 100 + index, {'left_out': index,
                                                    'repeat': 0}))
    _write_planted(path, index, mask, 100 + index, info, np.ones(n, bool),
                   np.ones(n_test, bool),
                   {'design': None, 'left_out': index, 'repeat': 0})
  with open(os.path.join(path, files.PLAN_FILE), 'w') as f:
    json.dump({'fingerprint': 'planted', 'jobs': [
        {'index': j.index, 'seed': j.seed,
         'mask': records.mask_digest(j.mask), **j.metadata} for j in jobs]},
              f)
  assert loading.load(path, jobs=jobs).num_trials == 3
  assert loading.load(path, jobs='plan').num_trials == 3
  rewrite_record(records.record_path(path, 1), metadata={'left_out': 2})
  for planned in (jobs, 'plan'):
    with pytest.raises(errors.RecordError,
                       match="trial_000001.npz: its metadata field "
                       "'left_out' is 2, but its design \\(or plan\\) "
                       "says 1"):
      loading.load(path, jobs=planned)


# --------------------------------------------------------------------------
# The null over a sample of the training examples


def _one_memorized_example(path, n=5000, n_test=200, trials=16, index=3000):
  """Planted records of a model that memorizes one example (at `index`) and
  gets every other right, in and out: the pair family sits in one block."""
  rng = np.random.default_rng(0)
  info = _two_class_dataset(path, n, n_test)
  design = masks_lib.SubsetDesign(num_trials=trials, subset_ratio=0.5,
                                  design='balanced', seed=0)
  for t in range(trials):
    mask = design.mask(n, t)
    correct = np.ones(n, bool)
    correct[index] = mask[index]
    _write_planted(path, t, mask, design.trial_seed(t), info, correct,
                   rng.random(n_test) < 0.8,
                   {'design': design.fingerprint_fields(), 'subset_ratio': 0.5,
                    'num_trials': trials})


def test_a_null_sample_covers_a_family_in_one_block(tmp_path):
  """The family (one memorized example's pairs) lies in the second of
  three blocks; the null on half the blocks covers it, not 0% of it."""
  path = str(tmp_path / 'w')
  _one_memorized_example(path)
  status, out, err = estimate(path, 'Estimator.null_permutations = 1',
                              'Estimator.null_sample = 0.5',
                              'Estimator.block_size = 2048')
  assert status == 0, err[-3000:]
  with open(os.path.join(path, 'estimates', 'summary.json')) as f:
    summary = json.load(f)
  assert summary['trust']['memorized']['raw'] == 1
  assert summary['trust']['pairs']['family'] == 100  # its label's tests
  assert summary['trust']['null']['family_covered'] == 1.0
  del out


# --------------------------------------------------------------------------
# The binaries print only the project's lines


@pytest.mark.slow
def test_the_binaries_print_no_tensorflow_log_lines(tmp_path):
  """Run as docs/operations.md says (python -m ...), not through ./run.sh: only
  the project's lines (here its one error line); TF_MEMORIZATION_VERBOSE=1
  shows TensorFlow's too, so the lines are there to filter on this
  machine."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('TF_CPP_MIN_LOG_LEVEL', 'TF_MEMORIZATION_VERBOSE')}
  command = [sys.executable, '-m', 'tf_memorization.inspect_workdir',
             f'--workdir={tmp_path}/none']
  quiet = subprocess.run(command, cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300, check=False)
  assert quiet.returncode == 2
  assert quiet.stdout == ''
  assert quiet.stderr.startswith(f'error: {tmp_path}/none/dataset.npz is '
                                 'missing') and quiet.stderr.count('\n') == 1
  loud = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                        env=dict(env, TF_MEMORIZATION_VERBOSE='1'),
                        timeout=300, check=False)
  assert loud.returncode == 2
  lines = loud.stderr.splitlines()
  assert any(line.startswith(('I0000', 'W0000', 'E0000', 'WARNING: All log'))
             for line in lines), loud.stderr
  assert quiet.stderr.rstrip('\n') in lines


def test_a_metadata_member_that_would_expand_hugely_is_refused(workdir):
  """The train binary reads each record's metadata member alone (to see its
  fingerprint) before any checksum: a member whose zip directory declares
  a GiB is refused before anything is decompressed."""
  import io  # pylint: disable=g-import-not-at-top
  import struct  # pylint: disable=g-import-not-at-top
  import zipfile  # pylint: disable=g-import-not-at-top
  path = records.record_path(workdir, 0)
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as archive:
    archive.writestr('metadata.npy', b'\0' * 4096)
  payload = bytearray(buffer.getvalue())
  # The central directory's uncompressed size (offset 24 of its entry).
  entry = payload.index(b'PK\x01\x02')
  struct.pack_into('<I', payload, entry + 24, 1 << 30)
  with open(path, 'wb') as f:
    f.write(payload)
  with pytest.raises(errors.RecordError,
                     match='declares a metadata member of 1,073,741,824'):
    records.read_metadata(path)

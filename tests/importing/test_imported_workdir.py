"""What the other binaries do with an imported workdir: inspect_workdir
says where its trials came from (and gives no plan without train
predictions), and the train binary refuses to add trials to it, in one
line, touching nothing."""

import os

import numpy as np
import pytest

from tf_memorization import inspect_workdir
from tf_memorization import train
from tf_memorization.importing import run
from tf_memorization.importing import sources
from tf_memorization.importing import writer as writer_lib

from conftest import GIN_DIR, TINY_BINDINGS, error_line, run_in_process
from conftest import snapshot


def _writer_workdir(path, k=8, n=64, n_test=24, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  train_labels = rng.integers(0, classes, n)
  test_labels = rng.integers(0, classes, n_test)
  with writer_lib.TrialWriter(path, train_labels, test_labels,
                              name='loop') as writer:
    for t in range(k):
      writer.add(t, rng.random(n) < 0.5,
                 rng.normal(size=(n, classes)).astype(np.float16),
                 rng.normal(size=(n_test, classes)).astype(np.float16))
  return path


def _margins_workdir(folder, k=8, n=64, n_test=24, classes=3, seed=1):
  rng = np.random.default_rng(seed)
  files = {'masks': rng.random((k, n)) < 0.5,
           'margins': rng.normal(size=(k, n_test)).astype(np.float16),
           'train_labels': rng.integers(0, classes, n),
           'test_labels': rng.integers(0, classes, n_test)}
  for name, array in files.items():
    np.save(os.path.join(folder, f'{name}.npy'), array)
  path = os.path.join(folder, 'W')
  source = sources.DatamodelsSource(
      *(os.path.join(folder, f'{name}.npy') for name in
        ('masks', 'margins', 'train_labels', 'test_labels')))
  run.import_trials(path, source, log=lambda _: None)
  return path


def test_inspect_says_where_the_trials_came_from(tmp_path):
  text = inspect_workdir.summarize(_writer_workdir(str(tmp_path / 'loop')))
  assert 'imported from writer (loop)' in text
  assert 'training time: not recorded' in text
  assert 'Planner:' in text  # a plan: the records hold train predictions

  text = inspect_workdir.summarize(_margins_workdir(str(tmp_path)))
  assert ('imported from datamodels (datamodels): no train predictions, so '
          'no memorization and no plan') in text
  assert 'train (in subset) nan, held-out nan' in text
  assert 'Planner:' not in text and 'mem stderr' not in text


def test_the_train_binary_refuses_an_imported_workdir(tmp_path,
                                                      digits_data_dir):
  workdir = _writer_workdir(str(tmp_path / 'loop'))
  before = snapshot(workdir)
  status, out, err = run_in_process(lambda: train.run(
      workdir, [os.path.join(GIN_DIR, 'tiny.gin')], list(TINY_BINDINGS),
      data_dir=digits_data_dir))
  line = error_line(status, out, err)
  assert f'{workdir} holds trials imported from writer (loop' in line
  assert 'Train into a new --workdir' in line
  assert snapshot(workdir) == before


def test_writers_at_once_share_a_workdir(tmp_path):
  """Four writers start together on one new workdir (threads: the same
  exclusive creates as processes), each adding its own trials: every
  record loads and is checked against its own plan entry; a trial two of
  them write with different masks is refused to the second."""
  import concurrent.futures  # pylint: disable=g-import-not-at-top
  from tf_memorization.core import errors  # pylint: disable=g-import-not-at-top
  from tf_memorization.workdir import loading  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  n, n_test, classes, k = 50, 20, 3, 16
  train_labels = rng.integers(0, classes, n)
  test_labels = rng.integers(0, classes, n_test)
  masks = rng.random((k, n)) < 0.5
  logits = rng.normal(size=(k, n + n_test, classes)).astype(np.float32)
  workdir = str(tmp_path / 'shared')

  def worker(w):
    writer = writer_lib.TrialWriter(workdir, train_labels, test_labels,
                                    name='cluster')
    for t in range(w, k, 4):
      assert writer.add(t, masks[t], logits[t, :n], logits[t, n:])

  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    list(pool.map(worker, range(4)))
  loaded = loading.load(workdir)
  np.testing.assert_array_equal(loaded.trial_indices, np.arange(k))
  np.testing.assert_array_equal(loaded.masks, masks)
  writer = writer_lib.TrialWriter(workdir, train_labels, test_labels,
                                  name='cluster')
  assert not writer.add(3, masks[3], logits[3, :n], logits[3, n:])
  with pytest.raises(errors.UserError, match='Trial 3 .* another mask'):
    writer.add(3, ~masks[3], logits[3, :n], logits[3, n:])


def test_a_record_without_its_plan_entry_is_refused(tmp_path):
  """An imported record copied in from a workdir of the same models, or
  whose plan entry was deleted or altered, does not load."""
  from tf_memorization.core import errors  # pylint: disable=g-import-not-at-top
  from tf_memorization.workdir import loading  # pylint: disable=g-import-not-at-top
  workdir = _writer_workdir(str(tmp_path / 'a'))
  entry = os.path.join(workdir, 'plan', 'trial_000002.json')
  text = open(entry).read()
  os.remove(entry)
  with pytest.raises(errors.RecordError, match='trial_000002.json .*missing'):
    loading.load(workdir)
  open(entry, 'w').write(text.replace('"index": 2', '"index": 5'))
  with pytest.raises(errors.RecordError, match='not the plan entry of trial'):
    loading.load(workdir)
  other = _writer_workdir(str(tmp_path / 'b'), seed=1)  # other masks
  os.replace(os.path.join(other, 'plan', 'trial_000002.json'), entry)
  with pytest.raises(errors.RecordError, match='mask or seed'):
    loading.load(workdir)


def test_the_report_of_imported_trials(tmp_path):
  """The report says why the retraining sections and the images are
  absent, rather than naming bindings that cannot help."""
  from tf_memorization.estimation import pipeline  # pylint: disable=g-import-not-at-top
  workdir = _writer_workdir(str(tmp_path / 'loop'))
  pipeline.run(workdir, gin_bindings=['Estimator.null_permutations = 0'],
               log=lambda _: None)
  page = open(os.path.join(workdir, 'report', 'index.html')).read()
  assert ("the trials of this workdir were imported from another trainer, "
          'so they do not run') in page
  assert "Estimator.experiments = ('removal',)" not in page  # no binding
  assert 'label_noise.fraction' not in page
  assert 'imported with labels and predictions only' in page

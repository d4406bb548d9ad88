"""A workdir is untrusted input: what it holds is checked, never obeyed.

Each test plays one way a careless or hostile user (or a race between
workers) can make a workdir hold something other than the records of one
config, and checks that the binaries either give exactly the right records or
stop with one `error:` line that names the file and the fix:

  * a checkpoint is resumed only by the config that wrote it;
  * the first process into a workdir fixes its config (W/run.json), also
    when two configs start at the same moment;
  * a workdir's config cannot choose where files are read or written;
  * the checksum covers the metadata, and masks, seeds and values are
    checked against the design and the dataset;
  * a diverged training is flagged by the train binary and not mixed in
    silently by the estimator;
  * wrong-typed bindings, FIFOs, later corrupt records, records of other
    models in an experiment folder, and a failed estimate.

The runs are the real binaries (in process where the process does not
matter, as subprocesses where it does) on the offline digits with
gin_configs/tiny.gin.
"""

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tf_memorization.core import files
from tf_memorization.core import storage
from tf_memorization.data import pipelines
from tf_memorization.estimation import pipeline
from tf_memorization import train
from tf_memorization.training import models
from tf_memorization.training import strategy as strategy_lib
from tf_memorization.training import trainer as trainer_lib
from tf_memorization.workdir import loading
from tf_memorization.workdir import records
from tf_memorization.workdir import signatures

from conftest import (REPO, TINY_BINDINGS, error_line, read_npz,
                      rewrite_record, run_in_process, snapshot, train_tiny)

TINY = 'gin_configs/tiny.gin'
BINDINGS = list(TINY_BINDINGS)
NUM_TRIALS, NUM_CLASSES = 4, 10
LIMITED = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
"""


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')


def train_command(workdir, data_dir, *args):
  return [sys.executable, '-m', 'tf_memorization.train', f'--workdir={workdir}',
          f'--gin_file={TINY}', f'--data_dir={data_dir}',
          *[f'--gin_bindings={b}' for b in BINDINGS], *args]


def estimate_command(workdir, *args):
  return [sys.executable, '-m', 'tf_memorization.estimate',
          f'--workdir={workdir}', '--gin_bindings=Estimator.report = False',
          *args]


def run_binary(command, timeout=240):
  proc = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True,
                        text=True, timeout=timeout, check=False)
  return proc.returncode, proc.stdout, proc.stderr


def train_main(workdir, data_dir, bindings=(), trials=None):
  return lambda: train.run(workdir, [TINY], BINDINGS + list(bindings),
                           trials=trials, data_dir=data_dir,
                           log=lambda _: None)


def estimate_main(workdir, bindings=(), data_dir=None):
  return lambda: pipeline.run(
      workdir, gin_bindings=['Estimator.report = False', *bindings],
      data_dir=data_dir, log=print)


@pytest.fixture
def trained(tiny_workdir):
  """The 4 trials of tiny.gin (balanced design), trained once a session."""
  return tiny_workdir


@pytest.fixture
def workdir(trained, tmp_path):
  """A copy of the trained workdir for one test to damage."""
  path = str(tmp_path / 'w')
  shutil.copytree(trained, path)
  return path


# --------------------------------------------------------------------------
# 1. A checkpoint is resumed only by the config that wrote it


@pytest.mark.slow
def test_a_checkpoint_of_another_config_is_not_resumed(digits_data_dir,
                                                       tmp_path):
  digits = pipelines.load_dataset('sklearn_digits', data_dir=digits_data_dir)
  trainer = trainer_lib.TrialTrainer(
      digits, strategy_lib.get_strategy('one_device'),
      model_fn=lambda **kw: models.small_resnet(width=4, **kw), epochs=3,
      batch_size=64, eval_batch_size=512, checkpoint_seconds=0)
  mask = np.random.default_rng(0).random(len(digits.train)) < 0.5
  path = str(tmp_path / 'trial.npz')
  clean = trainer.train_trials([mask], [5])[0]
  # Config A leaves its checkpoint of epoch 2 (as a kill would).
  trainer.train_trials([mask], [5], checkpoints=[path], checkpoint_tag='A')
  assert os.path.exists(path)
  # Config B (same seed and mask) starts from scratch: it computes what a
  # clean run computes, not a continuation of A's weights.
  other = trainer.train_trials([mask], [5], checkpoints=[path],
                               checkpoint_tag='B')[0]
  assert other.metrics['resumed_from_epoch'] == 0
  for field in ('train_pred', 'train_prob', 'test_margin'):
    np.testing.assert_array_equal(getattr(other, field), getattr(clean, field))
  # The checkpoint of B's own run (left at epoch 2) resumes B.
  again = trainer.train_trials([mask], [5], checkpoints=[path],
                               checkpoint_tag='B')[0]
  assert again.metrics['resumed_from_epoch'] == 2
  np.testing.assert_array_equal(again.train_margin, clean.train_margin)


@pytest.mark.slow
def test_after_a_kill_another_config_is_refused_before_training(
    tmp_path, digits_data_dir):
  workdir = str(tmp_path / 'w')
  slow = ['--gin_bindings=TrialTrainer.epochs = 8',
          '--gin_bindings=TrialTrainer.checkpoint_seconds = 0',
          '--gin_bindings=SubsetDesign.num_trials = 2']
  process = subprocess.Popen(train_command(workdir, digits_data_dir, *slow),
                             cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  checkpoints = os.path.join(workdir, 'checkpoints')
  start = time.time()
  while not (os.path.isdir(checkpoints) and os.listdir(checkpoints)):
    assert process.poll() is None and time.time() - start < 240
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not records.list_records(workdir)  # killed before any record
  before = snapshot(workdir)
  line = error_line(*run_binary(train_command(
      workdir, digits_data_dir, *slow,
      '--gin_bindings=TrialTrainer.base_learning_rate = 0.05')))
  assert files.RUN_FILE in line and 'another config' in line, line
  assert 'Use a new --workdir' in line
  assert snapshot(workdir) == before  # nothing trained, nothing removed


# --------------------------------------------------------------------------
# 2. The first process into a workdir fixes its config, atomically


@pytest.mark.slow
def test_two_configs_racing_into_an_empty_workdir(tmp_path, digits_data_dir):
  workdir = str(tmp_path / 'w')
  processes = [subprocess.Popen(
      train_command(workdir, digits_data_dir, f'--trials={trials}',
                    f'--gin_bindings=TrialTrainer.base_learning_rate = {lr}'),
      cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for trials, lr in (('0:2', 0.1), ('2:4', 0.05))]
  results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read())
             for p in processes]
  statuses = sorted(status for status, _, _ in results)
  assert statuses == [0, 2], [(s, e[-2000:]) for s, _, e in results]
  refused = next(r for r in results if r[0] == 2)
  assert files.RUN_FILE in error_line(*refused)
  fixed = records.read_run_file(workdir)['fingerprint']
  found = records.list_records(workdir)
  assert len(found) == 2
  assert {records.read_metadata(p)['fingerprint'] for p in found.values()} == {
      fixed}
  with open(os.path.join(workdir, files.CONFIG_FILE)) as f:
    assert f.readline().strip() == f'# fingerprint: {fixed}'
  assert loading.load(workdir).fingerprint == fixed


def test_of_many_writers_of_one_path_exactly_one_wins(tmp_path):
  path = str(tmp_path / 'trials' / 'trial_000000.npz')
  workdir = str(tmp_path / 'w')
  count = 16
  barrier = threading.Barrier(count)

  def write(i):
    barrier.wait()
    return storage.atomic_write(path, f'payload {i}'.encode())

  def fix(i):
    barrier.wait()
    return records.fix_config(workdir, f'fingerprint{i}')

  with concurrent.futures.ThreadPoolExecutor(count) as pool:
    won = list(pool.map(write, range(count)))
  assert won.count(True) == 1
  with open(path, 'rb') as f:
    assert f.read() == f'payload {won.index(True)}'.encode()
  with concurrent.futures.ThreadPoolExecutor(count) as pool:
    fixed = set(pool.map(fix, range(count)))
  assert len(fixed) == 1
  assert records.read_run_file(workdir)['fingerprint'] == fixed.pop()
  assert not [n for n in os.listdir(tmp_path / 'trials') if '.tmp-' in n]


# --------------------------------------------------------------------------
# 3. Nothing in a workdir chooses a path


def test_the_workdir_config_holds_no_location(trained):
  with open(os.path.join(trained, files.CONFIG_FILE)) as f:
    text = f.read()
  assert 'data_dir' not in text.replace('(data_dir)', '')
  assert 'load_dataset.name' in text  # the bindings that matter are kept


@pytest.mark.slow
def test_the_fingerprint_does_not_depend_on_the_data_dir(tmp_path,
                                                         digits_data_dir):
  # gin wraps a long value onto a continuation line; the fingerprint must
  # leave the whole binding out, not only its first line.
  deep = tmp_path / ('a_folder_with_a_long_name_' * 4)
  deep.symlink_to(digits_data_dir)
  fingerprints = [
      train.run(str(tmp_path / name), [TINY], BINDINGS, trials='0:1',
                data_dir=data_dir, log=lambda _: None).fingerprint
      for name, data_dir in (('short', digits_data_dir), ('deep', str(deep)))]
  assert fingerprints[0] == fingerprints[1]


@pytest.mark.parametrize('binding', [
    'Estimator.report_dir = {elsewhere!r}',
    'load_dataset.data_dir = {elsewhere!r}',
    'some_scope/load_dataset.data_dir = {elsewhere!r}',
    'tf_memorization.estimation.settings.Estimator.report_dir = \\\n    {elsewhere!r}',
])
def test_a_workdir_config_that_chooses_a_location_is_refused(
    workdir, tmp_path, digits_data_dir, binding):
  elsewhere = str(tmp_path / 'elsewhere')
  config = os.path.join(workdir, files.CONFIG_FILE)
  with open(config, 'a') as f:
    f.write('\n' + binding.format(elsewhere=elsewhere) + '\n')
  before = snapshot(workdir)
  line = error_line(*run_in_process(lambda: pipeline.run(
      workdir, data_dir=digits_data_dir, log=lambda _: None)))
  assert config in line and 'may not choose where files' in line, line
  assert ('data_dir' in line) == ('data_dir' in binding)
  assert not os.path.exists(elsewhere)
  assert snapshot(workdir) == before


# --------------------------------------------------------------------------
# 5. The checksum covers the metadata


def _edit_metadata(path, **fields):
  """Edits metadata fields, keeping the stored checksum (a careless edit)."""
  rewrite_record(path, fix_checksum=False, metadata=fields)


def test_a_copied_record_with_its_trial_index_edited_is_refused(workdir):
  # Trial 3 is replaced by a copy of trial 1 that claims to be trial 3: a
  # duplicated trial, which would count twice.
  copy = records.record_path(workdir, 3)
  shutil.copy(records.record_path(workdir, 1), copy)
  _edit_metadata(copy, trial_index=3)
  with pytest.raises(records.RecordError, match='trial_000003.npz fails its '
                     'checksum'):
    loading.load(workdir)
  # Re-signed, it is still refused: its mask and seed are trial 1's.
  rewrite_record(copy)
  with pytest.raises(records.RecordError,
                     match='trial_000003.npz: its mask or seed'):
    loading.load(workdir)
  os.remove(copy)
  assert loading.load(workdir).num_trials == NUM_TRIALS - 1


@pytest.mark.parametrize('field, value', [
    ('fingerprint', 'f00dfeedf00dfeed'), ('seed', 12345),
    ('diverged', 'edited'), ('dataset', {'name': 'other'}),
    ('design', {'design': 'independent', 'subset_ratio': 0.5, 'seed': 0}),
    ('metrics', {'test_accuracy': 1.0})])
def test_editing_the_metadata_fails_the_checksum(workdir, field, value):
  path = records.record_path(workdir, 2)
  _edit_metadata(path, **{field: value})
  with pytest.raises(records.RecordError,
                     match='trial_000002.npz fails its checksum'):
    loading.load(workdir)


def test_a_record_resigned_with_another_fingerprint_is_refused(workdir):
  path = records.record_path(workdir, 2)
  rewrite_record(path, metadata={'fingerprint': 'f00dfeedf00dfeed'})
  with pytest.raises(records.RecordError,
                     match='trial_000002.npz was trained with another config'):
    loading.load(workdir)


def _as_format_1(path, **replace):
  """Rewrites a record as the earlier version wrote it (format 1: the
  checksum covers the arrays only)."""
  arrays = read_npz(path)
  meta = json.loads(str(arrays.pop('metadata')))
  arrays.update(replace)
  del meta['diverged']
  meta.update(format_version=1, checksum=signatures.arrays_digest(arrays))
  arrays['metadata'] = np.array(json.dumps(meta, sort_keys=True))
  with open(path, 'wb') as f:
    np.savez(f, **arrays)


def test_a_record_of_format_1_is_refused_until_upgraded(workdir):
  from tf_memorization import inspect_workdir  # pylint: disable=g-import-not-at-top
  before = loading.load(workdir, predictions=True)
  for t in (1, 3):
    _as_format_1(records.record_path(workdir, t))
  with pytest.raises(records.RecordError, match='format 1') as info:
    loading.load(workdir)
  assert '--upgrade_records' in str(info.value)
  lines = []
  assert inspect_workdir.upgrade(workdir, lines.append) == 2
  after = loading.load(workdir, predictions=True)
  for field in ('masks', 'train_pred', 'test_prob', 'train_margin'):
    np.testing.assert_array_equal(getattr(after, field),
                                  getattr(before, field))
  assert [m["format_version"] for m in after.metadata] == [
      records.FORMAT_VERSION] * NUM_TRIALS
  assert inspect_workdir.upgrade(workdir, lines.append) == 0  # nothing left


def test_an_upgrade_refuses_a_format_1_record_that_fails_a_check(workdir):
  from tf_memorization import inspect_workdir  # pylint: disable=g-import-not-at-top
  path = records.record_path(workdir, 2)
  mask = read_npz(path)['mask']
  _as_format_1(path, mask=np.packbits(~np.unpackbits(mask).astype(bool)))
  with open(path, 'rb') as f:
    damaged = f.read()
  with pytest.raises(records.RecordError, match='mask or seed'):
    inspect_workdir.upgrade(workdir, lambda _: None)
  with open(path, 'rb') as f:
    assert f.read() == damaged  # left as it was, still refused


# --------------------------------------------------------------------------
# 6. Values are checked


@pytest.mark.parametrize('field, make, message', [
    ('train_prob', lambda a: np.where(np.arange(len(a)) == 3, np.nan, a),
     'train_prob holds values outside'),
    ('test_prob', lambda a: np.where(np.arange(len(a)) == 0, 1.5, a),
     'test_prob holds values outside'),
    ('test_prob', lambda a: np.where(np.arange(len(a)) == 0, -0.25, a),
     'test_prob holds values outside'),
    ('train_margin', lambda a: np.where(np.arange(len(a)) == 1, np.inf, a),
     'train_margin holds NaN or infinite'),
    ('train_pred', lambda a: np.where(np.arange(len(a)) == 5, NUM_CLASSES, a),
     'train_pred holds classes outside 0..9'),
    ('test_pred', lambda a: np.where(np.arange(len(a)) == 5, -1, a),
     'test_pred holds classes outside'),
    ('mask', lambda a: np.packbits(~np.unpackbits(a).astype(bool)),
     'its mask or seed is not the one trial 1'),
])
def test_values_no_model_computes_are_refused(workdir, field, make, message):
  path = records.record_path(workdir, 1)
  original = read_npz(path)[field]
  rewrite_record(path, **{field: make(original).astype(original.dtype)})
  with pytest.raises(records.RecordError, match=message) as info:
    loading.load(workdir)
  assert 'trial_000001.npz' in str(info.value)


def test_a_record_of_another_seed_is_refused(workdir):
  path = records.record_path(workdir, 0)
  rewrite_record(path, metadata={'seed': 1})
  with pytest.raises(records.RecordError, match='mask or seed'):
    loading.load(workdir)


def _diverge(path):
  """Makes a record what a diverged trial writes: NaN, class 0, flagged."""
  arrays = read_npz(path)
  nan = {f: np.full_like(arrays[f], np.nan) for f in
         ('train_prob', 'test_prob', 'train_margin', 'test_margin')}
  zero = {f: np.zeros_like(arrays[f]) for f in ('train_pred', 'test_pred')}
  rewrite_record(path, metadata={'diverged': 'planted'}, **nan, **zero)


@pytest.mark.slow
def test_diverged_trials_are_refused_or_skipped_with_a_count(
    workdir, digits_data_dir):
  _diverge(records.record_path(workdir, 2))
  before = snapshot(workdir)
  line = error_line(*run_in_process(estimate_main(workdir)))
  assert '1 of the 4 trials' in line and 'diverged' in line, line
  assert "Estimator.diverged_trials = 'skip'" in line
  assert snapshot(workdir) == before
  status, out, err = run_in_process(estimate_main(
      workdir, ["Estimator.diverged_trials = 'skip'"],
      data_dir=digits_data_dir))
  assert status == 0, err[-3000:]
  with open(os.path.join(workdir, 'estimates', 'summary.json')) as f:
    summary = json.load(f)
  assert summary['num_trials'] == NUM_TRIALS - 1
  assert summary['diverged_trials'] == {'policy': 'skip', 'skipped': 1,
                                        'trials': {'2': 'planted'}}
  assert 'diverged trials left out' in out


@pytest.mark.slow
def test_a_diverging_training_is_flagged_by_the_train_binary(
    tmp_path, digits_data_dir):
  workdir = str(tmp_path / 'w')
  lines = []
  summary = train.run(workdir, [TINY],
                      BINDINGS + ['TrialTrainer.base_learning_rate = 1e6',
                                  'SubsetDesign.num_trials = 2'],
                      data_dir=digits_data_dir, log=lines.append)
  assert summary.diverged == [0, 1]
  warnings = [line for line in lines if line.startswith('WARNING')]
  assert len(warnings) == 3, lines  # one per trial, and the run's total
  assert all('diverged' in line for line in warnings)
  loaded = loading.load(workdir, diverged='keep')
  assert sorted(loaded.diverged) == [0, 1]
  assert all(m['diverged'] for m in loaded.metadata)
  line = error_line(*run_in_process(estimate_main(
      workdir, ["Estimator.diverged_trials = 'skip'"])))
  assert 'Every one of the 2 trials' in line and 'diverged' in line


# --------------------------------------------------------------------------
# 8. The smaller ones


@pytest.mark.parametrize('binding, message', [
    ('TrialTrainer.eval_batch_size = 0',
     'TrialTrainer.eval_batch_size must be >= 1, got 0'),
    ("TrialTrainer.epochs = '15'",
     "TrialTrainer.epochs must be an integer, got '15' (a str)"),
    ('TrialTrainer.batch_size = 2.5', 'TrialTrainer.batch_size must be an '
     'integer'),
    ('TrialTrainer.momentum = 1.5', 'TrialTrainer.momentum must be < 1'),
    ("TrialTrainer.base_learning_rate = 'fast'",
     'TrialTrainer.base_learning_rate must be a number'),
    ("small_resnet.width = '8'", 'small_resnet.width must be an integer'),
    ("SubsetDesign.seed = 'x'", 'SubsetDesign.seed must be an integer'),
])
def test_a_binding_of_the_wrong_type_or_range_names_itself(
    tmp_path, digits_data_dir, binding, message):
  workdir = str(tmp_path / 'w')
  line = error_line(*run_in_process(train_main(workdir, digits_data_dir,
                                               [binding])))
  assert message in line, line
  assert not os.path.exists(workdir)


@pytest.mark.parametrize('binding, message', [
    ("Estimator.topk = 'ten'", 'Estimator.topk must be an integer'),
    ("Estimator.experiments = 'removal'",
     'Estimator.experiments must be a list or tuple'),
    ("Estimator.experiments = ('removal',)\nRemovalExperiment.repeats = 0",
     'RemovalExperiment.repeats must be >= 1'),
])
def test_an_estimator_binding_of_the_wrong_type_names_itself(
    workdir, binding, message):
  before = snapshot(workdir)
  line = error_line(*run_in_process(estimate_main(workdir,
                                                  binding.split('\n'))))
  assert message in line, line
  assert snapshot(workdir) == before


@pytest.mark.slow
def test_a_fifo_in_the_workdir_is_refused_not_read(workdir, digits_data_dir):
  fifo = records.record_path(workdir, 9)
  os.mkfifo(fifo)
  line = error_line(*run_binary(estimate_command(workdir), timeout=120))
  assert f'{fifo} is a FIFO, not a regular file' in line, line
  os.remove(fifo)
  fifo = records.record_path(workdir, 3)
  os.remove(fifo)
  os.mkfifo(fifo)
  line = error_line(*run_in_process(train_main(workdir, digits_data_dir)))
  assert f'{fifo} is a FIFO' in line, line


def test_a_corrupt_later_record_stops_the_train_binary(workdir,
                                                       digits_data_dir):
  path = records.record_path(workdir, 3)
  with open(path, 'r+b') as f:
    f.seek(200)
    f.write(b'\x00' * 64)
  before = snapshot(workdir)
  line = error_line(*run_in_process(train_main(workdir, digits_data_dir)))
  assert path in line and 'retrain trial 3' in line, line
  assert snapshot(workdir) == before


@pytest.mark.slow
def test_records_of_other_models_in_an_experiment_folder_are_refused(
    workdir, digits_data_dir):
  # The removal experiment's trials folder is a link to the main trials:
  # its records exist, but they are not the models its plan asks for.
  removal = os.path.join(workdir, 'experiments', 'removal')
  os.makedirs(removal)
  os.symlink(os.path.join(workdir, files.TRIALS_DIR),
             os.path.join(removal, files.TRIALS_DIR))
  line = error_line(*run_in_process(estimate_main(
      workdir, ["Estimator.experiments = ('removal',)",
                'RemovalExperiment.thresholds = (0.5,)',
                'RemovalExperiment.repeats = 1',
                'RemovalExperiment.influence_set = False'],
      data_dir=digits_data_dir)))
  assert 'experiments/removal/trials/trial_00000' in line, line
  assert 'plan' in line
  assert not os.path.exists(os.path.join(workdir, 'estimates'))


@pytest.mark.slow
def test_a_failed_estimate_leaves_the_earlier_estimates_as_they_were(
    workdir):
  # Without earlier estimates: nothing is left behind.
  command = [sys.executable, '-c', LIMITED.format(limit=60 * 1024),
             *estimate_command(workdir)[2:]]
  line = error_line(*run_binary(command))
  assert 'No space left writing' in line, line
  assert not [n for n in os.listdir(workdir) if n.startswith('estimates')]
  # With earlier estimates: they are kept whole, byte for byte.
  status, _, err = run_in_process(
      estimate_main(workdir))
  assert status == 0, err[-3000:]
  estimates = os.path.join(workdir, 'estimates')
  before = snapshot(estimates)
  line = error_line(*run_binary(command + [
      '--gin_bindings=Estimator.topk = 3']))
  assert 'No space left writing' in line
  assert snapshot(estimates) == before
  assert sorted(n for n in os.listdir(workdir)
                if n.startswith('estimates')) == ['estimates']


def test_an_output_dir_of_other_files_is_not_replaced(workdir, tmp_path):
  mine = tmp_path / 'mine'
  mine.mkdir()
  (mine / 'thesis.tex').write_text('years of work')
  line = error_line(*run_in_process(lambda: pipeline.run(
      workdir, output_dir=str(mine), log=lambda _: None)))
  assert '--output_dir=' in line and 'thesis.tex' in line, line
  assert os.listdir(mine) == ['thesis.tex']


def test_run_sh_help_prints_only_the_usage():
  out = subprocess.run([os.path.join(REPO, 'run.sh'), 'help'], cwd=REPO,
                       capture_output=True, text=True, check=True).stdout
  assert './run.sh demo' in out and './run.sh test' in out
  assert 'set -euo' not in out and '#' not in out


# --------------------------------------------------------------------------
# Record format 3: the log-odds, proxies and held-out probabilities


def _as_format_2(path):
  """Rewrites a record as format 2 wrote it: no format-3 fields."""
  arrays = read_npz(path)
  meta = json.loads(str(arrays.pop('metadata')))
  for field in records.OPTIONAL_FIELDS:
    arrays.pop(field, None)
  meta['format_version'] = 2
  meta = signatures.sign(arrays, meta)
  arrays['metadata'] = np.array(json.dumps(meta, sort_keys=True))
  with open(path, 'wb') as f:
    np.savez(f, **arrays)


def test_format_2_records_load_and_say_what_they_lack(workdir):
  before = loading.load(workdir, fields=('train_logodds', 'train_csl'))
  assert before.extra['train_logodds'].shape == before.masks.shape
  _as_format_2(records.record_path(workdir, 1))
  after = loading.load(workdir)  # the scores of format 2 are all there
  np.testing.assert_array_equal(after.train_prob, before.train_prob)
  with pytest.raises(records.RecordError, match=(
      r'trial_000001.npz holds no train_logodds: it is a record of format 2'
  )):
    loading.load(workdir, fields=('train_logodds',), missing_fix='Bind X.')
  partial = loading.load(workdir, if_present=('train_logodds', 'train_csl'))
  assert partial.extra == {}
  count, path = partial.missing_fields['train_csl']
  assert count == 1 and path.endswith('trial_000001.npz')


@pytest.mark.parametrize('field, change, message', [
    ('train_learned_epoch', lambda a, m: np.where(m, 99, a),
     'train_learned_epoch holds values no training run records'),
    ('train_csl', lambda a, m: np.where(m, -1.0, a).astype(a.dtype),
     'train_csl holds values no training run records'),
    ('train_logodds', lambda a, m: np.full_like(a, np.inf),
     'train_logodds holds NaN or infinite values'),
    ('test_logodds', lambda a, m: a[:-1], 'test_logodds is float16 of shape'),
])
def test_resigned_format_3_fields_out_of_range_are_refused(
    workdir, field, change, message):
  path = records.record_path(workdir, 2)
  arrays = read_npz(path)
  n = len(arrays['train_prob'])
  mask = np.unpackbits(arrays['mask'], count=n).astype(bool)
  rewrite_record(path, **{field: change(arrays[field], mask)})
  with pytest.raises(records.RecordError, match=message):
    loading.load(workdir, fields=(field,))  # a field is checked when read
  with pytest.raises(records.RecordError, match=message):
    loading.check(workdir)                  # and by every full check


def test_a_load_reads_only_the_members_it_uses(workdir):
  """Format 4: each array signed alone. An altered member that a load does
  not use is not read (and so cannot mislead it); a load or check that
  uses it refuses the record."""
  path = records.record_path(workdir, 2)
  arrays = read_npz(path)
  rewrite_record(path, fix_checksum=False,
                 train_csl=np.zeros_like(arrays['train_csl']))
  plain = loading.load(workdir)                      # no proxies: not read
  assert plain.num_trials == NUM_TRIALS
  for read in (lambda: loading.load(workdir, fields=('train_csl',)),
               lambda: loading.check(workdir),
               lambda: records.read_record(path)):
    with pytest.raises(records.RecordError,
                       match=r'trial_000002.npz fails its checksum .*over '
                       r'its train_csl array'):
      read()
  # The metadata is signed as a whole: editing it fails every read.
  rewrite_record(path, fix_checksum=False, metadata={'seed': 12345})
  with pytest.raises(records.RecordError, match='fails its checksum'):
    loading.load(workdir)

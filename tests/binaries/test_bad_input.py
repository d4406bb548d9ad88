"""Bad input: one clear error line, exit status 2, no partial output.

One test per kind of bad input docs/operations.md's "Errors" section
promises to handle, each checking

  * the exit status is 2 and there is no traceback,
  * stderr holds exactly one line starting with 'error:', naming the file or
    binding and saying what to do,
  * the workdir holds no partial output afterwards: a fresh workdir is not
    even created, a copy of a finished run is left byte for byte as it was
    (no estimates/ or report/ folder, no '*.tmp-*' file), and finished trial
    records are never touched.

Four trials of gin_configs/tiny.gin are trained once, in process; every case
works on its own copy of that workdir. The cases that depend on the process
(flag parsing, a file size limit, the time from process start, a pickle or a
gin import that must not run) and one case of each binary run the real
binaries as subprocesses, a few at a time (each spends ~5 s importing
TensorFlow). The others call the binary's `main` in this process: the same
cli.binary_main around the same run() the binary calls, which prints the
error line and exits with status 2 through SystemExit, only without absl's
flag parsing. So the module takes well under a minute and a half on two cores.
"""

import concurrent.futures
import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.core import storage
from tf_memorization.estimation import pipeline
from tf_memorization import train
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

from conftest import (REPO, TINY_BINDINGS, read_npz, rewrite_record,
                      run_in_process, snapshot, train_tiny)

pytestmark = pytest.mark.slow  # trains real runs; see conftest

TINY = 'gin_configs/tiny.gin'
NUM_TRIALS, NUM_TRAIN, NUM_TEST = 4, 1442, 355
BINDINGS = list(TINY_BINDINGS)
# Each record is ~17 KB: a process limited to 8 KB per file cannot write one.
FILE_SIZE_LIMIT = 8 * 1024
MAX_PROCESSES = 3

# Runs a binary with a file size limit: the write that crosses it fails with
# EFBIG (Python ignores SIGXFSZ), as a write to a full disk fails with ENOSPC.
LIMITED = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
"""


# ----------------------------------------------------------------- helpers


class Payload:
  """Unpickling this creates a directory: proof that a pickle ran."""

  def __init__(self, path):
    self.path = path

  def __reduce__(self):
    return (os.mkdir, (self.path,))


def binary(name, *args):
  return [sys.executable, '-m', f'tf_memorization.{name}', *args]


def train_binary(workdir, *args, data_dir=None):
  flags = [f'--workdir={workdir}', f'--gin_file={TINY}']
  flags += [f'--gin_bindings={b}' for b in BINDINGS]
  if data_dir:
    flags.append(f'--data_dir={data_dir}')
  return binary('train', *flags, *args)


def train_main(workdir, bindings=(), trials=None, data_dir=None):
  """What `train_binary(workdir, ...)` runs, as a call in this process."""
  return lambda: train.run(workdir, [TINY], BINDINGS + list(bindings),
                           trials=trials, data_dir=data_dir,
                           log=lambda _: None)


def estimate_main(workdir, output_dir=None):
  return lambda: pipeline.run(workdir, output_dir=output_dir,
                              log=lambda _: None)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope='module')
def trained(tiny_workdir):
  """A finished run: the 4 trials of tiny.gin (balanced design, ratio 0.5),
  trained once a session (conftest.tiny_workdir); cases copy it."""
  return tiny_workdir


@pytest.fixture(scope='module')
def other_design_record(tmp_path_factory, digits_data_dir):
  """Trial 7 of the same data and model under another mask design."""
  path = str(tmp_path_factory.mktemp('other_design') / 'w')
  train_tiny(path, BINDINGS + ["SubsetDesign.design = 'independent'",
                               'SubsetDesign.num_trials = 8'],
             digits_data_dir, trials='7:8')
  return records.record_path(path, 7)


@pytest.fixture(scope='module')
def cases(trained, other_design_record, digits_data_dir, tmp_path_factory):
  """Prepares every case and runs it; {name: case dict}.

  A case runs `command` (a subprocess) or `call` (a binary's run function,
  through cli.binary_main in this process).
  """
  root = tmp_path_factory.mktemp('cases')
  blocker = root / 'a_file'
  blocker.write_text('a file, not a directory')
  empty_data_dir = str(root / 'empty_tfds')
  os.makedirs(empty_data_dir)
  data_dir = digits_data_dir
  prepared = {}

  def fresh(name):
    """A workdir path that does not exist, nor does its parent (the run must
    create neither)."""
    return str(root / name / 'w')

  def copy(name):
    """A copy of the finished run."""
    dst = str(root / name)
    shutil.copytree(trained, dst)
    return dst

  def add(name, workdir, command=None, call=None, **extra):
    assert (command is None) != (call is None)
    prepared[name] = dict(command=command, call=call, workdir=workdir,
                          fresh=workdir == fresh(name), **extra)

  # --- config errors (train binary, fresh workdir) -----------------------
  w = fresh('missing_gin')
  add('missing_gin', w, binary('train', f'--workdir={w}',
                               '--gin_file=gin_configs/no_such.gin'))
  w = fresh('unknown_configurable')
  add('unknown_configurable', w,
      call=train_main(w, ['NoSuchThing.value = 3'], data_dir=data_dir))
  w = fresh('unknown_parameter')
  add('unknown_parameter', w,
      train_binary(w, '--gin_bindings=TrialTrainer.epoch = 3',
                   data_dir=data_dir))
  w = fresh('unknown_dataset')
  add('unknown_dataset', w, call=train_main(
      w, ["load_dataset.name = 'no_such_dataset'"], data_dir=data_dir))
  for ratio in ('0.0', '1.0'):
    w = fresh(f'subset_ratio_{ratio}')
    add(f'subset_ratio_{ratio}', w, call=train_main(
        w, [f'SubsetDesign.subset_ratio = {ratio}'], data_dir=data_dir))
  w = fresh('one_trial_design')
  add('one_trial_design', w, call=train_main(
      w, ['SubsetDesign.num_trials = 1'], data_dir=data_dir))
  # Balanced: round(0.1 * 3) = 0 trials per example, none ever included.
  w = fresh('degenerate_balanced')
  add('degenerate_balanced', w, call=train_main(
      w, ['SubsetDesign.num_trials = 3', 'SubsetDesign.subset_ratio = 0.1'],
      data_dir=data_dir))
  w = fresh('trial_range')
  add('trial_range', w, call=train_main(w, trials='2:9', data_dir=data_dir))

  # --- the workdir ----------------------------------------------------------
  w = str(blocker / 'w')
  add('unwritable_workdir', w, train_binary(w, data_dir=data_dir))
  w = copy('unwritable_output_dir')
  add('unwritable_output_dir', w,
      call=estimate_main(w, output_dir=f'{blocker}/out'))
  # A full disk while trial 2's record is written (trials 0 and 1 are done).
  w = copy('disk_full')
  for t in (2, 3):
    os.remove(records.record_path(w, t))
  add('disk_full', w,
      [sys.executable, '-c', LIMITED.format(limit=FILE_SIZE_LIMIT),
       *train_binary(w, data_dir=data_dir)[2:]],
      kept=snapshot(os.path.join(w, files.TRIALS_DIR)))

  # --- records that do not belong together ----------------------------------
  w = copy('other_design_estimate')
  shutil.copy(other_design_record, records.record_path(w, 7))
  add('other_design_estimate', w, call=estimate_main(w))
  w = copy('other_design_train')
  add('other_design_train', w, call=train_main(
      w, ["SubsetDesign.design = 'independent'"], data_dir=data_dir))
  w = copy('other_labels_train')
  add('other_labels_train', w, call=train_main(
      w, ['label_noise.fraction = 0.1'], data_dir=data_dir))

  # --- damaged records --------------------------------------------------------
  w = copy('tampered')
  path = records.record_path(w, 1)
  train_pred = read_npz(path)['train_pred'].copy()
  train_pred[0] = (train_pred[0] + 1) % 10
  rewrite_record(path, fix_checksum=False, train_pred=train_pred)
  add('tampered', w, binary('estimate', f'--workdir={w}'), damaged=path)
  w = copy('truncated')
  path = records.record_path(w, 2)
  with open(path, 'rb') as f:
    payload = f.read()
  with open(path, 'wb') as f:
    f.write(payload[:len(payload) // 2])
  add('truncated', w, call=estimate_main(w), damaged=path)
  w = copy('corrupt')
  path = records.record_path(w, 3)
  with open(path, 'wb') as f:
    f.write(np.random.default_rng(0).bytes(len(payload)))
  add('corrupt', w, call=estimate_main(w), damaged=path)
  # A damaged first record stops the train binary too (it reads its metadata).
  w = copy('corrupt_train')
  path = records.record_path(w, 0)
  with open(path, 'wb') as f:
    f.write(np.random.default_rng(1).bytes(len(payload)))
  add('corrupt_train', w, call=train_main(w, data_dir=data_dir), damaged=path)

  # --- shapes that do not match W/dataset.npz --------------------------------
  w = copy('other_dataset_size')
  path = records.record_path(w, 1)
  arrays = read_npz(path)
  fewer = {f: arrays[f][:NUM_TRAIN - 8] for f in
           ('train_pred', 'train_prob', 'train_margin')}
  rewrite_record(path, mask=np.packbits(np.ones(NUM_TRAIN - 8, bool)),
                 metadata={'num_train': NUM_TRAIN - 8}, **fewer)
  add('other_dataset_size', w, call=estimate_main(w), damaged=path)
  w = copy('bad_shape')
  path = records.record_path(w, 2)
  rewrite_record(path, test_prob=read_npz(path)['test_prob'][:1])
  add('bad_shape', w, call=estimate_main(w), damaged=path)

  # --- too few trials to hold any example out --------------------------------
  w = copy('one_trial')
  for t in range(1, NUM_TRIALS):
    os.remove(records.record_path(w, t))
  add('one_trial', w, call=estimate_main(w))
  # Masks that hold no example out, re-signed: not the design's masks.
  w = copy('no_example_held_out')
  for t in (2, 3):
    os.remove(records.record_path(w, t))
  for t in (0, 1):
    rewrite_record(records.record_path(w, t),
                   mask=np.packbits(np.ones(NUM_TRAIN, bool)))
  add('no_example_held_out', w, call=estimate_main(w),
      damaged=records.record_path(w, 0))

  # --- data not prepared on an offline machine ------------------------------
  w = fresh('unprepared')
  add('unprepared', w,
      train_binary(w, "--gin_bindings=load_dataset.name = 'mnist'",
                   '--gin_bindings=load_dataset.download = False',
                   data_dir=empty_data_dir), data_dir=empty_data_dir)

  # --- nothing read from a workdir is executed -------------------------------
  w = copy('pickle')
  sentinel = str(root / 'pickle_ran')
  rewrite_record(records.record_path(w, 1), fix_checksum=False,
                 train_pred=np.array([Payload(sentinel)] * NUM_TRAIN,
                                     dtype=object))
  with open(records.record_path(w, 1), 'rb') as f:
    assert b'pickle_ran' in f.read()  # the payload is there to be unpickled
  add('pickle', w, binary('estimate', f'--workdir={w}'),
      damaged=records.record_path(w, 1), sentinel=sentinel)
  w = copy('gin_import')
  sentinel = str(root / 'gin_ran')
  config = os.path.join(w, files.CONFIG_FILE)
  with open(config) as f:
    original = f.read()
  with open(config, 'w') as f:
    f.write('from __gin__ import dynamic_registration\n'
            'import os\nimport __main__\n'
            f'os.mkdir.path = {sentinel!r}\n'
            '__main__.Estimator.topk = @os.mkdir()\n' + original)
  add('gin_import', w, binary('estimate', f'--workdir={w}'), damaged=config,
      sentinel=sentinel)

  # --- estimates and reports of nothing ---------------------------------------
  w = copy('no_records')
  shutil.rmtree(os.path.join(w, files.TRIALS_DIR))
  add('no_records', w, call=estimate_main(w))
  w = copy('no_estimates')
  add('no_estimates', w, binary('report', f'--workdir={w}'))

  for case in prepared.values():
    case['before'] = snapshot(case['workdir'])
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')

  def run(case):
    proc = subprocess.run(case['command'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300,
                          check=False)
    case.update(rc=proc.returncode, out=proc.stdout, err=proc.stderr)

  # The subprocesses run in the background, the slowest first; the
  # in-process cases meanwhile.
  order = sorted((name for name, case in prepared.items() if case['command']),
                 key=lambda name: name != 'unprepared')
  with concurrent.futures.ThreadPoolExecutor(MAX_PROCESSES) as pool:
    futures = [pool.submit(run, prepared[name]) for name in order]
    for case in prepared.values():
      if case['call']:
        case['rc'], case['out'], case['err'] = run_in_process(case['call'])
    for future in futures:
      future.result()
  for case in prepared.values():
    case['after'] = snapshot(case['workdir'])
  return prepared


def error_line(case):
  """The one 'error:' line of a case that exited with status 2."""
  assert case['rc'] == 2, (case['out'][-2000:], case['err'][-3000:])
  assert 'Traceback' not in case['err'], case['err'][-3000:]
  lines = [l for l in case['err'].splitlines() if l.startswith('error:')]
  assert len(lines) == 1, case['err'][-3000:]
  assert 'error:' not in case['out']
  return lines[0]


def check(cases, name, *messages):
  """Exit 2, one error line holding every message, no partial output."""
  case = cases[name]
  line = error_line(case)
  for message in messages:
    assert message in line, line
  assert 'In call to configurable' not in line  # gin's noise is dropped
  # A fresh workdir is not created; an existing one is left as it was.
  assert case['after'] == case['before'], (name, case['before'],
                                           case['after'])
  if case.get('fresh'):  # nor are the folders above it
    assert not os.path.exists(os.path.dirname(case['workdir']))
  return line


# --------------------------------------------------------------- the tests


def test_missing_gin_file(cases):
  check(cases, 'missing_gin', 'gin_configs/no_such.gin does not exist',
        '--gin_file')


def test_unknown_configurable(cases):
  check(cases, 'unknown_configurable', 'NoSuchThing',
        "--gin_bindings='NoSuchThing.value = 3'", 'Fix the binding')


def test_unknown_binding(cases):
  check(cases, 'unknown_parameter', 'epoch', 'TrialTrainer',
        "--gin_bindings='TrialTrainer.epoch = 3'")


def test_unknown_dataset(cases):
  check(cases, 'unknown_dataset', "Unknown dataset 'no_such_dataset'",
        'bind load_dataset.name')


@pytest.mark.parametrize('ratio', ['0.0', '1.0'])
def test_subset_ratio_outside_0_1(cases, ratio):
  check(cases, f'subset_ratio_{ratio}', 'SubsetDesign.subset_ratio',
        'must be in (0, 1)', f'got {ratio}')


def test_num_trials_below_2(cases):
  check(cases, 'one_trial_design', 'SubsetDesign.num_trials', '>= 2',
        'got 1')


def test_balanced_design_with_no_example_in_or_out(cases):
  check(cases, 'degenerate_balanced', 'subset_ratio=0.1', 'num_trials=3',
        'Use more trials')


def test_trial_range_outside_num_trials(cases):
  check(cases, 'trial_range', '--trials=2:9', 'outside', '0:4',
        'SubsetDesign.num_trials')


def test_workdir_that_cannot_be_written(cases):
  check(cases, 'unwritable_workdir', 'Cannot write to --workdir=',
        'a_file/w', 'is not a directory', 'writable directory')
  blocker = os.path.dirname(cases['unwritable_workdir']['workdir'])
  with open(blocker) as f:
    assert f.read() == 'a file, not a directory'  # left as it was


def test_output_dir_that_cannot_be_written(cases):
  check(cases, 'unwritable_output_dir', 'Cannot write to --output_dir=',
        'a_file/out', 'writable directory')


def test_disk_full_during_a_record_write(cases):
  case = cases['disk_full']
  line = error_line(case)
  path = records.record_path(case['workdir'], 2)
  assert f'No space left writing {path}' in line, line
  assert 'free space or use another --workdir' in line
  assert 'finished trials' in line
  # The record being written is gone, whole or partial, with no temp file.
  assert not [p for p in case['after'] if '.tmp-' in p], case['after']
  assert list(records.list_records(case['workdir'])) == [0, 1]
  # The finished trials are untouched and still load.
  trials = {p: h for p, h in case['after'].items()
            if p.startswith(files.TRIALS_DIR + os.sep)}
  assert {os.path.join(files.TRIALS_DIR, p): h
          for p, h in case['kept'].items()} == trials
  loaded = loading.load(case['workdir'])
  np.testing.assert_array_equal(loaded.trial_indices, [0, 1])


def test_records_of_another_design_in_the_workdir(cases):
  # The foreign record is named: W/run.json says which config is the
  # workdir's.
  check(cases, 'other_design_estimate', 'different training configs',
        'trial_000007.npz', files.RUN_FILE, 'own workdir')


def test_training_another_design_into_a_workdir(cases):
  check(cases, 'other_design_train', 'is fixed (by', files.RUN_FILE,
        'another config', 'Use a new --workdir')


def test_training_other_data_into_a_workdir(cases):
  # Label noise changes the labels the trials train on: other data.
  check(cases, 'other_labels_train', 'another config', 'new --workdir')


def _check_damaged(cases, name, *messages):
  case = cases[name]
  line = check(cases, name, case['damaged'], *messages)
  trial = int(os.path.basename(case['damaged'])[len('trial_'):-len('.npz')])
  assert 'Delete it and rerun the train binary' in line, line
  assert f'--workdir={case["workdir"]}' in line
  assert f'retrain trial {trial}' in line
  return line


def test_tampered_record_fails_its_checksum(cases):
  _check_damaged(cases, 'tampered', 'fails its checksum', 'sha256')


def test_truncated_record(cases):
  _check_damaged(cases, 'truncated', 'truncated or not a valid record')


def test_corrupt_record(cases):
  _check_damaged(cases, 'corrupt', 'truncated or not a valid record')


def test_corrupt_record_stops_the_train_binary(cases):
  line = _check_damaged(cases, 'corrupt_train',
                        'truncated or not a valid record')
  assert 'pickle' not in line  # random bytes are no pickle to refuse


def test_record_of_another_dataset_size(cases):
  check(cases, 'other_dataset_size', cases['other_dataset_size']['damaged'],
        f'{NUM_TRAIN - 8} train', f'{NUM_TRAIN} / {NUM_TEST}',
        'belongs to another dataset')


def test_record_whose_shapes_do_not_match_the_dataset(cases):
  _check_damaged(cases, 'bad_shape', 'test_prob', 'shape (1,)',
                 f'needs shape ({NUM_TEST},)', 'dataset.npz')


def test_estimate_with_a_single_trial(cases):
  check(cases, 'one_trial', '1 trial record(s)', 'at least 2 trials',
        f'Train the other {NUM_TRIALS - 1}', 'tf_memorization.train')


def test_estimate_with_masks_that_are_not_the_designs(cases):
  # Records re-signed with masks that hold no example out: they are not
  # the design's masks of their trials, so they are refused before any
  # estimate is made of them.
  _check_damaged(cases, 'no_example_held_out', 'its mask or seed is not the '
                 'one trial 0 of its design')


def test_unprepared_dataset_offline_fails_fast(cases):
  case = cases['unprepared']
  # The refusal comes when the builder asks for its first download, before
  # it is tried: tfds would retry the network for minutes (the subprocess's
  # timeout would end the test).
  check(cases, 'unprepared', 'mnist is not prepared', case['data_dir'],
        'tfds build mnist', '--data_dir=DIR')
  # Nothing was downloaded: only the (empty) prepare lock is left.
  assert os.listdir(case['data_dir']) == ['.mnist.prepare.lock']


def test_record_with_a_pickle_is_refused_unread(cases):
  case = cases['pickle']
  line = check(cases, 'pickle', case['damaged'])
  assert 'pickle' in line.lower() or 'not a valid record' in line
  assert not os.path.exists(case['sentinel'])  # the pickle never ran


def test_workdir_config_with_imports_is_refused_unrun(cases):
  case = cases['gin_import']
  check(cases, 'gin_import', case['damaged'], 'line 1',
        'dynamic_registration', 'may only hold bindings')
  assert not os.path.exists(case['sentinel'])  # os.mkdir was never called


def test_estimate_of_a_workdir_without_records(cases):
  check(cases, 'no_records', 'no trial records', 'run the train binary')


def test_report_of_a_workdir_without_estimates(cases):
  check(cases, 'no_estimates', 'summary.json is missing',
        'run the estimate binary first')


def test_records_are_written_without_pickles(trained):
  """What the train binary writes loads with allow_pickle=False."""
  for path in records.list_records(trained).values():
    with open(path, 'rb') as f:
      payload = f.read()
    with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
      assert all(npz[name].dtype != object for name in npz.files)


@pytest.mark.parametrize('kind', ['ENOSPC', 'EDQUOT', 'tf_resource_exhausted'])
def test_every_kind_of_full_disk_is_one_clear_error(tmp_path, monkeypatch,
                                                    kind):
  """ENOSPC, EDQUOT (and EFBIG, above) and gfile's version of them: the
  write leaves neither the file nor a temporary one; an older file stays."""
  import errno  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  failures = {
      'ENOSPC': OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
      'EDQUOT': OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
      'tf_resource_exhausted': tf.errors.ResourceExhaustedError(
          None, None, '/x/trial_000001.npz; No space left on device'),
  }
  real_gfile = tf.io.gfile.GFile

  class FullDisk(real_gfile):
    def write(self, data):
      super().write(data[:10])  # part of it lands, then the disk is full
      self.flush()
      raise failures[kind]

  monkeypatch.setattr(tf.io.gfile, 'GFile', FullDisk)
  old = tmp_path / 'trials' / 'trial_000000.npz'
  old.parent.mkdir()
  old.write_bytes(b'finished')
  for write in (storage.atomic_write, storage.atomic_replace):
    for path in (str(old.parent / 'trial_000001.npz'), str(old)):
      with pytest.raises(errors.NoSpaceError) as info:
        write(path, b'x' * 100)
      assert f'No space left writing {path}' in str(info.value)
      assert 'free space or use another --workdir' in str(info.value)
      assert sorted(os.listdir(old.parent)) == ['trial_000000.npz']
      assert old.read_bytes() == b'finished'
  # The binaries print it as their one error line, with exit status 2.
  status, _, err = run_in_process(
      lambda: storage.atomic_write(str(old.parent / 'trial_000001.npz'), b'x'))
  assert status == 2
  assert err.count('error:') == 1 and 'No space left writing' in err

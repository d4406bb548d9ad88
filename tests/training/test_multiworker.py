"""Trials trained across two worker processes (MultiWorkerMirroredStrategy).

Two processes of the train binary, each with its own TF_CONFIG naming the
same two loopback ports, form one cluster: every trial is trained by both, on
half of each global batch each, with the gradients all-reduced over gRPC. The
same thing on several machines only changes the host names in TF_CONFIG (see
docs/operations.md, "Several machines").

Each worker runs the real binary (`python -m tf_memorization.train`) through
a shim that prints a line for every file it writes through `records`, so the
test sees which process wrote what.
"""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tf_memorization.core import files
from tf_memorization.stats import masks
from tf_memorization import train
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

from conftest import GIN_DIR, REPO

pytestmark = pytest.mark.slow  # trains real runs; see conftest

TIMEOUT_S = 240
WROTE = 'WROTE '
# Runs the train binary as `python -m` would, printing WROTE <path> for every
# file written through tf_memorization.core.storage (records, config, dataset
# file).
_TRACED_TRAIN = r'''
import runpy
from tf_memorization.core import storage

def _trace(name):
  original = getattr(storage, name)
  def write(path, payload):
    print('WROTE ' + path, flush=True)
    return original(path, payload)
  setattr(storage, name, write)

for _name in ('atomic_write', 'atomic_replace'):
  _trace(_name)
runpy.run_module('tf_memorization.train', run_name='__main__', alter_sys=True)
'''


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(('localhost', 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _start_cluster(workdir, data_dir, bindings, log_dir):
  """Starts one process per worker of a 2-worker cluster; (procs, logs)."""
  ports = _free_ports(2)
  cluster = {'worker': [f'localhost:{p}' for p in ports]}
  args = ['--gin_file=gin_configs/tiny.gin', f'--workdir={workdir}',
          f'--data_dir={data_dir}',
          "--gin_bindings=get_strategy.kind = 'multi_worker'"]
  args += [f'--gin_bindings={b}' for b in bindings]
  procs, logs = [], []
  for index in range(2):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', TF_CONFIG=json.dumps(
        {'cluster': cluster, 'task': {'type': 'worker', 'index': index}}))
    log = os.path.join(log_dir, f'worker{index}.log')
    with open(log, 'w') as out:
      procs.append(subprocess.Popen(
          [sys.executable, '-c', _TRACED_TRAIN, *args], cwd=REPO, env=env,
          stdout=out, stderr=subprocess.STDOUT))
    logs.append(log)
  return procs, logs


def _read(path):
  with open(path) as f:
    return f.read()


def _wait(procs, logs, timeout=TIMEOUT_S):
  """Waits for every process; kills all of them on timeout. Return codes."""
  deadline = time.monotonic() + timeout
  try:
    return [p.wait(timeout=max(1.0, deadline - time.monotonic()))
            for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
      p.wait()
    pytest.fail(f'workers still running after {timeout}s:\n' +
                '\n'.join(f'--- {log}\n{_read(log)[-3000:]}' for log in logs))


def _tail(logs):
  return '\n'.join(f'--- {log}\n{_read(log)[-4000:]}' for log in logs)


def _trial_lines(text):
  """The per-trial result lines, from '#t:' on (no timings)."""
  lines = [line[line.index('] #') + 2:] for line in text.splitlines()
           if line.startswith('[') and '] #' in line]
  return [line[:line.rindex(' (')] for line in lines]


def _written(text):
  return [line[len(WROTE):] for line in text.splitlines()
          if line.startswith(WROTE)]


def _leftovers(workdir):
  return [p for p in glob.glob(os.path.join(workdir, '**', '*'),
                               recursive=True) + glob.glob(
                                   os.path.join(workdir, '**', '.*'),
                                   recursive=True)
          if '.tmp-' in p or '.write_probe' in p]


BINDINGS = ['SubsetDesign.num_trials = 2', 'TrialTrainer.epochs = 1']


def test_one_trial_across_two_workers(tmp_path, digits_data_dir):
  workdir = str(tmp_path / 'w')
  # Both workers start at once on a data dir where the dataset is not
  # prepared yet: one prepares it, the other waits and reuses it.
  fresh_data_dir = str(tmp_path / 'tfds')
  procs, logs = _start_cluster(workdir, fresh_data_dir, BINDINGS,
                               str(tmp_path))
  codes = _wait(procs, logs)
  assert codes == [0, 0], _tail(logs)
  chief, other = _read(logs[0]), _read(logs[1])
  assert sorted(os.listdir(os.path.join(fresh_data_dir, 'sklearn_digits'))
               ) == ['1.0.0']  # prepared once, no incomplete copy left

  # One cluster of 2 replicas (one per process), same config on both.
  for text in (chief, other):
    assert 'on 2 replica(s)' in text, text[-3000:]
  fingerprint = chief.split('(fingerprint ')[1].split(')')[0]
  assert f'(fingerprint {fingerprint})' in other
  assert 'Done: trained 2, skipped 0' in chief

  # Only the chief wrote, each trial's record once; the other worker wrote
  # nothing (no record, config, dataset file or summary) and left nothing.
  assert _written(other) == [], other[-3000:]
  record_writes = [p for p in _written(chief) if '/trials/' in p]
  assert sorted(record_writes) == [records.record_path(workdir, t)
                                   for t in (0, 1)]
  assert sorted(os.listdir(os.path.join(workdir, 'trials'))) == [
      'trial_000000.npz', 'trial_000001.npz']
  assert len(os.listdir(os.path.join(workdir, 'tensorboard'))) == 1
  assert _leftovers(workdir) == []

  # The records are valid and consistent with the run's config.
  loaded = loading.load(workdir, predictions=True)
  np.testing.assert_array_equal(loaded.trial_indices, [0, 1])
  assert {m['fingerprint'] for m in loaded.metadata} == {fingerprint}
  with open(os.path.join(workdir, files.CONFIG_FILE)) as f:
    assert f.readline().strip() == f'# fingerprint: {fingerprint}'
  design = masks.SubsetDesign(num_trials=2, subset_ratio=0.5,
                              design='balanced', seed=0)
  for row, t in enumerate(loaded.trial_indices):
    np.testing.assert_array_equal(loaded.masks[row],
                                  design.mask(loaded.masks.shape[1], t))
    metrics = loaded.metadata[row]['metrics']
    assert all(np.isfinite(metrics[k]) for k in
               ('train_accuracy', 'heldout_accuracy', 'test_accuracy',
                'final_loss'))
    assert metrics['test_accuracy'] == pytest.approx(
        loaded.test_correct[row].mean())

  # Both workers ended every trial with the same results (same loss, same
  # accuracies), as one synchronous computation does.
  assert _trial_lines(chief) == _trial_lines(other)
  assert len(_trial_lines(chief)) == 2

  # The same trials in one process over 2 devices (MirroredStrategy, the same
  # split of every batch over 2 replicas): the same fingerprint, so either may
  # continue the other's workdir, and the same model. Had the two workers'
  # weights drifted apart, the half of each prediction pass each one ran would
  # differ from this run.
  single_dir = str(tmp_path / 'single')
  single = train.run(
      single_dir, [os.path.join(GIN_DIR, 'tiny.gin')],
      BINDINGS + ["get_strategy.kind = 'mirrored'"], data_dir=digits_data_dir,
      log=lambda _: None)
  assert single.fingerprint == fingerprint
  alone = loading.load(single_dir, predictions=True)
  for field in ('train_pred', 'test_pred'):
    agree = (getattr(alone, field) == getattr(loaded, field)).mean()
    assert agree >= 0.99, (field, agree)
  for field in ('train_prob', 'test_prob'):
    np.testing.assert_allclose(getattr(loaded, field).astype(np.float32),
                               getattr(alone, field).astype(np.float32),
                               atol=1e-2, err_msg=field)
  for a, b in zip(loaded.metadata, alone.metadata):
    assert a['metrics']['test_accuracy'] == pytest.approx(
        b['metrics']['test_accuracy'], abs=0.02)


def test_a_dead_worker_stops_the_cluster_and_a_rerun_resumes(
    tmp_path, digits_data_dir):
  workdir = str(tmp_path / 'w')
  bindings = BINDINGS
  first = tmp_path / 'first'
  first.mkdir()
  procs, logs = _start_cluster(workdir, digits_data_dir, bindings, str(first))
  deadline = time.monotonic() + TIMEOUT_S
  while '[1/2' not in _read(logs[1]):
    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
      for p in procs:
        p.kill()
        p.wait()
      pytest.fail('the first trial did not finish:\n' + _tail(logs))
    time.sleep(0.1)
  procs[1].send_signal(signal.SIGKILL)  # the non-chief dies mid-run
  killed_at = time.monotonic()
  codes = _wait(procs, logs)
  # The chief fails (its collectives abort) instead of waiting forever...
  assert codes[0] not in (0, None), _tail(logs)
  assert codes[1] == -signal.SIGKILL
  assert time.monotonic() - killed_at < 60
  # ...leaving only whole records: the one it finished.
  assert records.list_records(workdir).keys() == {0}
  assert len(loading.load(workdir).trial_indices) == 1
  assert _leftovers(workdir) == []

  # Running both workers again finishes the run without redoing trial 0.
  second = tmp_path / 'second'
  second.mkdir()
  procs, logs = _start_cluster(workdir, digits_data_dir, bindings,
                               str(second))
  codes = _wait(procs, logs)
  assert codes == [0, 0], _tail(logs)
  chief, other = _read(logs[0]), _read(logs[1])
  for text in (chief, other):
    assert '2 trials selected, 1 already done, 1 to train' in text, text[-3000:]
  assert 'Done: trained 1, skipped 1' in chief
  assert _written(other) == []
  assert _trial_lines(chief) == _trial_lines(other)
  loaded = loading.load(workdir)
  np.testing.assert_array_equal(loaded.trial_indices, [0, 1])
  assert len({m['fingerprint'] for m in loaded.metadata}) == 1


@pytest.mark.parametrize('tf_config, message', [
    (None, 'needs the TF_CONFIG'),
    ('{"cluster": ', 'must be JSON'),
    ('{"cluster": {"worker": ["a:1"]}}', 'must be JSON'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", '
     '"index": 1}}', 'worker:1 must be'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
     'ps:0 must be'),
])
def test_bad_tf_config_is_a_clear_error(monkeypatch, tf_config, message):
  from tf_memorization.training import strategy  # pylint: disable=g-import-not-at-top
  if tf_config is None:
    monkeypatch.delenv('TF_CONFIG', raising=False)
  else:
    monkeypatch.setenv('TF_CONFIG', tf_config)
  with pytest.raises(ValueError, match=message):
    strategy.get_strategy(kind='multi_worker')


def test_is_chief():
  from tf_memorization.training import strategy  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def resolver(cluster, task_type, task_id):
    return type('S', (), {'cluster_resolver': (
        tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type,
            task_id=task_id))})()

  workers = {'worker': ['a:1', 'b:1']}
  assert strategy.is_chief(resolver(workers, 'worker', 0))
  assert not strategy.is_chief(resolver(workers, 'worker', 1))
  with_chief = {'chief': ['c:1'], **workers}
  assert strategy.is_chief(resolver(with_chief, 'chief', 0))
  assert not strategy.is_chief(resolver(with_chief, 'worker', 0))
  assert strategy.is_chief(tf.distribute.get_strategy())

"""Crash safety and shared workdirs: leases, checkpoints, kill -9, workers.

Every run here is the real train binary (or its trainer) on the offline
digits with the tiny config.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tf_memorization.data import pipelines
from tf_memorization.training import leases
from tf_memorization.training import models
from tf_memorization.training import strategy as strategy_lib
from tf_memorization.training import trainer as trainer_lib
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

from conftest import REPO

pytestmark = pytest.mark.slow  # trains real runs; see conftest

TINY_ARGS = ['--gin_file=gin_configs/tiny.gin',
             "--gin_bindings=get_strategy.kind = 'one_device'",
             "--gin_bindings=SubsetDesign.design = 'independent'"]


# --------------------------------------------------------------------------
# Leases


def test_a_claim_is_held_until_released(tmp_path):
  directory = str(tmp_path)
  first, second = leases.Leases(directory), leases.Leases(directory)
  assert first.claim(3)
  assert first.claim(3)  # its own claim
  assert not second.claim(3)
  assert second.read(3)[0] == first.owner
  first.release(3)
  assert second.claim(3)
  assert not first.claim(3)


def test_an_expired_claim_is_taken_over(tmp_path):
  directory = str(tmp_path)
  path = leases.claim_path(directory, 7)
  os.makedirs(os.path.dirname(path))
  with open(path, 'w') as f:
    json.dump({'owner': 'elsewhere:1:x', 'expires': time.time() - 1}, f)
  worker = leases.Leases(directory)
  assert worker.expired(7)
  assert worker.claim(7)
  assert worker.read(7)[0] == worker.owner


def test_a_claim_of_a_killed_process_on_this_host_is_taken_over(tmp_path):
  directory = str(tmp_path)
  child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  import socket  # pylint: disable=g-import-not-at-top
  dead = leases.Leases(directory, owner=f'{socket.gethostname()}:{child.pid}:t')
  assert dead.claim(1)
  worker = leases.Leases(directory)
  assert not worker.claim(1)  # alive: left to it
  child.send_signal(signal.SIGKILL)
  child.wait()
  assert worker.expired(1)
  assert worker.claim(1)


def test_claims_are_renewed_while_held_and_released_on_exit(tmp_path):
  directory = str(tmp_path)
  with leases.Leases(directory, lease_seconds=0.6) as held:
    assert held.claim(0)
    time.sleep(1.5)  # over two leases: only renewal keeps it
    other = leases.Leases(directory, lease_seconds=0.6)
    assert not other.claim(0)
  assert not os.path.exists(leases.claim_path(directory, 0))
  assert other.claim(0)


# --------------------------------------------------------------------------
# Epoch checkpoints


@pytest.fixture(scope='module')
def digits(digits_data_dir):
  return pipelines.load_dataset('sklearn_digits', data_dir=digits_data_dir)


def test_a_trial_resumed_from_its_checkpoint_equals_the_uninterrupted_one(
    digits, tmp_path):
  trainer = trainer_lib.TrialTrainer(
      digits, strategy_lib.get_strategy('one_device'),
      model_fn=lambda **kw: models.small_resnet(width=4, **kw), epochs=3,
      batch_size=32, eval_batch_size=256, checkpoint_seconds=0,
      models_per_step=2)
  mask = np.random.default_rng(0).random(len(digits.train)) < 0.5
  path = str(tmp_path / 'trial.npz')
  whole = trainer.train_trials([mask], [5], checkpoints=[path])[0]
  assert whole.metrics['resumed_from_epoch'] == 0
  # The run left its last checkpoint (epoch 2 of 3) as a kill would.
  with np.load(path) as stored:
    assert int(stored['epoch']) == 2
  resumed = trainer.train_trials([mask], [5], checkpoints=[path])[0]
  assert resumed.metrics['resumed_from_epoch'] == 2
  for field in ('train_pred', 'train_prob', 'train_margin', 'test_pred',
                'test_prob', 'test_margin', 'train_logodds', 'test_logodds'):
    np.testing.assert_array_equal(getattr(whole, field),
                                  getattr(resumed, field), err_msg=field)
  # The learning-dynamics proxies continue from the checkpoint's: a resumed
  # trial counts the visits of the epochs before the kill too.
  for field, value in whole.dynamics.items():
    np.testing.assert_array_equal(value, resumed.dynamics[field],
                                  err_msg=field)
  assert resumed.dynamics['train_visits'][mask].min() >= 3
  # A checkpoint of another trial (seed or mask) is not used.
  other = trainer.train_trials([mask], [6], checkpoints=[path])[0]
  assert other.metrics['resumed_from_epoch'] == 0
  assert not np.array_equal(other.train_margin, whole.train_margin)


# --------------------------------------------------------------------------
# kill -9, then the same command


def _start(workdir, data_dir, extra=()):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.Popen(
      [sys.executable, '-m', 'tf_memorization.train', *TINY_ARGS,
       f'--workdir={workdir}', f'--data_dir={data_dir}', *extra],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)


def _wait_for(predicate, process, timeout=240):
  start = time.time()
  while not predicate():
    assert process.poll() is None, process.stdout.read()[-3000:]
    assert time.time() - start < timeout
    time.sleep(0.05)


def _finish(process):
  out, _ = process.communicate(timeout=300)
  assert process.returncode == 0, out[-3000:]
  return out


# Two trials of three epochs: the first is killed after its first epoch's
# checkpoint, then right after its record (the second trial's start).
KILL_RUN = ['--gin_bindings=SubsetDesign.num_trials = 2',
            '--gin_bindings=TrialTrainer.epochs = 3',
            '--gin_bindings=TrialTrainer.checkpoint_seconds = 0']


def test_kill_9_at_several_points_then_resume_equals_an_uninterrupted_run(
    tmp_path, digits_data_dir):
  whole_dir, killed_dir = str(tmp_path / 'whole'), str(tmp_path / 'killed')
  _finish(_start(whole_dir, digits_data_dir, KILL_RUN))

  checkpoints = os.path.join(killed_dir, 'checkpoints')
  # 1. mid-trial, after its first epoch checkpoint
  process = _start(killed_dir, digits_data_dir, KILL_RUN)
  _wait_for(lambda: os.path.isdir(checkpoints) and any(
      f.endswith('.npz') for f in os.listdir(checkpoints)), process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  # 2. right after the first record
  process = _start(killed_dir, digits_data_dir, KILL_RUN)
  _wait_for(lambda: records.list_records(killed_dir), process)
  process.send_signal(signal.SIGKILL)
  process.wait()
  # 3. the same command finishes the run, resuming from the checkpoints.
  out = _finish(_start(killed_dir, digits_data_dir, KILL_RUN))
  assert 'Done' in out

  whole = loading.load(whole_dir, predictions=True)
  killed = loading.load(killed_dir, predictions=True)  # every record valid
  np.testing.assert_array_equal(whole.trial_indices, killed.trial_indices)
  for field in ('masks', 'train_correct', 'test_correct', 'train_prob',
                'test_prob', 'train_margin', 'test_margin'):
    np.testing.assert_array_equal(getattr(whole, field),
                                  getattr(killed, field), err_msg=field)
  resumed = [m['metrics']['resumed_from_epoch'] for m in killed.metadata]
  assert max(resumed) > 0  # at least one trial continued from a checkpoint
  # Nothing left behind: checkpoints deleted, claims released, no temp files.
  assert not os.listdir(checkpoints)
  assert not os.listdir(os.path.join(killed_dir, 'claims'))
  leftovers = [f for root, _, files in os.walk(killed_dir) for f in files
               if '.tmp-' in f]
  assert not leftovers


# --------------------------------------------------------------------------
# Several workers on one workdir


def test_concurrent_workers_with_overlapping_ranges_train_each_trial_once(
    tmp_path, digits_data_dir):
  workdir = str(tmp_path / 'w')
  run = ['--gin_bindings=SubsetDesign.num_trials = 8',
         '--gin_bindings=TrialTrainer.epochs = 1']
  ranges = ['--trials=0:6', '--trials=2:8', '--trials=0:8']
  workers = [_start(workdir, digits_data_dir, run + [r]) for r in ranges]
  outputs = [_finish(w) for w in workers]
  trained = []
  for out in outputs:
    done = [line for line in out.splitlines() if line.startswith('Done:')]
    assert len(done) == 1, out[-2000:]
    trained.append(int(done[0].split('trained ')[1].split(',')[0]))
  # Each of the 8 trials trained exactly once, across all three workers.
  assert sum(trained) == 8, (trained, outputs)
  loaded = loading.load(workdir)
  np.testing.assert_array_equal(loaded.trial_indices, np.arange(8))
  assert not os.listdir(os.path.join(workdir, 'claims'))

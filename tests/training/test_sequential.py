"""Sequential training (train --target_stderr) and the inspect binary's planner.

The round arithmetic is tested with fake rounds (fast); one end-to-end run of
gin_configs/tiny.gin grows a workdir in place, resumes, and is inspected.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.estimation import pipeline
from tf_memorization.estimation import settings
from tf_memorization import inspect_workdir
from tf_memorization import train
from tf_memorization.training import sequential
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

from conftest import GIN_DIR, REPO, run_in_process

TINY = [os.path.join(GIN_DIR, 'tiny.gin')]
INDEPENDENT = ["SubsetDesign.design = 'independent'", 'TrialTrainer.epochs = 1',
               "get_strategy.kind = 'one_device'"]


class _FakeRounds:
  """train_round / assess_round doubles: `needed` answers the planner's
  question after each round (None: too few trials to plan)."""

  def __init__(self, needed, trains=True, diverged=0):
    self.needed, self.trains, self.diverged = list(needed), trains, diverged
    self.ks, self.on_disk = [], 0

  def train_round(self, k):
    self.ks.append(k)
    before = self.on_disk
    if self.trains:
      self.on_disk = max(self.on_disk, k)
    return train.RunSummary(trained=list(range(before, self.on_disk)),
                            skipped=[], fingerprint='f', workdir='w')

  def assess(self):
    needed = self.needed.pop(0)
    trials = self.on_disk - self.diverged  # the planner leaves them out
    if needed is None:
      return sequential.Assessment(trials, self.on_disk, why_not='too few')
    return sequential.Assessment(trials, self.on_disk, 0.123, needed)


def _train_until(fake, first=4, target=0.05, max_trials=100, round_trials=None):
  lines = []
  summary = sequential.train_until(fake.train_round, fake.assess, first,
                                   target, max_trials, round_trials,
                                   log=lines.append)
  return summary, lines


def test_rounds_grow_to_what_the_planner_asks_then_stop_at_the_target():
  fake = _FakeRounds([30, 35, 33])
  summary, lines = _train_until(fake, round_trials=4)
  # 4, then the planner's 30 (> 4 + 4), then 30 + 4 = 34 < its 35.
  assert fake.ks == [4, 30, 35]
  assert (summary.rounds, summary.stopped, summary.trials) == (3, 'target', 35)
  assert summary.trained == list(range(35))
  assert lines[0] == ('Round 1: 4 trials; planner: 0.9-quantile memorization '
                      'stderr 0.123 -> needs 30 trials (target 0.05)')
  assert lines[-1].startswith('Stopped after round 3: the 35 trials reach')


def test_rounds_add_round_trials_when_the_planner_asks_for_less():
  fake = _FakeRounds([6, 12, 12])
  summary, _ = _train_until(fake, first=4, round_trials=5)
  assert fake.ks == [4, 9, 14]  # +5 each time: more than the planner's
  assert summary.stopped == 'target'


def test_rounds_stop_at_max_trials():
  fake = _FakeRounds([1000, 1000])
  summary, lines = _train_until(fake, max_trials=10)
  assert fake.ks == [4, 10]
  assert (summary.stopped, summary.needed, summary.rounds) == (
      'max_trials', 1000, 2)
  assert lines[-1] == ('Stopped after round 2: --max_trials=10 reached with '
                       '10 trials (the planner needs 1000 for the target '
                       'stderr 0.05).')


def test_too_few_trials_to_plan_trains_another_round():
  fake = _FakeRounds([None, 4])
  summary, lines = _train_until(fake, first=2, round_trials=1)
  assert fake.ks == [2, 4]  # up to planner's minimum of 4, not just 2 + 1
  assert 'Round 1: 2 trials; planner: too few (target 0.05)' == lines[0]
  assert summary.stopped == 'target'


def test_every_round_grows_k_even_when_nothing_gets_trained():
  # Trials held by other (live) workers: the rounds still end at the cap.
  fake = _FakeRounds([50] * 10, trains=False)
  summary, _ = _train_until(fake, first=4, max_trials=7, round_trials=1)
  assert fake.ks == [4, 7] and summary.stopped == 'max_trials'


def test_diverged_trials_do_not_count_towards_the_target():
  fake = _FakeRounds([20, 20], diverged=2)
  summary, _ = _train_until(fake, round_trials=4)
  assert fake.ks == [4, 22]  # 20 the planner can use, and the 2 diverged
  assert (summary.trials, summary.stopped) == (20, 'target')


def test_a_resumed_run_starts_at_the_trials_on_disk(tmp_path):
  workdir = str(tmp_path / 'w')
  assert sequential.first_round(workdir, 4, 100) == 4  # nothing there yet
  os.makedirs(os.path.join(workdir, files.TRIALS_DIR))
  for t in (0, 1, 2, 6):  # an interrupted round of K = 7
    open(records.record_path(workdir, t), 'wb').close()
  assert sequential.first_round(workdir, 4, 100) == 7
  assert sequential.first_round(workdir, 4, 5) == 5   # never past the cap
  assert sequential.first_round(workdir, 8, 100) == 8


@pytest.mark.parametrize('kwargs, bindings, message', [
    (dict(target_stderr=0.05), INDEPENDENT, 'needs --max_trials'),
    (dict(max_trials=10), INDEPENDENT, 'pass --target_stderr too'),
    (dict(round_trials=3), INDEPENDENT, 'pass --target_stderr too'),
    (dict(target_stderr=0.0, max_trials=10), INDEPENDENT, 'must be > 0'),
    (dict(target_stderr=-1.0, max_trials=10), INDEPENDENT, 'must be > 0'),
    (dict(target_stderr=0.05, max_trials=10, round_trials=0), INDEPENDENT,
     '--round_trials=0 must be >= 1'),
    (dict(target_stderr=0.05, max_trials=10, trials='0:2'), INDEPENDENT,
     'drop --trials'),
    (dict(target_stderr=0.05, max_trials=10, shard_index=0, num_shards=2),
     INDEPENDENT, 'drop --trials'),
    (dict(target_stderr=0.05, max_trials=10), [],  # tiny.gin: balanced
     "needs SubsetDesign.design = 'independent'"),
    (dict(target_stderr=0.05, max_trials=3), INDEPENDENT,
     '--max_trials=3 is below SubsetDesign.num_trials = 4'),
])
def test_bad_sequential_flags_exit_2_with_one_line(tmp_path, kwargs, bindings,
                                                   message):
  workdir = tmp_path / 'w'
  status, _, err = run_in_process(lambda: train.run_sequential(
      str(workdir), TINY, bindings, **kwargs))
  assert status == 2, err
  error_lines = [l for l in err.splitlines() if l.startswith('error:')]
  assert len(error_lines) == 1 and message in error_lines[0], err
  assert not workdir.exists()  # refused before any work


@pytest.mark.slow
def test_the_binary_routes_the_sequential_flags(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'tf_memorization.train',
       '--gin_file=gin_configs/tiny.gin', f'--workdir={tmp_path / "w"}',
       '--target_stderr=0.05'], cwd=REPO, capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'), timeout=300,
      check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1].startswith(
      'error: --target_stderr needs --max_trials=N')


def test_planner_targets_of_inspect_are_checked():
  with pytest.raises(errors.UserError, match='target_pair_jaccard'):
    sequential.check_targets(0.05, 1.5)
  with pytest.raises(errors.UserError, match='target_stderr'):
    sequential.check_targets(0, 0.7)


def _copy_trials(source, target, trial_indices):
  """A workdir holding some of `source`'s trials (same config)."""
  os.makedirs(os.path.join(target, files.TRIALS_DIR))
  for name in (files.DATASET_FILE, files.CONFIG_FILE, files.RUN_FILE):
    shutil.copy(os.path.join(source, name), os.path.join(target, name))
  for t in trial_indices:
    shutil.copy(records.record_path(source, t), records.record_path(target, t))


@pytest.mark.slow
def test_sequential_run_grows_in_place_resumes_and_is_inspected(
    tmp_path, digits_data_dir):
  workdir = str(tmp_path / 'w')
  lines = []

  def sequential_run(target, max_trials=4, round_trials=2):
    lines.clear()
    return train.run_sequential(
        workdir, TINY, INDEPENDENT + ['SubsetDesign.num_trials = 2'], target,
        max_trials, round_trials, data_dir=digits_data_dir, log=lines.append)

  # 2 trials are too few to plan, 4 cannot reach the target: two rounds,
  # stopped at the cap.
  first = sequential_run(0.001)
  assert (first.rounds, first.stopped) == (2, 'max_trials')
  assert first.trained == [0, 1, 2, 3] and first.trials == 4
  assert first.needed > 4
  assert list(records.list_records(workdir)) == [0, 1, 2, 3]
  rounds = [l for l in lines if l.startswith('Round ')]
  assert len(rounds) == 2
  assert rounds[0] == ('Round 1: 2 trials; planner: planning needs at least 4 '
                       'trials, there are 2 (target 0.001)')
  assert rounds[1].startswith('Round 2: 4 trials; planner: 0.9-quantile '
                              'memorization stderr 0.')
  assert rounds[1].endswith(f' -> needs {first.needed} trials (target '
                            '0.001)')
  assert lines[-1].startswith('Stopped after round 2: --max_trials=4 reached')

  # One fingerprint for all: num_trials is not part of the independent
  # design's; the workdir's config names the last round's K.
  loaded = loading.load(workdir, margins=False)
  assert {m['fingerprint'] for m in loaded.metadata} == {first.fingerprint}
  assert [m['num_trials'] for m in loaded.metadata] == [2, 2, 4, 4]
  with open(os.path.join(workdir, files.CONFIG_FILE)) as f:
    config_text = f.read()
  assert 'SubsetDesign.num_trials = 4' in config_text
  assert first.fingerprint in config_text
  with open(records.run_file_path(workdir)) as f:
    assert json.load(f)['fingerprint'] == first.fingerprint

  # The same command again: nothing to train, it stops after one round
  # (which resumes at the K on disk, so the config keeps K = 4).
  again = sequential_run(0.001)
  assert (again.trained, again.rounds, again.stopped) == ([], 1, 'max_trials')
  assert lines[-1].startswith('Stopped after round 1: --max_trials=4')
  with open(os.path.join(workdir, files.CONFIG_FILE)) as f:
    assert 'SubsetDesign.num_trials = 4' in f.read()
  # A target these trials reach: stops at once, by the target.
  reached = sequential_run(1.0)
  assert (reached.trained, reached.rounds, reached.stopped) == (
      [], 1, 'target')
  assert reached.needed <= 4
  assert list(records.list_records(workdir)) == [0, 1, 2, 3]

  # The estimator accepts the grown workdir, with its config.
  summary = pipeline.run(
      workdir, gin_bindings=['Estimator.report = False',
                             'Estimator.split_half = False',
                             'Estimator.null_permutations = 0',
                             'Estimator.convergence = False'],
      data_dir=digits_data_dir, log=lambda _: None)
  assert summary['planner']['trials'] == 4

  # The inspect binary prints the planner: advice and 4 rows (x2..x16).
  status, out, err = run_in_process(
      lambda: print(inspect_workdir.summarize(workdir, 0.05, 0.7)))
  assert status == 0, err
  assert '  Planner: ' in out
  table = out.strip().splitlines()[-4:]
  assert [int(row.split()[0]) for row in table] == [8, 16, 32, 64]
  stderrs = [float(row.split()[2]) for row in table]  # RMS: halves per x4
  assert stderrs == sorted(stderrs, reverse=True)
  assert stderrs[2] == pytest.approx(stderrs[0] / 2, abs=2e-3)
  # On a 2-trial workdir it says why it cannot plan, and does not crash.
  small = str(tmp_path / 'small')
  _copy_trials(workdir, small, [0, 1])
  status, out, err = run_in_process(
      lambda: print(inspect_workdir.summarize(small)))
  assert status == 0, err
  assert ('  planner: planning needs at least 4 trials, there are 2; train '
          'more trials') in out
  # Diverged trials are left out of the plan, as the estimator leaves them.
  loaded = loading.load(workdir, diverged='keep')
  loaded.diverged = {0: 'constant predictions'}
  assert 'there are 3' in sequential.planner_lines(
      loaded, settings.Estimator(), 0.05, 0.7)[0]

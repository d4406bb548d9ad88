"""The experiments' interface, used from outside the package.

An experiment defined here (as a user would define one in their own module)
is registered with experiments.base.register and run by the estimator
through `Estimator.experiments`: it gets the main run's records and scores,
the trials' setup and a trainer factory, and its summary lands in
summary.json. Every config is checked before any score is computed, and a
failed estimate leaves W/estimates as it was.
"""

import os
import shutil

import gin
import numpy as np
import pytest

from tf_memorization.core import errors
from tf_memorization.estimation import pipeline
from tf_memorization.experiments import base
from tf_memorization.stats import scores
from tf_memorization.training import trainer as trainer_lib
from tf_memorization.workdir import estimates

from conftest import snapshot

pytestmark = pytest.mark.slow  # trains a small run; see conftest

NUM_TRIALS = 4


@gin.configurable
class ProbeExperiment(base.Experiment):
  """Records what it is handed; `fail` raises in the middle of the run."""

  seen = []

  def __init__(self, threshold=0.5, fail=False):
    self.threshold = errors.number('ProbeExperiment.threshold', threshold,
                                   minimum=0)
    self.fail = fail

  def run(self, inputs):
    ProbeExperiment.seen.append(inputs)
    if self.fail:
      raise RuntimeError('probe failed halfway')
    trainer = inputs.new_trainer()
    assert isinstance(trainer, trainer_lib.TrialTrainer)
    again = inputs.influence_of(inputs.records,
                                inputs.memorization.memorization, topk=0)
    return {'memorized': int(np.nansum(
        inputs.memorization.memorization >= self.threshold)),
            'pairs_again': int(len(again.pair_train)),
            'trials': int(inputs.records.num_trials)}


@pytest.fixture(scope='module', autouse=True)
def _registered():
  """Registered while this module's tests run (as a user's module would
  register it on import); the other modules see the package's own."""
  base.register('probe')(ProbeExperiment)
  yield
  base.REGISTRY.pop('probe', None)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, tiny_workdir):
  """A copy of the session's tiny workdir (conftest.tiny_workdir: tiny.gin's
  4 trials), for the experiments to write into."""
  path = str(tmp_path_factory.mktemp('interface') / 'w')
  shutil.copytree(tiny_workdir, path)
  return path


def _estimate(workdir, data_dir, bindings, lines=None):
  """pipeline.run in process; (summary, the lines it logged)."""
  lines = [] if lines is None else lines
  try:
    return pipeline.run(workdir, gin_bindings=bindings, data_dir=data_dir,
                        log=lines.append), lines
  finally:
    gin.clear_config()


def test_a_registered_experiment_runs_with_what_it_needs(workdir,
                                                         digits_data_dir):
  ProbeExperiment.seen.clear()
  summary, _ = _estimate(workdir, digits_data_dir, [
      "Estimator.experiments = ('probe',)", 'Estimator.report = False',
      'ProbeExperiment.threshold = 0.25'])
  inputs, = ProbeExperiment.seen
  assert inputs.records.num_trials == NUM_TRIALS
  assert inputs.output_dir != estimates.estimates_dir(workdir)  # the stage
  result = summary['experiments']['probe']
  expected = scores.memorization(inputs.records.masks,
                                 inputs.records.train_correct).memorization
  assert result['memorized'] == int(np.nansum(expected >= 0.25))
  assert result['pairs_again'] == summary['num_pairs']
  assert result['trials'] == NUM_TRIALS and result['seconds'] >= 0
  # Its bindings do not change what a trial computes.
  assert inputs.setup.fingerprint == summary['fingerprint']


def test_a_bad_binding_of_it_fails_before_anything_is_loaded(
    workdir, digits_data_dir):
  before = snapshot(workdir)
  lines = []
  with pytest.raises(errors.USER_ERRORS, match='ProbeExperiment.threshold'):
    _estimate(workdir, digits_data_dir, [
        "Estimator.experiments = ('probe',)",
        'ProbeExperiment.threshold = -1'], lines)
  assert lines == []  # not even the records were loaded
  assert snapshot(workdir) == before


def test_a_training_binding_is_refused_before_the_scores(workdir,
                                                         digits_data_dir):
  """A training binding that changes the fingerprint: refused once the
  records are loaded, before the influence pass, with nothing written."""
  before = snapshot(workdir)
  lines = []
  with pytest.raises(errors.UserError, match='differs from the one the '
                     'trials'):
    _estimate(workdir, digits_data_dir, [
        "Estimator.experiments = ('probe',)", 'TrialTrainer.epochs = 2'],
              lines)
  assert any(line.startswith('Loaded') for line in lines), lines
  assert not any('influence' in line for line in lines), lines
  assert snapshot(workdir) == before


def test_a_failed_experiment_leaves_the_estimates_as_they_were(
    workdir, digits_data_dir):
  _estimate(workdir, digits_data_dir, ['Estimator.report = False'])
  before = snapshot(estimates.estimates_dir(workdir))
  with pytest.raises(RuntimeError, match='probe failed halfway'):
    _estimate(workdir, digits_data_dir, [
        "Estimator.experiments = ('probe',)", 'ProbeExperiment.fail = True'])
  assert snapshot(estimates.estimates_dir(workdir)) == before
  leftovers = [name for name in os.listdir(workdir) if '.tmp-' in name]
  assert not leftovers

"""The ablation on a user's model whose layers have no names.

Keras names unnamed layers by a per-process counter (dense, dense_1,
dense_2, ...), so every build of such a model has other names, and names
read from one build (the estimator's) are no layers of the next (the
ablation's trainer's). The user's MLPs (tests/userland/my_research/
unnamed.py, a functional one and a keras.Sequential) come in through a gin
`import`, as a user's own package does, and are built a few times before
each run so that the automatic names shift.
"""

import json
import os
import shutil

import gin
import numpy as np
import pytest

from conftest import GIN_DIR, USERLAND, layer_names, read_npz, snapshot
from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.data import pipelines
from tf_memorization.estimation import pipeline
from tf_memorization.experiments import ablation
from tf_memorization import train
from tf_memorization.training import initializing
from tf_memorization.training import models
from tf_memorization.training import strategy as strategy_lib
from tf_memorization.training import trainer as trainer_lib
from tf_memorization.workdir import estimates
from tf_memorization.workdir import records

IMPORT = 'import my_research.unnamed\n'
BUILDERS = ('plain_mlp', 'plain_sequential')
NUM_TRIALS, ABLATION_TRIALS = 4, 2
ESTIMATE = f"""
Estimator.experiments = ('ablation',)
Estimator.report = False
AblationExperiment.trainable_blocks = (0, 1)
AblationExperiment.max_trials = {ABLATION_TRIALS}
"""


@pytest.fixture(scope='module')
def unnamed():
  """The user's module, importable as a PYTHONPATH entry makes it."""
  with pytest.MonkeyPatch.context() as patch:
    patch.syspath_prepend(USERLAND)
    patch.setenv('PYTHONPATH', os.pathsep.join(
        [USERLAND] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    from my_research import unnamed as module  # pylint: disable=g-import-not-at-top
    yield module


def _builds(builder, count=3):
  return [builder((8, 8, 1), 10) for _ in range(count)]


# --------------------------------------------------------------------------
# Layers found by position, the same in every build


@pytest.mark.parametrize('builder', BUILDERS)
def test_blocks_and_head_are_positions_shared_by_every_build(unnamed,
                                                             builder):
  builds = _builds(getattr(unnamed, builder))
  names = [[layer.name for layer in model.layers] for model in builds]
  assert len({tuple(n) for n in names}) == len(builds)  # names shift
  for model in builds:
    dense = [i for i, layer in enumerate(model.layers) if layer.weights]
    assert len(dense) == 3
    assert ablation.head_index(model) == dense[-1] == len(model.layers) - 1
    assert ablation.blocks(model) == [[dense[0]], [dense[1]]]
    assert ablation.trainable_indices(model, 0) == [dense[2]]
    assert ablation.trainable_indices(model, 1) == dense[1:]
    # The bindings by index: the head as -1, a block list.
    assert ablation.trainable_indices(model, 0, head_layer=-1) == [dense[2]]
    assert ablation.trainable_indices(
        model, 1, block_layers=(dense[0],)) == [dense[0], dense[2]]


def test_a_name_of_another_build_is_refused_listing_layers_by_index(unnamed):
  first, last = _builds(unnamed.plain_mlp, 2)
  head = first.layers[ablation.head_index(first)].name
  with pytest.raises(errors.UserError) as info:
    ablation.trainable_indices(last, 0, head_layer=head)
  message = str(info.value)
  assert f"AblationExperiment.head_layer names ['{head}']" in message
  assert f'4 {last.layers[4].name}' in message and 'index' in message
  with pytest.raises(errors.UserError, match='holds the head'):
    ablation.blocks(last, block_layers=(2, -1))
  with pytest.raises(errors.UserError, match=r'\[7\]'):
    ablation.blocks(last, block_layers=(7,))
  with pytest.raises(errors.ConfigError, match='AblationExperiment.head_layer'):
    ablation.AblationExperiment(head_layer=1.5)
  assert ablation.AblationExperiment(head_layer=-1,
                                     block_layers=('x', 2)).head_layer == -1


def test_frozen_layers_by_position_in_another_build(unnamed):
  first, other = _builds(unnamed.plain_sequential, 2)
  keep = ablation.trainable_indices(first, 1)
  frozen = initializing.freeze_all_but(other, keep)
  trainable = [i for i, layer in enumerate(other.layers) if layer.trainable]
  assert trainable == keep
  assert {id(v) for v in frozen} == {
      id(v) for i, layer in enumerate(other.layers) if i not in keep
      for v in layer.weights}
  with pytest.raises(errors.ConfigError, match='TrialTrainer.trainable_layers'):
    initializing.freeze_all_but(_builds(unnamed.plain_sequential, 1)[0],
                                layer_names(first, keep))


@pytest.mark.slow
def test_the_ablation_trainer_moves_only_the_head_of_every_copy(
    unnamed, digits_data_dir):
  """The trainer builds the model again (twice: two copies per step); the
  positions found in a probe build pick the same layers in every copy."""
  dataset = pipelines.load_dataset('sklearn_digits', data_dir=digits_data_dir)
  probe = unnamed.plain_mlp((8, 8, 1), 10)
  reference = probe.get_weights()
  head = ablation.trainable_indices(probe, 0)
  trainer = trainer_lib.TrialTrainer(
      dataset, strategy_lib.get_strategy('one_device'),
      model_fn=unnamed.plain_mlp, epochs=1, batch_size=64,
      trainable_layers=head, models_per_step=2)
  assert [layer.name for layer in trainer.models[1].layers] != [
      layer.name for layer in probe.layers]
  trainer.set_base_weights(reference)
  masks = np.zeros((2, len(dataset.train)), bool)
  masks[0, ::2] = masks[1, 1::2] = True
  trainer.train_trials(list(masks), [5, 6])
  for model in trainer.models:
    base = {id(w): value for w, value in zip(model.weights, reference)}
    moved = {index for index, layer in enumerate(model.layers)
             if any(not np.array_equal(w.numpy(), base[id(w)])
                    for w in layer.weights)}
    assert moved == set(head)


@pytest.mark.slow
def test_a_sequential_without_an_input_trains(unnamed, digits_data_dir):
  """keras.Sequential([Flatten(), Dense(...)]) has no weights until built:
  the trainer builds it for the data's shape, and every copy learns."""
  dataset = pipelines.load_dataset('sklearn_digits', data_dir=digits_data_dir)
  trainer = trainer_lib.TrialTrainer(
      dataset, strategy_lib.get_strategy('one_device'),
      model_fn=unnamed.sequential_without_input, epochs=3, batch_size=64,
      base_learning_rate=0.05, models_per_step=2)
  assert all(len(m.trainable_variables) == 4 for m in trainer.models)
  masks = np.zeros((2, len(dataset.train)), bool)
  masks[0, ::2] = masks[1, 1::2] = True
  for result in trainer.train_trials(list(masks), [5, 6]):
    assert result.metrics['test_accuracy'] > 0.5  # chance is 0.1
  with pytest.raises(errors.ConfigError, match='model_fn returned a dict'):
    trainer_lib.TrialTrainer(dataset, strategy_lib.get_strategy('one_device'),
                             model_fn=lambda **_: {}, epochs=1)


# --------------------------------------------------------------------------
# End to end: trained and estimated as a user runs them


def _write(path, text):
  with open(path, 'w') as f:
    f.write(text)
  return str(path)


def _estimate(workdir, gin_file, data_dir):
  try:
    return pipeline.run(workdir, [gin_file], [], data_dir=data_dir,
                        log=lambda _: None)
  finally:
    gin.clear_config()


@pytest.fixture(scope='module')
def estimated(unnamed, tmp_path_factory, digits_data_dir):
  """A workdir of the user's functional MLP (the Sequential's layers are
  found the same way: the tests above), trained then estimated with the
  ablation, each after a few more builds of the model. Two trials per
  step: the trainer's copies too have other names than its first model."""
  builder = 'plain_mlp'
  root = tmp_path_factory.mktemp(builder)
  mine = _write(root / 'mine.gin', IMPORT + (
      f'TrialTrainer.model_fn = @{builder}\n'
      f'SubsetDesign.num_trials = {NUM_TRIALS}\n'
      'TrialTrainer.epochs = 2\n'
      'TrialTrainer.models_per_step = 2\n'
      "get_strategy.kind = 'one_device'\n"))
  workdir = str(root / 'w')
  _builds(getattr(unnamed, builder))
  try:
    trained = train.run(workdir, [os.path.join(GIN_DIR, 'tiny.gin'), mine],
                        [], data_dir=digits_data_dir, log=lambda _: None)
  finally:
    gin.clear_config()
  assert trained.trained == list(range(NUM_TRIALS))
  gin_file = _write(root / 'estimate.gin', IMPORT + ESTIMATE)
  _builds(getattr(unnamed, builder), 2)
  summary = _estimate(workdir, gin_file, digits_data_dir)
  return {'workdir': workdir, 'gin_file': gin_file, 'summary': summary,
          'builder': builder}


@pytest.mark.slow
def test_the_ablation_runs_on_a_model_without_layer_names(estimated):
  variants = estimated['summary']['experiments']['ablation']['variants']
  assert [v['variant'] for v in variants] == [
      'full network', 'last layer only', 'last 1 blocks + head']
  for variant in variants:
    assert variant['mean_test_accuracy'] > 0.3, variant  # chance: 0.1
  out = estimates.estimates_dir(estimated['workdir'])
  assert os.path.exists(os.path.join(out, estimates.ABLATION_PNG))
  for name in ('ablation_last0', 'ablation_last1'):
    directory = os.path.join(estimated['workdir'], files.EXPERIMENTS_DIR,
                             name)
    assert sorted(records.list_records(directory)) == list(
        range(ABLATION_TRIALS))


@pytest.mark.slow
def test_a_second_estimate_after_more_builds_retrains_nothing(
    estimated, unnamed, digits_data_dir):
  experiments_dir = os.path.join(estimated['workdir'],
                                 files.EXPERIMENTS_DIR)
  before = snapshot(experiments_dir)
  _builds(getattr(unnamed, estimated['builder']), 3)
  summary = _estimate(estimated['workdir'], estimated['gin_file'],
                      digits_data_dir)
  assert snapshot(experiments_dir) == before
  again = summary['experiments']['ablation']
  first = estimated['summary']['experiments']['ablation']
  assert again['variants'] == first['variants']


@pytest.mark.slow
def test_a_resumed_ablation_retrains_the_same_models(
    estimated, unnamed, tmp_path, digits_data_dir):
  """After more builds (other automatic names, as in another process), the
  estimate retrains the deleted records of both variants to the same
  predictions, keeping the plans."""
  copy = str(tmp_path / 'w')
  shutil.copytree(estimated['workdir'], copy)
  deleted = {}
  for name in ('ablation_last0', 'ablation_last1'):
    directory = os.path.join(copy, files.EXPERIMENTS_DIR, name)
    path = records.list_records(directory)[1]
    deleted[name] = read_npz(path)
    os.remove(path)
  plans = {name: open(os.path.join(copy, files.EXPERIMENTS_DIR, name,
                                   files.PLAN_FILE)).read()
           for name in deleted}
  _builds(unnamed.plain_mlp, 2)
  _estimate(copy, estimated['gin_file'], digits_data_dir)
  for name, old in deleted.items():
    directory = os.path.join(copy, files.EXPERIMENTS_DIR, name)
    with open(os.path.join(directory, files.PLAN_FILE)) as f:
      assert f.read() == plans[name]
    new = read_npz(records.list_records(directory)[1])
    for key in ('train_pred', 'test_pred'):
      np.testing.assert_array_equal(new[key], old[key], err_msg=name)
    assert json.loads(str(new['metadata']))['seed'] == json.loads(
        str(old['metadata']))['seed']

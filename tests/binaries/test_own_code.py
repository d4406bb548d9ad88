"""A user's own dataset builder and model, through gin `import`, offline.

The package under tests/userland/my_research is written as a user would
write theirs, outside tf_memorization: a tfds builder that prepares from
local files, a Keras model builder whose layers are not named like ours,
and a builder that needs a download. Tests put its folder on sys.path (as
PYTHONPATH would) and reach it only through gin `import` lines.
"""

import json
import os
import socket
import sys

import gin
import numpy as np
import pytest

from conftest import GIN_DIR, USERLAND, layer_names, run_in_process
from tf_memorization.core import config
from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.data import pipelines
from tf_memorization.estimation import pipeline
from tf_memorization.experiments import ablation
from tf_memorization import train
from tf_memorization.workdir import estimates

MODULES = ('my_research.parity_digits', 'my_research.models')
IMPORTS = ''.join(f'import {m}\n' for m in MODULES)
# The user's training config, on top of gin_configs/tiny.gin.
BINDINGS = """
load_dataset.name = 'parity_digits'
TrialTrainer.model_fn = @tiny_cnn
tiny_cnn.filters = 8
tiny_cnn.hidden = 16
TrialTrainer.epochs = 6
TrialTrainer.batch_size = 16
SubsetDesign.num_trials = 6
"""
EXPERIMENTS = """
Estimator.experiments = ('ablation', 'removal', 'leave_one_out')
AblationExperiment.trainable_blocks = (0, 1)
RemovalExperiment.thresholds = (0.25,)
RemovalExperiment.repeats = 1
LeaveOneOutExperiment.per_group = 1
LeaveOneOutExperiment.repeats = 1
LeaveOneOutExperiment.target_stderr = None
"""


@pytest.fixture
def userland(monkeypatch):
  """The user's package importable, as a PYTHONPATH entry makes it."""
  monkeypatch.syspath_prepend(USERLAND)
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
      [USERLAND] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
  return USERLAND


def _write(path, text):
  with open(path, 'w') as f:
    f.write(text)
  return str(path)


def _offline(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args} {kwargs}')

  monkeypatch.setattr(socket, 'create_connection', refuse)


# --------------------------------------------------------------------------
# The workdir's config: bindings only, imports recorded as data


def test_workdir_config_records_imports_as_data_and_fingerprints_ignore_them():
  text = ('import my_research.parity_digits\nimport my_research.models\n\n'
          "load_dataset.name = 'parity_digits'\n"
          "load_dataset.data_dir = '/data/tfds'\n"
          'tiny_cnn.filters = 4\n')
  stored = config.for_workdir(text)
  assert stored == (f'{config.IMPORTS_LINE} my_research.models, '
                    'my_research.parity_digits\n'
                    "load_dataset.name = 'parity_digits'\n"
                    'tiny_cnn.filters = 4\n')
  assert sorted(config.recorded_imports(stored)) == sorted(MODULES)
  assert config.imports_of(text) == list(MODULES)
  assert config.recorded_imports(text) == []  # an import line is not data
  without = text.split('\n\n', 1)[1]
  assert config.fingerprinted_lines(text) == config.fingerprinted_lines(
      without) == ["load_dataset.name = 'parity_digits'", 'tiny_cnn.filters = 4']


def test_workdir_config_with_recorded_imports_passes_the_bindings_check(
    tmp_path):
  path = _write(tmp_path / files.CONFIG_FILE, config.for_workdir(
      'import os.path\nload_dataset.name = "x"\n'))
  config.check_bindings_only(path)  # the comment line is not a statement
  assert config.recorded_imports(open(path).read()) == ['os.path']


def test_missing_import_names_the_module_and_the_flag(tmp_path):
  path = _write(tmp_path / files.CONFIG_FILE, config.for_workdir(
      'import my_research.not_imported_here\n'
      "load_dataset.name = 'sklearn_digits'\n"))
  with pytest.raises(errors.UserError) as info:
    config.parse_gin([path], [])
  message = str(info.value)
  assert 'my_research.not_imported_here' in message
  assert '--gin_file=' in message and path in message


def test_module_that_cannot_be_imported_is_one_error_line(tmp_path):
  gin_file = _write(tmp_path / 'mine.gin',
                    f'include "{GIN_DIR}/tiny.gin"\n'
                    'import no_such_research_module_xyz\n')
  workdir = str(tmp_path / 'w')

  def main():
    train.run(workdir, [gin_file], [], log=lambda _: None)

  status, out, err = run_in_process(main)
  lines = [line for line in err.splitlines() if line.strip()]
  assert status == 2, err
  assert len(lines) == 1 and lines[0].startswith('error:'), err
  assert 'no_such_research_module_xyz' in lines[0]
  assert f'{gin_file} line 2' in lines[0]
  assert 'PYTHONPATH' in lines[0]
  assert not os.path.exists(workdir) and out == ''


# --------------------------------------------------------------------------
# Any tfds builder, offline


def test_own_builder_prepares_offline_with_downloads_off(
    userland, tmp_path, monkeypatch):
  del userland
  _offline(monkeypatch)
  config.parse_gin([], ['import my_research.parity_digits'])
  dataset = pipelines.load_dataset('parity_digits', data_dir=str(tmp_path),
                                   download=False)
  assert dataset.num_classes == 2
  assert dataset.class_names == ('even', 'odd')
  assert (len(dataset.train), len(dataset.test)) == (449, 150)
  assert set(np.unique(dataset.train.labels)) == {0, 1}


def test_builder_that_downloads_fails_fast_naming_the_url(
    userland, tmp_path):
  del userland
  config.parse_gin([], ['import my_research.remote_data'])
  data_dir = str(tmp_path / 'tfds')
  # Port 9 on this machine refuses: the host of the URL cannot be reached.
  with pytest.raises(pipelines.DataNotPreparedError) as info:
    pipelines.prepare_builder('remote_data', data_dir)
  message = str(info.value)
  assert 'http://127.0.0.1:9/remote_data.npz' in message
  assert '127.0.0.1 cannot be reached' in message
  assert 'tfds build --imports=my_package.my_builder remote_data' in message
  with pytest.raises(pipelines.DataNotPreparedError, match='downloads are off'):
    pipelines.prepare_builder('remote_data', data_dir, download=False)
  assert os.listdir(data_dir) == ['.remote_data.prepare.lock']


# --------------------------------------------------------------------------
# The ablation's blocks on a model that is not one of ours


def test_blocks_of_a_model_of_your_own(userland):
  del userland
  from my_research import models  # pylint: disable=g-import-not-at-top
  model = models.tiny_cnn((8, 8, 1), 2)

  def trainable(num_blocks, **kwargs):
    return layer_names(model, ablation.trainable_indices(model, num_blocks,
                                                         **kwargs))

  def blocks(**kwargs):
    return [layer_names(model, block)
            for block in ablation.blocks(model, **kwargs)]

  assert model.layers[ablation.head_index(model)].name == 'class_scores'
  assert blocks() == [['conv1'], ['conv2'], ['hidden']]
  assert trainable(0) == ['class_scores']
  assert trainable(2) == ['conv2', 'hidden', 'class_scores']
  assert trainable(1, block_layers=('conv1', 'conv2')) == ['conv2',
                                                           'class_scores']
  assert trainable(0, head_layer='hidden') == ['hidden']
  with pytest.raises(errors.UserError, match=r'tiny_cnn has 3 \(\['):
    trainable(4)
  with pytest.raises(errors.UserError, match="'dense_9'"):
    blocks(block_layers=('dense_9',))
  with pytest.raises(errors.UserError, match='holds the head'):
    blocks(block_layers=('hidden', 'class_scores'))


# --------------------------------------------------------------------------
# End to end: trained and estimated with every experiment


@pytest.mark.slow
def test_own_builder_and_model_train_and_estimate_with_every_experiment(
    userland, tmp_path, monkeypatch):
  del userland
  _offline(monkeypatch)
  tiny = os.path.join(GIN_DIR, 'tiny.gin')
  mine = _write(tmp_path / 'mine.gin', IMPORTS + BINDINGS)
  workdir, data_dir = str(tmp_path / 'w'), str(tmp_path / 'tfds')
  summary = train.run(workdir, [tiny, mine], [], data_dir=data_dir,
                      log=lambda _: None)
  assert summary.trained == list(range(6))

  stored = open(os.path.join(workdir, files.CONFIG_FILE)).read()
  assert not [line for line in stored.splitlines()
              if line.startswith(('import', 'from'))]
  assert sorted(config.recorded_imports(stored)) == sorted(MODULES)
  assert 'tiny_cnn.filters = 8' in stored

  # The same bindings without the import lines (the modules imported some
  # other way) are the same config: the run resumes, nothing retrains.
  gin.clear_config()
  same = _write(tmp_path / 'same.gin', BINDINGS)
  again = train.run(workdir, [tiny, same], [], data_dir=data_dir,
                    log=lambda _: None)
  assert again.trained == [] and again.fingerprint == summary.fingerprint

  # The estimator gets the imports from the user's own gin file.
  gin.clear_config()
  est = _write(tmp_path / 'estimate.gin', IMPORTS + EXPERIMENTS)
  result = pipeline.run(workdir, [est], ['Estimator.report = False'],
                        data_dir=data_dir, log=lambda _: None)
  assert set(result['experiments']) == {'ablation', 'removal',
                                        'leave_one_out'}
  out = estimates.estimates_dir(workdir)
  variants = json.load(open(os.path.join(out, 'ablation.json')))['variants']
  assert [v['variant'] for v in variants] == [
      'full network', 'last layer only', 'last 1 blocks + head']
  for variant in variants:
    assert 0.75 < variant['mean_test_accuracy'] <= 1.0  # chance: 0.5
  with open(os.path.join(out, estimates.MEMORIZATION_CSV)) as f:
    assert len(f.read().splitlines()) == 1 + 449

  # Passing the training gin files again (plus the estimator's) is the
  # same config too.
  gin.clear_config()
  est_only = _write(tmp_path / 'experiments.gin', EXPERIMENTS)
  pipeline.run(workdir, [tiny, mine, est_only], ['Estimator.report = False'],
               data_dir=data_dir, log=lambda _: None)

  # A process that has not imported the user's modules is told which to
  # bring and how.
  gin.clear_config()
  for module in MODULES:
    monkeypatch.delitem(sys.modules, module)
  with pytest.raises(errors.UserError) as info:
    pipeline.run(workdir, [], [], data_dir=data_dir, log=lambda _: None)
  message = str(info.value)
  assert 'my_research.parity_digits' in message
  assert 'my_research.models' in message
  assert '--gin_file=YOUR.gin' in message

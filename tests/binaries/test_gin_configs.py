"""Every shipped .gin file parses strictly and builds what it configures."""

import glob
import os

import gin
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tf_memorization.core import config
from tf_memorization.data import pipelines
from tf_memorization.stats import masks
from tf_memorization.training import strategy
from tf_memorization.training import trainer as trainer_lib

from conftest import GIN_DIR

ALL_GIN_FILES = sorted(glob.glob(os.path.join(GIN_DIR, '*.gin')))
# Estimator settings (`python -m tf_memorization.estimate --gin_file=…`).
ESTIMATE_GIN_FILES = [p for p in ALL_GIN_FILES if p.endswith('_estimate.gin')]
GIN_FILES = [p for p in ALL_GIN_FILES if p not in ESTIMATE_GIN_FILES]
# Stored image shape of each dataset (ImageNet: the model's crop size).
IMAGE_SHAPES = {'cifar10': (32, 32, 3), 'cifar100': (32, 32, 3),
                'mnist': (28, 28, 1), 'sklearn_digits': (8, 8, 1),
                'imagenet2012': (224, 224, 3)}
NUM_CLASSES = {'cifar10': 10, 'cifar100': 100, 'mnist': 10,
               'sklearn_digits': 10, 'imagenet2012': 1000}
# Shrinks every model so building and one forward pass take little time.
SMALL = ['resnet50.width = 4', 'resnet18.width = 4', 'resnet_cifar.width = 4',
         'small_resnet.width = 4']


def test_the_expected_configs_ship():
  names = {os.path.basename(p) for p in GIN_FILES}
  assert {'demo.gin', 'cifar100.gin', 'cifar10.gin', 'mnist.gin',
          'imagenet.gin', 'tiny.gin'} <= names


@pytest.mark.parametrize('path', ALL_GIN_FILES, ids=os.path.basename)
def test_config_starts_with_the_command_and_expectations(path):
  with open(path) as f:
    header = f.read().split('\n\n')[0]
  assert header.startswith('# ')
  binary = ('tf_memorization.estimate' if path in ESTIMATE_GIN_FILES
            else 'tf_memorization.train')
  assert binary in header or './run.sh' in header
  assert 'Expect' in header


@pytest.mark.parametrize('path', ESTIMATE_GIN_FILES, ids=os.path.basename)
def test_estimate_config_parses_and_names_known_experiments(path):
  from tf_memorization.estimation import settings as settings_lib  # pylint: disable=g-import-not-at-top
  from tf_memorization import experiments  # pylint: disable=g-import-not-at-top
  config.parse_gin([path], [])
  estimator = settings_lib.Estimator()
  assert estimator.experiments
  assert set(estimator.experiments) <= {'ablation', 'removal',
                                        'leave_one_out', 'ratio_sweep'}
  experiments.RemovalExperiment()
  experiments.AblationExperiment()


@pytest.mark.parametrize('path', GIN_FILES, ids=os.path.basename)
def test_config_parses_and_builds_its_model(path):
  config.parse_gin([path], SMALL)
  design = masks.SubsetDesign()
  assert design.num_trials >= 2 and 0 < design.subset_ratio < 1
  name = gin.query_parameter('load_dataset.name')
  augment = pipelines.Preprocessing().resolve(name)[2]
  assert augment in pipelines.AUGMENTATIONS
  model_fn = gin.query_parameter('TrialTrainer.model_fn').scoped_configurable_fn
  model = model_fn(input_shape=IMAGE_SHAPES[name],
                   num_classes=NUM_CLASSES[name])
  logits = model(np.zeros((2,) + IMAGE_SHAPES[name], np.float32))
  assert logits.shape == (2, NUM_CLASSES[name])
  assert gin.query_parameter('TrialTrainer.epochs') >= 1


@pytest.mark.parametrize('name', ['cifar100.gin', 'cifar10.gin', 'mnist.gin'])
def test_config_builds_its_trainer_on_mock_data(name, tmp_path):
  config.parse_gin([os.path.join(GIN_DIR, name)],
                   SMALL + [f"load_dataset.data_dir = '{tmp_path}'"])
  with tfds.testing.mock_data(num_examples=8):
    dataset = pipelines.load_dataset()
    trainer = trainer_lib.TrialTrainer(dataset, strategy.get_strategy())
  assert trainer.model.output_shape[-1] == dataset.num_classes
  assert trainer.epochs == gin.query_parameter('TrialTrainer.epochs')

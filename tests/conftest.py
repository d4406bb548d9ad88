"""Shared test set-up: two logical CPU devices, quiet TF, a prepared digits dir.

The CPU is split before any TensorFlow op runs, so MirroredStrategy can be
tested on a CPU-only machine (2 replicas).
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import gin  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices('CPU')[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(REPO, 'gin_configs')


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture(scope='session')
def digits_data_dir(tmp_path_factory):
  """A tfds data dir with sklearn_digits prepared (offline, ~1 s)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import tf_memorization.datasets  # pylint: disable=g-import-not-at-top,unused-import
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  tfds.builder('sklearn_digits', data_dir=data_dir).download_and_prepare()
  return data_dir


def train_tiny(path, bindings, data_dir, trials=None):
  """Trains trials of gin_configs/tiny.gin into `path` in process; the summary."""
  from tf_memorization import train  # pylint: disable=g-import-not-at-top
  summary = train.run(path, [os.path.join(GIN_DIR, 'tiny.gin')], bindings,
                      trials=trials, data_dir=data_dir, log=lambda _: None)
  gin.clear_config()
  return summary

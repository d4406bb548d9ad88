"""Shared test set-up: two logical CPU devices, quiet TF, a prepared digits dir.

The CPU is split before any TensorFlow op runs, so MirroredStrategy can be
tested on a CPU-only machine (2 replicas).
"""

import atexit
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import stat
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# tfds's default data dir, for this process and the binaries it starts: a
# test that passes no data dir never writes to ~/tensorflow_datasets.
_DEFAULT_DATA_DIR = tempfile.mkdtemp(prefix='tfds_default_')
os.environ['TFDS_DATA_DIR'] = _DEFAULT_DATA_DIR
atexit.register(shutil.rmtree, _DEFAULT_DATA_DIR, ignore_errors=True)

import gin  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices('CPU')[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)

# Every gin configurable registered, as the binaries register them, so that
# tests parse configs as the binaries do.
from tf_memorization import configurables  # pylint: disable=g-import-not-at-top,unused-import,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(REPO, 'gin_configs')
# The user's own package (tests/userland/my_research), imported from gin.
USERLAND = os.path.join(REPO, 'tests', 'userland')


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'slow: trains real runs or starts binaries (the fast tier, '
      '`./run.sh test -m "not slow"`, leaves these out)')
  # A warning raised from our own modules fails the test that caused it.
  config.addinivalue_line('filterwarnings', 'error::Warning:tf_memorization')
  # Keras 3's save_weights calls np.array on its variables, which numpy 2
  # warns about (keras/src/backend/tensorflow/core.py): Keras's, not ours.
  config.addinivalue_line(
      'filterwarnings', "ignore:__array__ implementation doesn't accept a "
      'copy keyword:DeprecationWarning:keras')


@pytest.fixture(autouse=True)
def _clear_gin():
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture(scope='session')
def digits_data_dir(tmp_path_factory):
  """A tfds data dir with sklearn_digits prepared (offline, ~1 s)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import tf_memorization.data.datasets  # pylint: disable=g-import-not-at-top,unused-import
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  tfds.builder('sklearn_digits', data_dir=data_dir).download_and_prepare()
  return data_dir


# The workdir most hostile-input tests damage a copy of: tiny.gin's 4
# trials, one epoch, with the held-out class probabilities recorded.
TINY_BINDINGS = ('TrialTrainer.epochs = 1', "get_strategy.kind = 'one_device'",
                 'TrialTrainer.record_heldout_probs = True')


@pytest.fixture(scope='session')
def tiny_workdir(tmp_path_factory, digits_data_dir):
  """tiny.gin's 4 trials (TINY_BINDINGS), trained once per session: copy
  it before changing anything in it."""
  path = str(tmp_path_factory.mktemp('tiny_session') / 'w')
  summary = train_tiny(path, list(TINY_BINDINGS), digits_data_dir)
  assert summary.trained == [0, 1, 2, 3]
  return path


def train_tiny(path, bindings, data_dir, trials=None):
  """Trains trials of gin_configs/tiny.gin into `path` in process; the summary."""
  from tf_memorization import train  # pylint: disable=g-import-not-at-top
  summary = train.run(path, [os.path.join(GIN_DIR, 'tiny.gin')], bindings,
                      trials=trials, data_dir=data_dir, log=lambda _: None)
  gin.clear_config()
  return summary


def snapshot(directory):
  """{relative path: sha256} of the files under `directory`; None if absent.

  A file that is not a regular one (a FIFO a test planted) is listed by its
  kind, never opened.
  """
  if not os.path.exists(directory):
    return None
  found = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      relative = os.path.relpath(path, directory)
      if not stat.S_ISREG(os.stat(path).st_mode):
        found[relative] = 'not a regular file'
        continue
      with open(path, 'rb') as f:
        found[relative] = hashlib.sha256(f.read()).hexdigest()
  return found


def read_npz(path):
  with np.load(path, allow_pickle=False) as npz:
    return {name: npz[name] for name in npz.files}


def rewrite_record(path, fix_checksum=True, **replace):
  """Rewrites a record with some arrays (and metadata fields) replaced.

  With fix_checksum the sha256 in its metadata is recomputed as the writer
  computes it (over arrays and metadata), so only the checks after the
  checksum can catch what was changed.
  """
  from tf_memorization.workdir import signatures  # pylint: disable=g-import-not-at-top
  arrays = read_npz(path)
  meta = json.loads(str(arrays.pop('metadata')))
  meta.update(replace.pop('metadata', {}))
  arrays.update(replace)
  if fix_checksum:
    meta = signatures.sign(arrays, meta)
  arrays['metadata'] = np.array(json.dumps(meta, sort_keys=True))
  with open(path, 'wb') as f:
    np.savez(f, **arrays)


def run_in_process(run_fn):
  """Calls a binary's main as absl's app.run would; (status, out, err)."""
  from tf_memorization import cli  # pylint: disable=g-import-not-at-top
  main = cli.binary_main(run_fn)
  out, err = io.StringIO(), io.StringIO()
  status = 0
  cwd = os.getcwd()
  try:
    os.chdir(REPO)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      main(['binary'])
  except SystemExit as e:
    status = e.code
  except Exception:  # pylint: disable=broad-except
    import traceback  # pylint: disable=g-import-not-at-top
    err.write(traceback.format_exc())
    status = 1
  finally:
    os.chdir(cwd)
    gin.clear_config()
  return status, out.getvalue(), err.getvalue()


def layer_names(model, indices):
  """The names, in this build of `model`, of its layers at `indices`."""
  return [model.layers[i].name for i in indices]


def error_line(status, out, err):
  """The one 'error:' line of a run that exited with status 2."""
  assert status == 2, (out[-2000:], err[-3000:])
  assert 'Traceback' not in err, err[-3000:]
  lines = [line for line in err.splitlines() if line.startswith('error:')]
  assert len(lines) == 1, err[-3000:]
  return lines[0]


@dataclasses.dataclass
class LabelsSplit:
  """A split as records.write_dataset_file reads it: labels and ids."""
  labels: np.ndarray
  ids: np.ndarray
  source_ids: np.ndarray = None

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass
class LabelsDataset:
  """What records.write_dataset_file reads of a data.Dataset, for tests
  that write records without training."""
  name: str
  train: LabelsSplit
  test: LabelsSplit
  num_classes: int
  version: str = 'synthetic'

  def describe(self):
    return {'name': self.name, 'version': self.version,
            'num_classes': self.num_classes, 'num_train': len(self.train),
            'num_test': len(self.test), 'image_shape': [8, 8, 1]}

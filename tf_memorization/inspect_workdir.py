r"""Prints what a workdir holds: trials, accuracies, config fingerprint.

    python -m tf_memorization.inspect_workdir --workdir=W
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from tf_memorization import cli  # pylint: disable=g-import-not-at-top
from tf_memorization import records  # pylint: disable=g-import-not-at-top

def define_flags():
  """Defines the flags; only when run as a binary, so that the library
  modules can be imported together (absl flags are global)."""
  flags.DEFINE_string('workdir', None, 'A train binary workdir.')


def summarize(workdir):
  """A few lines describing the records of `workdir`."""
  loaded = records.load(workdir)
  info = loaded.dataset_info
  metrics = [m['metrics'] for m in loaded.metadata]

  def mean(key):
    return float(np.nanmean([m[key] for m in metrics]))

  wall = sum(m['setup_seconds'] + m['train_seconds'] + m['predict_seconds']
             for m in metrics)
  in_counts = loaded.masks.sum(axis=0)
  return '\n'.join([
      f'{workdir}: {loaded.num_trials} trials of {info["name"]} '
      f'({info["num_train"]} train / {info["num_test"]} test), fingerprint '
      f'{loaded.fingerprint}',
      f'  mean accuracy: train (in subset) {mean("train_accuracy"):.4f}, '
      f'held-out {mean("heldout_accuracy"):.4f}, test {mean("test_accuracy"):.4f}',
      f'  trials per example: in {in_counts.min()}..{in_counts.max()}, out '
      f'{(loaded.num_trials - in_counts).min()}..'
      f'{(loaded.num_trials - in_counts).max()}',
      f'  training time: {wall / loaded.num_trials:.1f} s per trial '
      f'({wall / 3600:.2f} h in all)',
  ])


main = cli.binary_main(lambda: print(summarize(flags.FLAGS.workdir)))


if __name__ == '__main__':
  define_flags()
  flags.mark_flag_as_required('workdir')
  app.run(main)

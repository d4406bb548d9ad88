r"""Prints what a workdir holds: trials, accuracies, config fingerprint, and
the planner's predictions for more trials (planner.py).

    python -m tf_memorization.inspect_workdir --workdir=W [--upgrade_records]
        [--target_stderr=0.05] [--target_pair_jaccard=0.7]
"""

import os

from tf_memorization.core import quiet  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  quiet.filter_library_logs()  # before TensorFlow loads

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tf_memorization import cli  # pylint: disable=g-import-not-at-top
from tf_memorization.core import files  # pylint: disable=g-import-not-at-top
from tf_memorization.estimation import settings  # pylint: disable=g-import-not-at-top
from tf_memorization.stats import planner  # pylint: disable=g-import-not-at-top
from tf_memorization.training import sequential  # pylint: disable=g-import-not-at-top
from tf_memorization.workdir import imported  # pylint: disable=g-import-not-at-top
from tf_memorization.workdir import loading  # pylint: disable=g-import-not-at-top
from tf_memorization.workdir import records  # pylint: disable=g-import-not-at-top
from tf_memorization.workdir import upgrading  # pylint: disable=g-import-not-at-top

def define_flags():
  """Defines the flags; only when run as a binary, so that the library
  modules can be imported together (absl flags are global)."""
  flags.DEFINE_string('workdir', None, 'A train binary workdir.')
  flags.DEFINE_bool(
      'upgrade_records', False, 'Re-sign the records of an earlier version '
      '(record format 1, whose checksum does not cover the metadata) in the '
      'workdir and its experiment folders, after checking every array, mask '
      'and seed. Only for workdirs you trust.')
  flags.DEFINE_float(
      'target_stderr', 0.05, "The planner's target for the 0.9-quantile of "
      'the memorization standard errors.')
  flags.DEFINE_float(
      'target_pair_jaccard', 0.7, "The planner's target for the split-run "
      'Jaccard index of the controlled pair set.')
  flags.mark_flag_as_required('workdir')


def upgrade(workdir, log=print):
  """Upgrades the format-1 records of `workdir` and its experiments."""
  folders = [workdir]
  experiments = os.path.join(workdir, files.EXPERIMENTS_DIR)
  if tf.io.gfile.isdir(experiments):
    folders += [os.path.join(experiments, name.rstrip('/'))
                for name in sorted(tf.io.gfile.listdir(experiments))]
  count = 0
  for folder in folders:
    if records.list_records(folder):
      count += len(upgrading.upgrade_format_1(folder, log))
  log(f'Upgraded {count} records of format 1 in {workdir}.')
  return count


def summarize(workdir, target_stderr=0.05, target_pair_jaccard=0.7):
  """A few lines describing the records of `workdir`, and the planner's."""
  sequential.check_targets(target_stderr, target_pair_jaccard)
  loaded = loading.load(workdir, diverged='keep')
  info = loaded.dataset_info
  accuracy = loading.mean_accuracies(loaded)
  seconds = planner.seconds_per_trial(loaded)
  in_counts = loaded.masks.sum(axis=0)
  source = imported.source(loaded)
  measured = 'train' in loaded.predicted
  return '\n'.join([
      f'{workdir}: {loaded.num_trials} trials of {info["name"]} '
      f'({info["num_train"]} train / {info["num_test"]} test), fingerprint '
      f'{loaded.fingerprint}',
  ] + ([f'  imported from {source.get("source")} ({source.get("name")})'
        + ('' if measured else ': no train predictions, so no '
           'memorization and no plan')] if source else []) + [
      f'  mean accuracy: train (in subset) {accuracy["train"]:.4f}, '
      f'held-out {accuracy["heldout"]:.4f}, test {accuracy["test"]:.4f}',
      f'  trials per example: in {in_counts.min()}..{in_counts.max()}, out '
      f'{(loaded.num_trials - in_counts).min()}..'
      f'{(loaded.num_trials - in_counts).max()}',
      (f'  training time: {seconds:.1f} s per trial '
       f'({seconds * loaded.num_trials / 3600:.2f} h in all)'
       if np.isfinite(seconds) else '  training time: not recorded'),
  ] + ([f'  diverged: {len(loaded.diverged)} trials '
        f'{sorted(loaded.diverged)[:10]} (the estimator refuses them unless '
        "Estimator.diverged_trials = 'skip')"] if loaded.diverged else [])
      + (sequential.planner_lines(loaded, settings.Estimator(),
                                  target_stderr, target_pair_jaccard)
         if measured else []))


def _main():
  f = flags.FLAGS
  if f.upgrade_records:
    upgrade(f.workdir)
  print(summarize(f.workdir, f.target_stderr, f.target_pair_jaccard))


main = cli.binary_main(_main)


if __name__ == '__main__':
  define_flags()
  app.run(main)

r"""The estimate binary: scores from the trial records of a workdir.

    python -m tf_memorization.estimate --workdir=W [--gin_file=F.gin]
        [--gin_bindings='Estimator.topk = 20'] [--data_dir=/data/tfds]
        [--output_dir=DIR]

Loads W/trials, computes memorization, influence and how far to trust them,
runs the experiments the config asks for (Estimator.experiments), and
writes W/estimates/ (or --output_dir) and the HTML report W/report/. The
work is done by estimation/pipeline.run; workdir/estimates.py documents every
file it writes.
"""

from tf_memorization.core import quiet  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  quiet.filter_library_logs()  # before TensorFlow loads

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

from tf_memorization import cli  # pylint: disable=g-import-not-at-top


def define_flags():
  """Defines the flags; only when run as a binary (absl flags are global)."""
  flags.DEFINE_multi_string('gin_file', [], 'gin config files.')
  flags.DEFINE_multi_string(
      'gin_bindings', [], 'gin bindings, e.g. "Estimator.topk = 20".')
  flags.DEFINE_string('workdir', None, 'The train binary\'s workdir.')
  flags.DEFINE_string(
      'output_dir', None, 'Where the estimates go (default: WORKDIR/estimates).')
  flags.DEFINE_string(
      'data_dir', None, 'tfds data dir for the experiments and the report\'s '
      'images (same as binding load_dataset.data_dir; a workdir\'s own '
      'config never chooses it).')


def _main():
  from tf_memorization import configurables  # pylint: disable=g-import-not-at-top,unused-import
  from tf_memorization.estimation import pipeline  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  pipeline.run(f.workdir, f.gin_file, f.gin_bindings, f.output_dir,
               f.data_dir, log=lambda line: print(line, flush=True))


main = cli.binary_main(_main)


if __name__ == '__main__':
  define_flags()
  app.run(main)

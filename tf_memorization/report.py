r"""The report binary: the HTML report of a workdir's estimates.

    python -m tf_memorization.report --workdir=W [--output_dir=DIR]
        [--data_dir=/data/tfds]

The estimate binary builds the report at the end of its run; this one
builds it again alone from what is on disk (reporting/page.py says what
it reads and how).
"""

from tf_memorization.core import quiet  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  quiet.filter_library_logs()  # before TensorFlow loads

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

from tf_memorization import cli  # pylint: disable=g-import-not-at-top
from tf_memorization.core import errors  # pylint: disable=g-import-not-at-top
from tf_memorization.reporting import page  # pylint: disable=g-import-not-at-top


def define_flags():
  """Defines the flags; only when run as a binary."""
  flags.DEFINE_string('workdir', None, 'A workdir with estimates.')
  flags.DEFINE_string('output_dir', None,
                      'The report folder (default WORKDIR/report).')
  flags.DEFINE_string('estimates_dir', None,
                      'The estimates (default WORKDIR/estimates).')
  flags.DEFINE_multi_string(
      'gin_file', [], 'gin files after the workdir\'s config: the training '
      'run\'s, when they import your own dataset builder.')
  flags.DEFINE_multi_string(
      'gin_bindings', [], 'Bindings after the workdir\'s config, e.g. '
      '"load_dataset.data_dir = \'/data/tfds\'".')
  flags.DEFINE_string(
      'data_dir', None, 'tfds data dir of the images (same as binding '
      'load_dataset.data_dir; a workdir\'s own config never chooses it).')


def _main():
  f = flags.FLAGS
  if not f.workdir:
    raise errors.UserError('--workdir is required: a workdir with estimates.')
  bindings = list(f.gin_bindings)
  if f.data_dir:
    bindings.append(f'load_dataset.data_dir = {f.data_dir!r}')
  report = page.build(f.workdir, f.output_dir, f.estimates_dir,
                      gin_bindings=bindings, gin_files=f.gin_file,
                      log=lambda line: print(line, flush=True))
  print(f'Report: {report.path} ({report.seconds:.1f}s)', flush=True)


main = cli.binary_main(_main)


if __name__ == '__main__':
  define_flags()
  app.run(main)

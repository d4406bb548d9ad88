r"""The compare binary: a run's estimates against the paper's released scores.

    python -m tf_memorization.compare --workdir=W --published=FILE.npz
        [--published_pairs=PAIRS.npz] [--order=auto|source|position|filename]
        [--top_k=1000] [--output_dir=DIR] [--export=OURS.npz]
    python -m tf_memorization.compare --workdir=W --export=DIR \
        --format=lira|datamodels     (the trials, in that layout)

published/comparison.py says what is compared, written and refused.
"""

from tf_memorization.core import quiet  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  quiet.filter_library_logs()  # before TensorFlow loads

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

from tf_memorization import cli  # pylint: disable=g-import-not-at-top
from tf_memorization.core import errors  # pylint: disable=g-import-not-at-top
from tf_memorization.importing import exports  # pylint: disable=g-import-not-at-top
from tf_memorization.published import comparison  # pylint: disable=g-import-not-at-top


def define_flags():
  """Defines the flags; only when run as a binary (absl flags are global)."""
  flags.DEFINE_string('workdir', None, 'A workdir the estimate binary has '
                      'estimated.')
  flags.DEFINE_string('published', None, 'The released memorization/'
                      'influence .npz (e.g. cifar100_infl_matrix.npz).')
  flags.DEFINE_string('published_pairs', None, 'The released pairs .npz '
                      '(default: the pairs of the --published matrices).')
  flags.DEFINE_string('order', 'auto', 'How the file\'s positions meet our '
                      'examples: auto, source, position or filename.')
  flags.DEFINE_integer('top_k', 1000, 'K of the top-K memorized overlap.')
  flags.DEFINE_string('output_dir', None,
                      'Where the comparison goes (default: WORKDIR/compare).')
  flags.DEFINE_string('export', None, 'Also write our estimates to this .npz '
                      'in the release\'s schema (and its pairs beside it); '
                      'with --format=lira|datamodels, the folder the trials '
                      'go to in that layout.')
  flags.DEFINE_string('format', 'paper', 'What --export writes: paper (the '
                      'estimates in the released schema), lira or '
                      'datamodels (the trials, importing/exports.py).')


def _main():
  f = flags.FLAGS
  log = lambda line: print(line, flush=True)
  errors.choice('--format', f.format, ('paper',) + exports.FORMATS)
  if f.format == 'paper':
    comparison.run(f.workdir, f.published, f.published_pairs, f.order,
                   f.top_k, f.output_dir, f.export, log=log)
    return
  if not f.export:
    raise errors.UserError(f'--format={f.format} needs --export=DIR: the '
                           'folder the trials are written to.')
  if f.published:  # the comparison first, then the trials
    comparison.run(f.workdir, f.published, f.published_pairs, f.order,
                   f.top_k, f.output_dir, None, log=log)
  exports.export_trials(f.workdir, f.export, f.format, log)


main = cli.binary_main(_main)


if __name__ == '__main__':
  define_flags()
  app.run(main)

r"""The import binary: trials trained anywhere into a new workdir.

    python -m tf_memorization.import_trials --workdir=W --format=arrays \
        --masks=masks.npy --train_logits=train.npy --test_logits=test.npy \
        --train_labels=y_train.npy --test_labels=y_test.npy
    python -m tf_memorization.import_trials --workdir=W --format=lira \
        --lira_dir=exp/cifar10 [--test_logits=... --test_labels=...]
    python -m tf_memorization.import_trials --workdir=W --format=datamodels \
        --masks=masks.npy --margins=margins.npy --test_labels=... \
        --train_labels=...

Then `python -m tf_memorization.estimate --workdir=W` computes every score
the records allow. importing/sources.py describes each layout and what is
checked; bad input is one `error:` line, exit status 2, and nothing in W.
"""

from tf_memorization.core import quiet  # pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  quiet.filter_library_logs()  # before TensorFlow loads

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

from tf_memorization import cli  # pylint: disable=g-import-not-at-top
from tf_memorization.core import errors  # pylint: disable=g-import-not-at-top
from tf_memorization.importing import run  # pylint: disable=g-import-not-at-top
from tf_memorization.importing import sources  # pylint: disable=g-import-not-at-top

FORMATS = ('arrays', 'lira', 'datamodels')


def define_flags():
  """Defines the flags; only when run as a binary (absl flags are global)."""
  flags.DEFINE_string('workdir', None, 'The new (or empty) workdir.')
  flags.DEFINE_string('format', None, 'The layout: ' + ', '.join(FORMATS))
  flags.DEFINE_string('name', None, 'What these models are (kept in the '
                      'records; default: the format and source).')
  flags.DEFINE_string('masks', None, '.npy [k, n] bool or 0/1: the training '
                      'examples each model saw (arrays, datamodels).')
  flags.DEFINE_string('train_logits', None, '.npy [k, n, C] float16/32 '
                      '(arrays).')
  flags.DEFINE_string('test_logits', None, '.npy [k, n_test, C] float16/32 '
                      '(arrays; lira: a test split LiRA does not keep).')
  flags.DEFINE_string('train_labels', None, '.npy [n] int class indices.')
  flags.DEFINE_string('test_labels', None, '.npy [n_test] int class indices.')
  flags.DEFINE_string('lira_dir', None, 'LiRA\'s experiment root (lira).')
  flags.DEFINE_string('margins', None, '.npy [k, n_test] test margins '
                      '(datamodels).')
  flags.DEFINE_string('train_margins', None, '.npy [k, n] train margins '
                      '(datamodels, optional: memorization from them).')
  flags.DEFINE_string('completed', None, 'datamodels\' _completed.npy [k] '
                      'bool: only the finished models are imported.')


def build_source(f, log=print):
  """The source the flags name (a UserError for a bad or missing one)."""
  fmt = errors.choice('--format', f.format, FORMATS)
  if fmt == 'arrays':
    return sources.ArraysSource(f.masks, f.train_logits, f.test_logits,
                                f.train_labels, f.test_labels, f.name)
  if fmt == 'lira':
    return sources.LiraSource(f.lira_dir, f.test_logits, f.test_labels,
                              f.name, log=log)
  return sources.DatamodelsSource(f.masks, f.margins, f.train_labels,
                                  f.test_labels, f.train_margins,
                                  f.completed, f.name)


def _main():
  f = flags.FLAGS
  log = lambda line: print(line, flush=True)
  run.import_trials(f.workdir, build_source(f, log), log)


main = cli.binary_main(_main)


if __name__ == '__main__':
  define_flags()
  app.run(main)

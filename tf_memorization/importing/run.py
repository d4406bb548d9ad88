"""The import binary's work: a source's trials into a new workdir, whole.

    import_trials(workdir, source, log)

The workdir must be new or empty. Every record is written into a staging
folder beside it (storage.staged_output), which becomes the workdir only
when every trial was read, checked and written: a bad array found at the
last trial, a full disk or a kill leaves nothing in the workdir (a killed
import leaves its staging folder, removed by the next import). Progress
(trials done, ETA) is logged every ten seconds.
"""

import os

import tensorflow as tf

from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.core import progress as progress_lib
from tf_memorization.core import storage
from tf_memorization.importing import writer as writer_lib


def import_trials(workdir, source, log=print):
  """Writes `source`'s trials (sources.py) as records of a new `workdir`.

  Returns:
    {'trials': k, 'workdir': workdir, 'format': ..., 'name': ...}.
  """
  if not workdir:
    raise errors.UserError('--workdir is required: the new workdir the '
                           'imported trials go to.')
  if tf.io.gfile.exists(workdir):
    if not tf.io.gfile.isdir(workdir):
      raise errors.UserError(f'--workdir={workdir} is a file: choose a new '
                             'folder.')
    entries = tf.io.gfile.listdir(workdir)
    if entries:
      raise errors.UserError(
          f'--workdir={workdir} is not empty ({", ".join(sorted(entries)[:3])}'
          f'{", ..." if len(entries) > 3 else ""}): an import writes a new '
          'workdir whole. Choose a new or empty folder (to add trials to a '
          'workdir one at a time, use tf_memorization.TrialWriter).')
  for note in source.notes:
    log(f'{source.format}: {note}.')
  k = source.num_trials
  log(f'Importing {k} trials ({source.format}: {source.name}; '
      f'{len(source.train_labels)} train, {len(source.test_labels)} test '
      f'examples, {source.num_classes} classes) into {workdir}.')
  progress = progress_lib.Progress(k, every_seconds=10)
  with storage.staged_output(workdir, '--workdir', None) as stage:
    writer = writer_lib.TrialWriter(
        stage, source.train_labels, source.test_labels, source.num_classes,
        name=source.name, source=source.format)
    done = 0
    for t, mask, train, test in source.trials():
      if not writer.add_summaries(
          t, mask, train, test,
          from_margins=source.from_margins):
        raise errors.UserError(
            f'{source.format}: trial {t} appears twice in the source: give '
            'each model its own index.')
      done += 1
      if progress.due(done):
        log(f'  import: {done}/{k} trials, ETA {progress.eta(done)}')
  log(f'Imported {done} trials into {workdir} '
      f'({os.path.join(workdir, files.TRIALS_DIR)}); estimate them with '
      f'python -m tf_memorization.estimate --workdir={workdir}')
  return {'trials': done, 'workdir': workdir, 'format': source.format,
          'name': source.name}

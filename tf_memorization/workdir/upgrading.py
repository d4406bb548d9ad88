"""Re-signing records of format 1 (their checksum covered only the arrays).

    upgrade_format_1(W)   what `inspect_workdir --upgrade` runs
"""

import json
import os

import numpy as np
import tensorflow as tf

from tf_memorization.core import files
from tf_memorization.core import storage
from tf_memorization.workdir import loading
from tf_memorization.workdir import records
from tf_memorization.workdir import signatures

RecordError = records.RecordError
_hint = records.fix_hint


def upgrade_format_1(directory, log=print):
  """Re-signs the format-1 records of `directory` as format 2, after checks.

  Format 1's checksum covered only the arrays. Each such record is read
  with that checksum verified, its margins clipped as the writer now clips
  them, its diverged flag computed, and its metadata signed with the format-2
  checksum; it replaces the file only if it then passes every check `load`
  makes (dataset, fingerprint, mask and seed against its design or its
  folder's plan.json, values). The records must agree on one fingerprint
  (W/run.json's, when present). What the checks cannot know is whether the
  metadata was edited before: run this only on workdirs you trust.

  Returns:
    The trial indices upgraded.
  """
  found = records.list_records(directory)
  old, fingerprints = {}, set()
  for t, path in found.items():
    meta = records.read_metadata(path)
    fingerprints.add(meta.get('fingerprint'))
    if meta.get('format_version') == 1:
      old[t] = path
  if not old:
    return []
  fixed = records.read_run_file(directory)
  if fixed is None and len(fingerprints) > 1:
    raise RecordError(f'{directory} holds records of {len(fingerprints)} '
                      'configs: move each config\'s records to its own '
                      'workdir before upgrading them.')
  planned = tf.io.gfile.exists(os.path.join(directory, files.PLAN_FILE))
  dataset_info = records.read_dataset_file(directory)[1]
  upgraded = []
  for t, path in old.items():
    original = storage.read_bytes(path, _hint(path))
    arrays, meta = records.read_record(path, allow_format_1=True)
    arrays = {name: np.array(a) for name, a in arrays.items()}
    for field in ('train_margin', 'test_margin'):
      arrays[field] = np.clip(arrays[field], -records.FLOAT16_MAX,
                              records.FLOAT16_MAX)
    meta.update({
        'format_version': records.FORMAT_VERSION, 'upgraded_from_format': 1,
        'design': None if planned else meta.get('design'),
        'diverged': records.diverged_reason(arrays, meta.get('metrics') or {},
                                            int(dataset_info['num_classes']))})
    meta = signatures.sign(arrays, meta)
    arrays['metadata'] = np.array(json.dumps(meta, sort_keys=True))
    storage.atomic_replace(path, storage.npz_bytes(arrays))
    try:
      loading.check(directory, trial_indices=[t],
            fingerprint=None if fixed else next(iter(fingerprints)))
    except RecordError:
      storage.atomic_replace(path, original)
      raise
    upgraded.append(t)
    log(f'{path}: upgraded from record format 1 to {records.FORMAT_VERSION}.')
  return upgraded

"""Where a workdir's trials came from, when another trainer made them.

    source(loaded)                 {'source': 'lira', 'name': ...} or None
    skipped(loaded, what, why)     the one line saying `what` is skipped

Records written by importing/ (TrialWriter, the import binary) carry an
`imported` field in their signed metadata; what needs this package's
trainer (the retraining experiments, the learning-dynamics proxies) is
skipped for them with one line naming why.
"""


# The dataset version of imported data (W/dataset.npz; its identity is the
# labels' digest): how readers of the estimates alone (the report) know.
DATA_VERSION = 'imported'


def source(loaded):
  """Where the trials came from when they were imported (importing/:
  {'source': 'lira', 'name': ...}), or None for trials this package
  trained. The records of a workdir share one fingerprint, which holds
  this, so the first record says it for all."""
  found = loaded.metadata[0].get('imported') if loaded.metadata else None
  return found if isinstance(found, dict) else None


def skipped(loaded, what, why):
  """'`what`: skipped, ...' for imported trials (one line), or None."""
  found = source(loaded)
  if found is None:
    return None
  return (f'{what}: skipped, the trials were imported '
          f'({found.get("source")}: {found.get("name")}) and {why}.')

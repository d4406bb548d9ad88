r"""Are two workdirs' outputs the same? Records, estimates, report, configs.

    python tools/compare_workdirs.py WORKDIR_A WORKDIR_B

Checks every output a person or a later process reads, ignoring only what
records when and where a file was written:

  * trial records (W/trials, W/experiments/*/trials): every array
    bit-identical; metadata identical but for written_at, host, the
    checksum (it covers those) and the metrics that are timings
    (*_seconds);
  * every other .npz (dataset.npz, influence_topk.npz, reference weights):
    every array bit-identical (the zip's own timestamps are not compared);
  * W/estimates: every CSV, PNG and JSON byte-identical, but summary.json,
    compared as JSON without its timings, its workdir path, the
    experiments' seconds and the planner's hours (measured seconds per
    trial times trials);
  * W/report: every PNG byte-identical; index.html identical but for its
    one "built <time> from <folder>" line, the workdir's own path and the
    planner table's hours;
  * operative_config.gin, plan.json files: byte-identical; run.json: its
    fingerprint and description.

Prints one line per difference and a total; exits 1 when any differ. The
restructuring of the package was checked with it: the demo trained and
estimated by the code before and after, into two workdirs.
"""

import json
import os
import re
import sys
import zipfile

import numpy as np

VOLATILE_METADATA = ('written_at', 'host', 'checksum')
SKIPPED_DIRS = ('tensorboard', 'claims', 'checkpoints')
BUILT_LINE = re.compile(r'<p class="note">[^<]* trials, built [^<]*</p>')
# The planner's hours: seconds per trial as measured (timings) times trials.
HOURS = re.compile(r'~[\d,.]+ more hours( at [\d.]+ s per trial)?')
PLANNER_TABLE = re.compile(r'<th>training hours</th>.*?</table>', re.S)
HOURS_CELL = re.compile(r'(<tr><td class="num">[^<]*</td><td class="num">)'
                        r'[^<]*(</td>)')


def _without_hours(text):
  text = HOURS.sub('~H more hours', text)
  return PLANNER_TABLE.sub(lambda m: HOURS_CELL.sub(r'\1\2', m.group(0)),
                           text)


def _files(root):
  found = set()
  for directory, subdirs, names in os.walk(root):
    subdirs[:] = [d for d in subdirs if d not in SKIPPED_DIRS]
    for name in names:
      found.add(os.path.relpath(os.path.join(directory, name), root))
  return found


def _npz(path):
  with np.load(path, allow_pickle=False) as npz:
    return {name: npz[name] for name in npz.files}


def _same_arrays(a, b):
  return (a.dtype == b.dtype and a.shape == b.shape and
          a.tobytes() == b.tobytes())


def _metadata(arrays):
  meta = json.loads(str(arrays.pop('metadata')))
  for key in VOLATILE_METADATA:
    meta.pop(key, None)
  meta['metrics'] = {k: v for k, v in meta.get('metrics', {}).items()
                     if not k.endswith('_seconds')}
  return meta


def _summary(path):
  with open(path) as f:
    summary = json.load(f)
  summary.pop('timings', None)
  summary.pop('workdir', None)
  for result in (summary.get('experiments') or {}).values():
    result.pop('seconds', None)
  planner = summary.get('planner') or {}
  planner.pop('seconds_per_trial', None)
  for row in planner.get('rows') or []:
    row.pop('training_hours', None)
    row.pop('more_training_hours', None)
  if isinstance(planner.get('advice'), str):
    planner['advice'] = _without_hours(planner['advice'])
  return summary


def _differences(relative, a, b, roots):
  """What differs between file `relative` of the two workdirs (a list)."""
  name = os.path.basename(relative)
  if name.endswith('.npz'):
    arrays_a, arrays_b = _npz(a), _npz(b)
    out = []
    if 'metadata' in arrays_a and '/trials/' in f'/{relative}':
      meta_a, meta_b = _metadata(arrays_a), _metadata(arrays_b)
      if meta_a != meta_b:
        keys = sorted(k for k in set(meta_a) | set(meta_b)
                      if meta_a.get(k) != meta_b.get(k))
        out.append(f'metadata differs in {keys}')
    if sorted(arrays_a) != sorted(arrays_b):
      return out + [f'arrays {sorted(arrays_a)} vs {sorted(arrays_b)}']
    out += [f'array {k} differs' for k in sorted(arrays_a)
            if not _same_arrays(arrays_a[k], arrays_b[k])]
    return out
  if name == 'summary.json':
    return [] if _summary(a) == _summary(b) else ['summary differs']
  if name == 'run.json':
    keep = ('fingerprint', 'description')
    with open(a) as fa, open(b) as fb:
      ja, jb = json.load(fa), json.load(fb)
    return [] if all(ja.get(k) == jb.get(k) for k in keep) else [
        'fingerprint or description differs']
  with open(a, 'rb') as fa, open(b, 'rb') as fb:
    bytes_a, bytes_b = fa.read(), fb.read()
  if name == 'index.html':  # its build line; the workdir's path it shows
    bytes_a, bytes_b = (
        _without_hours(BUILT_LINE.sub('', x.decode())).replace(
            root, 'WORKDIR').encode()
        for x, root in zip((bytes_a, bytes_b), roots))
  return [] if bytes_a == bytes_b else ['bytes differ']


def compare(root_a, root_b, log=print):
  """The number of differences between the two workdirs (0: the same)."""
  files_a, files_b = _files(root_a), _files(root_b)
  count = 0
  for relative in sorted(files_a ^ files_b):
    log(f'only in {root_a if relative in files_a else root_b}: {relative}')
    count += 1
  compared = 0
  for relative in sorted(files_a & files_b):
    try:
      found = _differences(relative, os.path.join(root_a, relative),
                           os.path.join(root_b, relative),
                           (os.path.abspath(root_a), os.path.abspath(root_b)))
    except (OSError, ValueError, zipfile.BadZipFile) as e:
      found = [f'unreadable ({e})']
    compared += 1
    for difference in found:
      log(f'{relative}: {difference}')
      count += 1
  log(f'{compared} files compared, {count} differences.')
  return count


if __name__ == '__main__':
  if len(sys.argv) != 3:
    sys.exit(__doc__.split('\n\n')[1])
  sys.exit(1 if compare(sys.argv[1], sys.argv[2]) else 0)

r"""A run's estimates against the paper's released scores (the compare
binary, compare.py, runs `run`).

Joins the released file (https://pluskid.github.io/influence-memorization/,
e.g. cifar100_infl_matrix.npz; released.py describes its schema and
join.py the orders) to W's examples, checks the labels agree, and
reports

  * memorization: Pearson and Spearman of ours (W/estimates/memorization.csv)
    against tr_mem over the examples with both finite, and the overlap of
    the K most memorized, |ours ∩ theirs| / K, for K = --top_k and 100
    (clipped to the examples joined);
  * influence (when the file has the per-class matrices): Pearson and
    Spearman over the matrices' entries, ours computed from W's trial
    records for exactly those (train, test) pairs (released.class_influence);
  * pairs: our raw pairs (influence_pairs.csv, raw = 1: the estimate's
    thresholds, the paper's by default) against the published pairs
    (--published_pairs, else those of the matrices and tr_mem at our
    thresholds): how many both hold, recall (of theirs we find), precision
    (of ours they hold) and Jaccard.

It prints a table and writes DIR (--output_dir, default W/compare):
compare.json (the figures), memorization_scatter.png (ours against theirs
with the identity line) and joined.csv (per joined example: index, id,
source_id, published_index, label, memorization, published_memorization).

--export=OURS.npz writes our estimates in the release's schema (tr_mem,
tr_labels with the clean labels, tt_labels, per class tr_classidx_K,
tt_classidx_K, infl_matrix_classK; tr_ids, tt_ids, tr_source_ids,
tt_source_ids, tr_filenames/tt_filenames when the source ids are file
names; metadata, a JSON string) in the source's original order when the
source ids give it (so that position p is the released files' p), else in
W's order, and our raw pairs (tr_idx, tt_idx, infl, mem) to
OURS_pairs.npz. It needs no --published.

Every figure is computed over the entries finite on both sides only (the
counts it was computed over are in compare.json: 'compared', and a note
says how many were left out and whose), and a figure with no data is
absent: null in compare.json, 'n/a' in the table, never a number (a top-K
overlap of no examples, a Spearman of fewer than 3 or of a constant, the
Jaccard of two empty sets). Entries tied at the K-th place share the places
left, so no position in a file decides a top-K overlap (top_overlap).

Bad input (a file not of the schema, indices out of range, labels that do
not match under the order, a workdir without estimates) is one `error:`
line naming the file and the fix, exit status 2, and nothing is written.
A released file is refused, not compared on part of it, when it holds a
NaN or a value outside [-1, 1], or declares arrays larger than the workdir
allows (released.py says which, and why): a damaged file should be
downloaded again, not half-read. Only our own --export may hold NaN (no
estimate there): it is compared over its finite entries, as our own
estimates always are.
"""

import json
import os

import numpy as np

from tf_memorization.core import errors
from tf_memorization.core import files
from tf_memorization.core import storage
from tf_memorization.published import join as join_lib
from tf_memorization.published import released as published_lib
from tf_memorization.reporting import estimate_figures
from tf_memorization.stats import ranks
from tf_memorization.stats import scores
from tf_memorization.workdir import estimate_inputs
from tf_memorization.workdir import estimates
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

COMPARE_DIR = 'compare'
COMPARE_JSON = 'compare.json'
SCATTER_PNG = 'memorization_scatter.png'
JOINED_CSV = 'joined.csv'
JOINED_HEADER = ('index', 'id', 'source_id', 'published_index', 'label',
                 'memorization', 'published_memorization')
SECOND_K = 100  # the top-K overlap is also given for this K
PAPER_THRESHOLDS = {'influence': 0.15, 'memorization': 0.25,
                    'same_label': True}


def _estimate_command(workdir):
  return f'python -m tf_memorization.estimate --workdir={workdir}'


def _our_estimates(workdir):
  """W/estimates as an estimates.Estimates, every value checked (a
  UserError naming the estimate binary's command when there are none)."""
  return estimate_inputs.load(workdir, estimates.estimates_dir(workdir))


def _records(workdir, summary):
  """The trial records the estimates came from, and their test values."""
  policy = (summary.get('diverged_trials') or {})
  policy = policy.get('policy') if isinstance(policy, dict) else None
  loaded = loading.load(workdir, margins=False,
                        diverged='skip' if policy == 'skip' else 'refuse')
  estimated = summary.get('num_trials')
  if isinstance(estimated, int) and estimated != loaded.num_trials:
    raise errors.UserError(
        f'{estimates.estimates_dir(workdir)} holds the estimates of '
        f'{estimated} trials but {workdir}/{files.TRIALS_DIR} has '
        f'{loaded.num_trials} now: run the estimate binary again '
        f'({_estimate_command(workdir)}) so that memorization, pairs and '
        'influence come from the same trials.')
  if summary.get('influence_scores') == 'prob':
    return loaded, 'prob', loaded.test_prob
  return loaded, 'correct', loaded.test_correct


def _thresholds(summary):
  """The estimate's pair thresholds (the paper's if it names none)."""
  given = summary.get('pair_thresholds')
  out = dict(PAPER_THRESHOLDS)
  if isinstance(given, dict):
    for key, kind in (('influence', float), ('memorization', float),
                      ('same_label', bool)):
      if isinstance(given.get(key), (int, float)):
        out[key] = kind(given[key])
  return out


def _top_share(values, k):
  """The probability that each of `values` is among its k largest, ties
  ordered at random: 1 above the k-th largest value, 0 below it, and the
  places left shared evenly among those equal to it."""
  threshold = np.partition(values, len(values) - k)[len(values) - k]
  above = values > threshold
  tied = values == threshold
  share = above.astype(np.float64)
  share[tied] = (k - np.count_nonzero(above)) / np.count_nonzero(tied)
  return share


def top_overlap(ours, theirs, k):
  """|our top k ∩ their top k| / k over the entries finite in both.

      overlap = Σ_i min(p_i, q_i) / k

  p_i (q_i) is entry i's share of our (their) top k (_top_share): 1 or 0,
  but for entries tied at the k-th place, which share the places left
  evenly. Without ties it is the plain overlap; with them no position
  decides it (in a file or in ours): equal arrays overlap 1 and a constant
  side k/m, chance. k is clipped to the m entries finite in both; None
  when there are none: no figure from no data.
  """
  ours = np.asarray(ours, np.float64)
  theirs = np.asarray(theirs, np.float64)
  both = np.isfinite(ours) & np.isfinite(theirs)
  k = min(int(k), int(np.count_nonzero(both)))
  if k < 1:
    return None
  return float(np.minimum(_top_share(ours[both], k),
                          _top_share(theirs[both], k)).sum() / k)


def _finite(value):
  """A figure, or None when it is NaN (computed from too little data)."""
  return None if value is None or not np.isfinite(value) else float(value)


def memorization_figures(mine, theirs, top_k):
  """Our memorization `mine` against the file's `theirs` (same examples),
  over the examples finite in both: 'compared', 'pearson', 'spearman'
  (None below 3 examples or for a constant side), 'top_overlap' for K =
  top_k and SECOND_K clipped to 'compared' (overlap None when it is 0),
  'mean' and 'published_mean' over each side's finite values (None: none).
  """
  mine = np.asarray(mine, np.float64)
  theirs = np.asarray(theirs, np.float64)
  compared = int(np.count_nonzero(np.isfinite(mine) & np.isfinite(theirs)))
  pearson, spearman = ranks.correlations(mine, theirs)
  ks = ([min(top_k, compared), min(SECOND_K, compared)] if compared
        else [top_k])
  return {'compared': compared,
          'pearson': _finite(pearson), 'spearman': _finite(spearman),
          'top_overlap': [{'k': int(k), 'overlap': top_overlap(mine, theirs,
                                                               k)}
                          for k in dict.fromkeys(ks)],  # --top_k first
          'mean': _finite_mean(mine), 'published_mean': _finite_mean(theirs)}


def _finite_mean(values):
  finite = values[np.isfinite(values)]
  return float(finite.mean()) if len(finite) else None


def _memorization(released, join, ours, top_k):
  positions = join.train.joined
  theirs = released.memorization[positions]
  mine = ours.memorization[join.train.ours[positions]]
  figures = memorization_figures(mine, theirs, top_k)
  return dict({'joined': int(len(positions))}, **figures), mine, theirs


def _left_out(what, compared, total, mine, theirs, file_what):
  """A note when a figure is computed over fewer entries than joined."""
  if compared == total:
    return None
  return (f'{what} compared over {compared} of the {total} joined '
          f'{file_what} with a number on both sides: ours has none for '
          f'{int(np.count_nonzero(~np.isfinite(mine)))}, the file for '
          f'{int(np.count_nonzero(~np.isfinite(theirs)))}')


def _influence(released, join, loaded, test_values, scores_kind):
  """Our influence on each of the file's per-class entries, compared."""
  mine, theirs, entries = [], [], 0
  for train, test, matrix in released.classes.values():
    entries += matrix.size
    rows, cols = join.train.ours[train], join.test.ours[test]
    row_ok, col_ok = rows >= 0, cols >= 0
    if not row_ok.any() or not col_ok.any():
      continue
    mine.append(published_lib.class_influence(
        loaded.masks, test_values, rows[row_ok], cols[col_ok]).ravel())
    theirs.append(np.asarray(matrix)[np.ix_(row_ok, col_ok)].ravel())
  mine = np.concatenate(mine) if mine else np.zeros(0, np.float32)
  theirs = np.concatenate(theirs) if theirs else np.zeros(0)
  pearson, spearman = ranks.correlations(mine, theirs)
  compared = int(np.count_nonzero(
      np.isfinite(mine) & np.isfinite(np.asarray(theirs, np.float64))))
  note = _left_out('influence', compared, len(mine), mine,
                   np.asarray(theirs, np.float64), 'entries')
  return {'classes': len(released.classes), 'entries': int(entries),
          'joined_entries': int(len(mine)), 'compared': compared,
          'pearson': _finite(pearson), 'spearman': _finite(spearman),
          'test_values': scores_kind}, note


def pair_agreement(ours, theirs):
  """How two sets of (train, test) pairs agree: counts, recall (of
  `theirs` in `ours`), precision (of `ours` in `theirs`), Jaccard."""
  ours, theirs = set(ours), set(theirs)
  both = len(ours & theirs)
  return {'ours': len(ours), 'published': len(theirs), 'both': both,
          'recall': both / len(theirs) if theirs else None,
          'precision': both / len(ours) if ours else None,
          'jaccard': scores.jaccard(ours, theirs) if ours or theirs else None}


def _pairs(released, pairs_file, join, ours, thresholds):
  """Our raw pairs against the published ones, in file positions."""
  if pairs_file is not None:
    train, test, source = pairs_file.train, pairs_file.test, pairs_file.path
  elif released.classes:
    train, test = published_lib.matrix_pairs(
        released, thresholds['influence'], thresholds['memorization'],
        thresholds['same_label'])
    source = 'matrices'
  else:
    return None
  inside = (join.train.ours[train] >= 0) & (join.test.ours[test] >= 0)
  raw = ours.pairs.get('raw')
  raw = (np.ones(len(ours.pairs['train']), bool) if raw is None
         else np.asarray(raw, bool))
  ft = join.train.position[ours.pairs['train'][raw]]
  fq = join.test.position[ours.pairs['test'][raw]]
  ok = (ft >= 0) & (fq >= 0)
  result = pair_agreement(zip(ft[ok].tolist(), fq[ok].tolist()),
                          zip(train[inside].tolist(), test[inside].tolist()))
  result.update({'published_from': source, 'thresholds': thresholds,
                 'ours_outside_file': int((~ok).sum()),
                 'published_outside_workdir': int((~inside).sum())})
  return result


def _joined_csv(join, ours, arrays, mine, theirs):
  positions = join.train.joined
  index = join.train.ours[positions]
  order = np.argsort(index, kind='stable')
  index, positions = index[order], positions[order]
  source = join_lib.known_source_ids(arrays, 'train')
  cells = estimates.cells
  return estimates.cells_bytes(JOINED_HEADER, [
      cells(index), cells(ours.train_ids[index]),
      cells(source[index] if source is not None else [''] * len(index)),
      cells(positions), cells(arrays['original_train_labels'][index]),
      cells(mine[order]), cells(theirs[order])])


def _compare(workdir, released, pairs_file, join, ours, arrays, loaded,
             top_k, output_dir):
  """compare.json's object; writes DIR's files."""
  memorization, mine, theirs = _memorization(released, join, ours, top_k)
  thresholds = _thresholds(ours.summary)
  notes = list(join.notes)
  notes.append(_left_out('memorization', memorization['compared'],
                         memorization['joined'], mine, theirs, 'examples'))
  if thresholds != PAPER_THRESHOLDS:
    notes.append(f'our pairs use the thresholds {thresholds}, not the '
                 f'paper\'s {PAPER_THRESHOLDS}')
  influence = None
  if released.classes:
    loaded_records, kind, values = loaded
    influence, note = _influence(released, join, loaded_records, values,
                                 kind)
    notes.append(note)
  notes = [note for note in notes if note]
  result = {
      'workdir': workdir, 'published': released.path,
      'published_pairs': pairs_file.path if pairs_file else None,
      'order': join.order, 'num_trials': ours.summary.get('num_trials'),
      'train': {'ours': len(join.train.position),
                'published': released.num_train,
                'joined': int(len(join.train.joined))},
      'test': (None if join.test is None else
               {'ours': len(join.test.position),
                'published': released.num_test,
                'joined': int(len(join.test.joined))}),
      'memorization': memorization, 'influence': influence,
      'pairs': (None if join.test is None else
                _pairs(released, pairs_file, join, ours, thresholds)),
      'notes': notes, 'output_dir': output_dir}
  storage.atomic_replace(os.path.join(output_dir, JOINED_CSV),
                         _joined_csv(join, ours, arrays, mine, theirs))
  estimate_figures.memorization_scatter(
      os.path.join(output_dir, SCATTER_PNG), mine, theirs,
      memorization['spearman'], released.path)
  storage.atomic_write_text(os.path.join(output_dir, COMPARE_JSON),
                            estimates.json_text(result))
  return json.loads(estimates.json_text(result))


def format_comparison(result):
  """The table the binary prints."""
  fixed = estimates.fixed
  train, test = result['train'], result['test']
  joined = f'{train["joined"]} of {train["ours"]} train'
  if test:
    joined += f', {test["joined"]} of {test["ours"]} test'
  mem = result['memorization']
  rows = [('order', result['order']), ('examples joined', joined),
          ('memorization Spearman / Pearson',
           f'{fixed(mem["spearman"])} / {fixed(mem["pearson"])} '
           f'({mem["compared"]} examples)')]
  for entry in mem['top_overlap']:
    rows.append((f'top-{entry["k"]} memorized overlap',
                 fixed(entry['overlap'])))
  infl = result['influence']
  if infl:
    rows.append(('influence Spearman / Pearson',
                 f'{fixed(infl["spearman"])} / {fixed(infl["pearson"])} '
                 f'({infl["compared"]} entries of {infl["classes"]} '
                 'classes)'))
  pairs = result['pairs']
  if pairs:
    rows += [('pairs ours / published / both',
              f'{pairs["ours"]} / {pairs["published"]} / {pairs["both"]}'),
             ('pair recall / precision / Jaccard',
              f'{fixed(pairs["recall"])} / {fixed(pairs["precision"])} / '
              f'{fixed(pairs["jaccard"])}')]
  width = max(len(name) for name, _ in rows)
  lines = [f'Compared {result["workdir"]} with {result["published"]}']
  lines += [f'  {name.ljust(width)}  {value}' for name, value in rows]
  lines += [f'  note: {note}' for note in result['notes']]
  lines.append(f'Written to {result["output_dir"]}: {COMPARE_JSON}, '
               f'{SCATTER_PNG}, {JOINED_CSV}')
  return '\n'.join(lines)


def _export(workdir, path, ours, arrays, info, loaded):
  """Writes our estimates in the release's schema; what was written."""
  loaded_records, kind, values = loaded
  order, train_order, test_order = join_lib.export_order(arrays)
  clean = arrays['original_train_labels'][train_order]
  test_labels = arrays['test_labels'][test_order]
  out = {'tr_mem': ours.memorization[train_order], 'tr_labels': clean,
         'tt_labels': test_labels,
         'tr_ids': arrays['train_ids'][train_order],
         'tt_ids': arrays['test_ids'][test_order]}
  for split, short, where in (('train', 'tr', train_order),
                              ('test', 'tt', test_order)):
    source = join_lib.known_source_ids(arrays, split)
    if source is not None:
      out[f'{short}_source_ids'] = source[where]
      if join_lib.is_filename(source):
        out[f'{short}_filenames'] = source[where]
  for k in range(int(info['num_classes'])):
    rows, cols = np.flatnonzero(clean == k), np.flatnonzero(test_labels == k)
    out[f'tr_classidx_{k}'] = rows
    out[f'tt_classidx_{k}'] = cols
    out[f'infl_matrix_class{k}'] = published_lib.class_influence(
        loaded_records.masks, values, train_order[rows], test_order[cols])
  metadata = {'workdir': workdir, 'num_trials': loaded_records.num_trials,
              'order': order, 'dataset': info.get('name'),
              'influence_scores': kind,
              'pair_thresholds': _thresholds(ours.summary),
              'written_by': published_lib.EXPORT_WRITER}
  out['metadata'] = np.array(json.dumps(metadata, sort_keys=True))
  train_position = np.argsort(train_order)
  test_position = np.argsort(test_order)
  raw = ours.pairs.get('raw')
  raw = (np.ones(len(ours.pairs['train']), bool) if raw is None
         else np.asarray(raw, bool))
  pair_train, pair_test = ours.pairs['train'][raw], ours.pairs['test'][raw]
  pairs = {'tr_idx': train_position[pair_train],
           'tt_idx': test_position[pair_test],
           'infl': ours.pairs['influence'][raw],
           'mem': ours.memorization[pair_train]}
  files = published_lib.write(path, out, pairs)
  return {'path': files[0], 'pairs': files[1], 'order': order,
          'num_pairs': int(raw.sum())}


def run(workdir, published=None, published_pairs=None, order='auto',
        top_k=1000, output_dir=None, export=None, log=print):
  """Compares W's estimates with a released file, and/or exports them.

  Args:
    workdir: a workdir the estimate binary has estimated.
    published: the released memorization/influence .npz (None: export only).
    published_pairs: the released pairs .npz (None: the pairs of the
      published matrices at our thresholds).
    order: how the file's positions meet our examples
      (join_lib.ORDERS).
    top_k: K of the top-K memorized overlap (also 100).
    output_dir: where compare.json, the scatter and joined.csv go (default
      W/compare).
    export: write our estimates in the release's schema there.
    log: callable taking one line.

  Returns:
    compare.json's object (with 'export' when exporting); {'export': ...}
    alone without `published`.
  """
  if not workdir:
    raise errors.UserError('--workdir is required: a workdir the estimate '
                           'binary has estimated.')
  errors.choice('--order', order, join_lib.ORDERS)
  top_k = errors.integer('--top_k', top_k, minimum=1)
  if not published and not export:
    raise errors.UserError(
        'Nothing to do: give --published=FILE.npz (the released scores, '
        'e.g. cifar100_infl_matrix.npz) to compare with, and/or '
        '--export=FILE.npz to write ours in their schema.')
  if published_pairs and not published:
    raise errors.UserError('--published_pairs needs --published (the '
                           'memorization/influence file the pairs index).')
  if export is not None and not export.endswith('.npz'):
    raise errors.UserError(f'--export={export}: name an .npz file (its pairs '
                           'go beside it, to ..._pairs.npz).')
  arrays, info = records.read_dataset_file(workdir)
  ours = _our_estimates(workdir)
  released = pairs_file = join = None
  if published:
    limits = published_lib.Limits.for_run(arrays['original_train_labels'],
                                          arrays['test_labels'])
    released = published_lib.read(published, limits=limits)
    if published_pairs:
      pairs_file = published_lib.read_pairs(published_pairs, released,
                                            limits=limits)
    join = join_lib.join(released, arrays, order)
    flag = '--output_dir' if output_dir else '--workdir'
    output_dir = output_dir or os.path.join(workdir, COMPARE_DIR)
    storage.check_writable(output_dir, flag)
  if export:
    storage.check_writable(os.path.dirname(export) or '.', '--export')
  loaded = None
  if export or (released is not None and released.classes):
    loaded = _records(workdir, ours.summary)
  result = {}
  if released is not None:
    result = _compare(workdir, released, pairs_file, join, ours, arrays,
                      loaded, top_k, output_dir)
    log(format_comparison(result))
  if export:
    result['export'] = _export(workdir, export, ours, arrays, info, loaded)
    log(f'Exported our estimates ({result["export"]["order"]} order) to '
        f'{result["export"]["path"]}, and {result["export"]["num_pairs"]} '
        f'pairs to {result["export"]["pairs"]}.')
  return result

"""Influence on several views of the same trials, in one blocked pass.

A view is a set of the trials, optionally with each trial given another
trial's test predictions:

    'k/8', 'k/4', 'k/2'   every 8th, 4th, 2nd trial (nested: k/8 in k/4 in
                          k/2; k/2 is the even trials)
    'odd'                 the odd trials (with k/2: the split halves)
    'all'                 every trial (the estimates themselves)
    'null', 'null1', ...  every trial, trial t given the test predictions of
                          trial perm[t] (a derangement): no training
                          example's membership is linked to the predictions
                          it is compared with, so every true influence is 0
                          and whatever pair passes a threshold is false.

The trial subsets are disjoint unions of segments (trials grouped by the
views they belong to), and a view's in-trial sums are the sums of its
segments' sums: with G_s = M_sᵀ T_s over segment s,

    X_view = sum_{s in view} G_s,    infl = X (1/k_in + 1/k_out) - S / k_out

(S[j] the view's total of test example j), so the nested views, the split
halves and the estimates cost one matrix product of k rows together; each
null costs one more. What each view keeps per block: the pairs over the
thresholds (the paper's raw set), the candidates for the tests (estimates
above the null's delta) with their exact in-trial counts, and for 'all' the
top-k, the largest influences and the dense matrix (scores.Reducer).
"""

import dataclasses
from typing import Optional

import numpy as np

from tf_memorization.stats import bits
from tf_memorization.stats import blocks
from tf_memorization.stats import procedures
from tf_memorization.stats import scores
from tf_memorization.stats import selection

NESTED = ('k/8', 'k/4', 'k/2', 'all')
_CHUNK_ROWS = 64


def nested_rows(k):
  """{view name: trial rows} of the nested views and the odd half."""
  t = np.arange(k)
  return {'k/8': t[t % 8 == 0], 'k/4': t[t % 4 == 0], 'k/2': t[t % 2 == 0],
          'odd': t[t % 2 == 1], 'all': t}


@dataclasses.dataclass
class Spec:
  """One view: its trial rows, its memorization (for the pair family), for
  a null the trial whose test predictions each row gets, and `every`: the
  view covers every `every`-th of the blocks of training examples that
  hold pairs of its family (a null estimated on a sample of the family, at
  a fraction of the cost; ViewPairs.coverage says which fraction of the
  family it saw, > 0 whenever the family is not empty)."""
  name: str
  rows: np.ndarray
  memorization: np.ndarray
  permutation: Optional[np.ndarray] = None
  every: int = 1


@dataclasses.dataclass
class ViewPairs:
  """A view's raw pairs (the paper's thresholds) and its tests.

  Attributes:
    name: the view.
    num_trials: its trials.
    num_tests: m, the pairs of its family (selection's module docstring)
      that it covered and that the false-discovery control counts: all of
      them, or (procedure 'filtered') those whose test can reach the level.
    family: the pairs of its family that it covered.
    coverage: that number over the whole family's (1 unless Spec.every).
    raw_train, raw_test, raw_influence, raw_stderr: the pairs over the
      thresholds, exact (float64 re-check) as scores.influence keeps them.
    test_train, test_test, pvalue, qvalue, selected: the pairs tested (the
      estimates above delta) and the false-discovery-controlled selection.
  """
  name: str
  num_trials: int
  num_tests: int
  coverage: float
  raw_train: np.ndarray
  raw_test: np.ndarray
  raw_influence: np.ndarray
  raw_stderr: np.ndarray
  test_train: np.ndarray
  test_test: np.ndarray
  pvalue: np.ndarray
  qvalue: np.ndarray
  selected: np.ndarray
  family: int = 0

  def raw_set(self):
    return set(zip(self.raw_train.tolist(), self.raw_test.tolist()))

  def controlled_set(self):
    return set(zip(self.test_train[self.selected].tolist(),
                   self.test_test[self.selected].tolist()))

  def raw_keys(self):
    """The raw pairs as scores.pair_keys (what the figures compare)."""
    return scores.pair_keys(self.raw_train, self.raw_test)

  def controlled_keys(self):
    return scores.pair_keys(self.test_train[self.selected],
                            self.test_test[self.selected])


def as_index(rows):
  """`rows` as a slice when they step evenly (a view of the records, not a
  copy: the nested views and the halves all do), else as they are."""
  rows = np.asarray(rows, np.int64)
  if len(rows) == 1:
    return slice(int(rows[0]), int(rows[0]) + 1)
  steps = np.diff(rows)
  if len(rows) and steps[0] > 0 and np.all(steps == steps[0]):
    return slice(int(rows[0]), int(rows[-1]) + 1, int(steps[0]))
  return rows


def _segments(specs, k):
  """[(trial rows, [indices of the specs summing it])] for the specs
  without a permutation: trials grouped by the set of views holding them."""
  plain = [i for i, s in enumerate(specs) if s.permutation is None]
  member = np.zeros((len(plain), k), bool)
  for row, i in enumerate(plain):
    member[row, specs[i].rows] = True
  used = member.any(axis=0)
  signatures, inverse = np.unique(member[:, used].T, axis=0,
                                  return_inverse=True)
  trials = np.flatnonzero(used)
  out = []
  for s, signature in enumerate(signatures):
    out.append((trials[np.asarray(inverse).ravel() == s],
                [plain[r] for r in np.flatnonzero(signature)]))
  return out


def _sum_plan(specs, segments):
  """The order views are summed in, each from the largest view before it
  whose segments are a subset of its own (k/4 = k/8 + one segment, ...):
  [(view, base view or None, [segments to add], [views no longer
  needed])]."""
  segs_of = {i: frozenset(s for s, (_, _, members) in enumerate(segments)
                          if i in members) for i in range(len(specs))}
  order = sorted(range(len(specs)), key=lambda i: (
      specs[i].permutation is not None, len(segs_of[i]), i))
  plan, done = [], []
  for i in order:
    base = None
    if specs[i].permutation is None:
      subsets = [j for j in done if segs_of[j] <= segs_of[i]
                 and specs[j].every == 1]
      base = max(subsets, key=lambda j: len(segs_of[j]), default=None)
    extra = sorted(segs_of[i] - (segs_of[base] if base is not None
                                 else frozenset()))
    plan.append([i, base, extra, []])
    done.append(i)
  last = {}
  for position, (i, base, _, _) in enumerate(plan):
    last[i] = position
    if base is not None:
      last[base] = position
  for i, position in last.items():
    plan[position][3].append(i)
  return [tuple(step) for step in plan]


class _View:
  """Per-view state of the pass."""

  def __init__(self, spec, masks, test_values, family_args, delta):
    self.spec = spec
    rows = as_index(spec.rows)
    self.masks = masks[rows]
    self.test_values = (test_values[rows] if spec.permutation is None else
                        test_values[spec.permutation[spec.rows]])
    k = len(spec.rows)
    self.k_in = self.masks.sum(axis=0)
    self.k_out = k - self.k_in
    self.defined = (self.k_in > 0) & (self.k_out > 0)
    inv_out = np.where(self.defined, 1.0 / np.maximum(self.k_out, 1), 0.0)
    inv_in = np.where(self.defined, 1.0 / np.maximum(self.k_in, 1), 0.0)
    self.scale = (inv_in + inv_out).astype(np.float32)
    self.inv_out = inv_out.astype(np.float32)
    self.totals = self.test_values.sum(axis=0, dtype=np.float64)
    self.totals32 = self.totals.astype(np.float32)
    self.family = scores.pair_family(spec.memorization, *family_args)
    self.delta = delta
    self.raw, self.tested = ([], []), ([], [], [])
    self.covered = np.zeros(len(self.k_in), bool)
    self.sampled = None  # bool [n]: the examples a view of every > 1 covers

  def sample_blocks(self, n, block_size):
    """Chooses the training examples a view of Spec.every > 1 covers: those
    in every `every`-th of the blocks of block_size consecutive examples
    that hold pairs of its family, so that a family of any size is sampled
    (a family in one block of many, as when a run memorizes one example, is
    covered whole). The same examples under either influence scope."""
    if self.spec.every == 1:
      return
    candidates = self.family[0]
    holding = [b for b, start in enumerate(range(0, n, block_size))
               if candidates[start:start + block_size].any()]
    sampled = np.zeros(len(candidates), bool)
    for b in holding[::self.spec.every]:
      sampled[b * block_size:(b + 1) * block_size] = True
    self.sampled = sampled

  def sampled_rows(self, index):
    """The block's rows (local positions) this view covers."""
    if self.sampled is None:
      return np.arange(len(index))
    return np.flatnonzero(self.sampled[index])

  def family_rows(self, index):
    """The block's rows (local positions) that hold pairs of the family and
    that the view covers: the only ones a view other than the full one
    looks at."""
    keep = self.family[0][index] & self.defined[index]
    if self.sampled is not None:
      keep &= self.sampled[index]
    return np.flatnonzero(keep)

  def block(self, counts, index, cols, threshold):
    """The view's influence block from its in-trial counts [b, m] of the
    training examples `index` and the test examples `cols` (None: all);
    collects its pairs and candidates."""
    # Row chunks small enough to stay in cache: the scaling and the
    # rank-one correction cost one pass over memory, not three.
    block = np.empty(counts.shape, np.float32)
    scale = self.scale[index]
    inv_out = self.inv_out[index]
    totals = self.totals32 if cols is None else self.totals32[cols]
    for r in range(0, len(block), _CHUNK_ROWS):
      part = slice(r, r + _CHUNK_ROWS)
      np.multiply(counts[part], scale[part, None], out=block[part])
      block[part] -= inv_out[part, None] * totals[None, :]
    defined = self.defined[index]
    slack = scores.PAIR_SLACK
    rows, local = scores.select_pairs(block, index, cols, threshold, defined,
                                      self.family)
    self.raw[0].append(index[rows])
    self.raw[1].append(local if cols is None else cols[local])
    if self.delta >= threshold:  # the candidates are among these
      keep = block[rows, local] >= self.delta + slack
      rows, local = rows[keep], local[keep]
    else:
      rows, local = scores.select_pairs(block, index, cols,
                                        self.delta + 2 * slack, defined,
                                        self.family)
    self.tested[0].append(index[rows])
    self.tested[1].append(local if cols is None else cols[local])
    self.tested[2].append(counts[rows, local])
    return block, defined


def _tests(view, binary, delta, level, method, procedure):
  """p-values of the view's candidates and the FDR selection: over the
  whole family, or (procedure 'filtered', 0/1 values) over its pairs whose
  test can reach the level given their margins (procedures.py)."""
  rows = scores.concat_indices(view.tested[0])
  cols = scores.concat_indices(view.tested[1])
  if binary:
    x_in = np.rint(np.concatenate(view.tested[2]) if view.tested[2]
                   else np.zeros(0))
    k_in, k_out = view.k_in[rows], view.k_out[rows]
    pvalue = selection.difference_pvalues(x_in, k_in, view.totals[cols] - x_in,
                                          k_out, delta)
  else:
    stats = scores.pair_statistics(view.masks, view.test_values, rows, cols,
                                   full=True)
    pvalue = selection.welch_pvalues(
        stats['mean_in'], stats['var_in'] * stats['k_in'] / np.maximum(
            stats['k_in'] - 1, 1), stats['k_in'], stats['mean_out'],
        stats['var_out'] * stats['k_out'] / np.maximum(stats['k_out'] - 1, 1),
        stats['k_out'], delta)
  candidates, *rest = view.family
  if binary and procedure == 'filtered':
    def size(chosen):
      return procedures.testable_family_size(
          chosen & view.defined, view.k_in, view.k_out, rest[0],
          view.totals, rest[1], rest[2], delta, level)
    keep = procedures.testable(view.totals[cols], view.k_in[rows],
                               view.k_out[rows], delta, level)
  else:
    def size(chosen):
      return scores.family_size((chosen, *rest))
    keep = np.ones(len(pvalue), bool)
  whole = size(candidates)
  m = max(size(candidates & view.covered), int(keep.sum()))
  family = scores.family_size((candidates & view.covered, *rest))
  selected = np.zeros(len(pvalue), bool)
  qvalue = np.ones(len(pvalue))
  selected[keep], qvalue[keep] = selection.fdr_select(pvalue[keep], m, level,
                                                      method)
  return rows, cols, pvalue, qvalue, selected, m, (
      m / whole if whole else 1.0), max(family, m)


def _product(masks, values, cols):
  """masks [k, b] and values [k, n_test] (of the test examples `cols`;
  None: all): the in-trial sums [b, m] in float32."""
  return masks.T.astype(np.float32) @ (values if cols is None
                                       else values[:, cols])


def influence_views(masks, test_values, train_labels, test_labels, specs,
                    full='all', *, topk=10, influence_threshold=0.15,
                    memorization_threshold=0.25, same_label=True, delta=None,
                    level=0.1, method='bh', block_size=2048, dense_path=None,
                    progress=None, scope='all', procedure='whole'):
  """Every view's pairs and tests, and the full view's top-k, in one pass.

  Args:
    masks: bool [k, n] (or a bits.BitMatrix); test_values: bool or float
      [k, n_test].
    train_labels, test_labels: int [n], [n_test].
    specs: [Spec]; `full` names the one whose top-k, largest influences and
      dense matrix are kept.
    topk, influence_threshold, memorization_threshold, same_label,
      block_size, dense_path, progress, scope: as in scores.influence.
    delta: each pair's null, H0: infl <= delta (None: the influence
      threshold).
    level, method: the false-discovery control (selection.fdr_select).
    procedure: 'whole' (over the whole family) or 'filtered' (over its
      pairs that can reach the level; procedures.py).

  Returns:
    (scores.InfluenceResult of the full view, {name: ViewPairs}).
  """
  masks = bits.as_bool(masks)
  binary = np.asarray(test_values).dtype == bool
  test_values = np.asarray(test_values, np.float32)
  k, n = masks.shape
  n_test = test_values.shape[1]
  delta = influence_threshold if delta is None else float(delta)
  family_args = (memorization_threshold, train_labels, test_labels,
                 same_label)
  views = [_View(s, masks, test_values, family_args, delta) for s in specs]
  by_name = {s.name: i for i, s in enumerate(specs)}
  if full not in by_name:
    raise ValueError(f'no view named {full!r} among {sorted(by_name)}.')
  segments = [(masks[as_index(rows)], test_values[as_index(rows)], members)
                for rows, members in _segments(specs, k)]
  plan = _sum_plan(specs, segments)
  reducer = blocks.Reducer(n, n_test, max(0, min(int(topk), n)), dense_path)
  for view in views:
    view.sample_blocks(n, block_size)
  done = 0
  for take, index, cols in blocks.blocks(train_labels, test_labels,
                                         block_size, scope):
    covered = [view.sampled_rows(index) for view in views]
    for view, rows in zip(views, covered):
      view.covered[index[rows]] = True
    counts = [_product(seg_masks[:, take], seg_values, cols)
              for seg_masks, seg_values, _ in segments]
    sums = {}
    for i, base, extra, last_use in plan:
      view = views[i]
      # Views other than the full one need only the family's rows.
      rows = None if i == by_name[full] else view.family_rows(index)
      if view.spec.permutation is not None:
        total = (_product(view.masks[:, index[rows]], view.test_values, cols)
                 if len(covered[i]) and len(rows) else None)
      else:
        total = sums[base] if base is not None else counts[extra[0]]
        for s_index in extra[1 if base is None else 0:]:
          total = total + counts[s_index]
      sums[i] = total
      if total is not None:
        chosen = index
        if rows is not None:
          chosen = index[rows]
          if view.spec.permutation is None:
            total = total[rows]
        block, defined = view.block(total, chosen, cols, influence_threshold)
        if i == by_name[full]:
          reducer.add(block, take, index, cols, defined)
        del block
      for j in last_use:  # no later view sums from these
        sums.pop(j, None)
    done += len(index)
    if progress is not None:
      progress(done, n)
  if progress is not None and done < n:  # classes without test examples
    progress(n, n)
  reducer.finish()
  results = {}
  for view in views:
    raw = scores.exact_pairs(view.masks, view.test_values,
                             scores.concat_indices(view.raw[0]),
                             scores.concat_indices(view.raw[1]),
                             influence_threshold)
    rows, cols, pvalue, qvalue, selected, m, coverage, family = _tests(
        view, binary, delta, level, method, procedure)
    results[view.spec.name] = ViewPairs(
        name=view.spec.name, num_trials=len(view.spec.rows), num_tests=m,
        coverage=coverage,
        raw_train=raw[0], raw_test=raw[1], raw_influence=raw[2],
        raw_stderr=raw[3], test_train=rows, test_test=cols, pvalue=pvalue,
        qvalue=qvalue, selected=selected, family=family)
  main = results[full]
  return scores.InfluenceResult(
      topk_indices=reducer.best_idx, topk_influence=reducer.best_val,
      pair_train=main.raw_train, pair_test=main.raw_test,
      pair_influence=main.raw_influence, pair_stderr=main.raw_stderr,
      max_influence=reducer.max_influence), results

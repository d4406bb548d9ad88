"""Selecting influential pairs with power: four procedures on one family.

The pair family (selection.py) is large and nearly all null: every training
example with memorization over the threshold against every test example of
its label, 10^4-10^9 pairs of which a few hundred carry influence. BH over
the whole family (`bh`) needs p <= q R / m, so with m = 81,200 and k = 96 a
pair of influence 0.5 is rarely selected. The procedures compared here, on
the counts of one view (x_in of k_in in-trials, x_out of k_out out-trials):

- `whole`: Benjamini-Hochberg over the whole family (the reference, and
  `Estimator.pair_procedure = 'whole'`).
- `filtered` (adopted: `Estimator.pair_procedure`'s default): BH over the pairs that *can* be selected. A pair's
  test, given its margins (the test example's total correct x = x_in + x_out
  over the trials, and k_in, k_out), has a smallest attainable p-value:
  the one of the most extreme split, all x successes put in the in-trials
  first. A test whose smallest attainable p-value exceeds the level q can
  never be selected by BH at any rank (BH's cutoff is at most q), and under
  H0 its p-value carries no information: such pairs are dropped from the
  family before any pair's influence is looked at, and BH runs over the m'
  that remain (Tarone 1990; Gilbert 2005 for the false discovery rate). In
  practice this drops the pairs of test examples the trials (nearly) always
  get right or always get wrong: their influence cannot exceed delta.
  *Assumptions.* For delta = 0 the test is Fisher's, exact conditionally on
  the margins: the filter is a function of the margins only, the p-values
  of the kept true nulls are conditionally super-uniform, and BH over the
  kept family controls the FDR at q under the same dependence BH needs
  (independent or PRDS p-values; selection.py). For delta > 0 the test is
  the Miettinen-Nurminen score test, whose null distribution depends on
  the margins only through the nuisance rate: the filter is then
  conditionally valid in the normal approximation. The planted-truth
  comparison (tests/stats/test_procedures.py, benchmarks/fdr_procedures.py)
  measures its false discovery proportion with nulls at 0 and at delta.
- `two_stage`: candidates chosen on the even trials (estimate over delta
  and p <= `screen`), tested on the odd trials with BH over the candidates
  only (valid: the halves' trials are independent); both directions are
  combined by e-BH (Wang & Ramdas 2022) on the mean of the two directions'
  BH e-values e = m 1{selected} / (q R), which controls the FDR under any
  dependence between the directions.
- `simes`: hierarchical by test example. A Simes p-value per test example
  over its pairs, BH across test examples at q, then BH within each
  selected test example at q |S| / G (Benjamini & Bogomolov 2014). It
  controls the FDR of test examples and the average FDR within the selected
  ones, not the pair-level FDR in general; measured here as a comparison.

`select(name, ...)` runs one on a view's counts; `planted_family` draws the
planted-truth cases the comparison uses.
"""

import numpy as np

from tf_memorization.stats import selection

PROCEDURES = ('whole', 'filtered', 'two_stage', 'simes')


def attainable_pvalues(x, k_in, k_out, delta):
  """The smallest p-value a pair's test can reach given its margins: x
  successes over k_in + k_out trials, as many as fit in the in-trials
  (x_in = min(x, k_in)), the rest out."""
  x = np.asarray(x, np.float64)
  k_in = np.asarray(k_in, np.float64)
  k_out = np.asarray(k_out, np.float64)
  x_in = np.minimum(x, k_in)
  return selection.difference_pvalues(x_in, k_in, x - x_in, k_out, delta)


def testable(x, k_in, k_out, delta, level):
  """bool: the pairs whose smallest attainable p-value is <= level (those
  BH at `level` could ever select)."""
  x, k_in, k_out = np.broadcast_arrays(
      np.rint(np.asarray(x, np.float64)).astype(np.int64),
      np.asarray(k_in, np.int64), np.asarray(k_out, np.int64))
  if not x.size:
    return np.zeros(x.shape, bool)
  # The margins take few distinct values: one test per distinct triple.
  triples = np.stack([x, k_in, k_out], axis=-1).reshape(-1, 3)
  distinct, inverse = np.unique(triples, axis=0, return_inverse=True)
  ok = (distinct[:, 1] > 0) & (distinct[:, 2] > 0)
  reach = np.ones(len(distinct))
  if ok.any():
    reach[ok] = attainable_pvalues(distinct[ok, 0], distinct[ok, 1],
                                   distinct[ok, 2], delta)
  return (reach <= level)[np.asarray(inverse).ravel()].reshape(x.shape)


def testable_family_size(rows, k_in, k_out, train_labels, totals,
                         test_labels, same_label, delta, level):
  """m': the pairs of the family (training examples `rows` bool [n], with
  k_in, k_out [n]; test examples with `totals` correct [n_test]; same_label
  pairs or all) whose test can reach `level` (`testable`). One attainable
  p-value per distinct (k_in, total), summed through label histograms, so
  that a family of 10^9 pairs costs a few thousand tests."""
  rows = np.asarray(rows, bool)
  if not rows.any():
    return 0
  k_in = np.asarray(k_in, np.int64)[rows]
  k_out = np.asarray(k_out, np.int64)[rows]
  totals = np.rint(np.asarray(totals, np.float64)).astype(np.int64)
  sides, side_of = np.unique(np.stack([k_in, k_out], 1), axis=0,
                             return_inverse=True)
  values, value_of = np.unique(totals, return_inverse=True)
  reach = testable(values[None, :], sides[:, :1], sides[:, 1:], delta,
                   level).astype(np.float64)                  # [sides, values]
  side_of = np.asarray(side_of).ravel()
  value_of = np.asarray(value_of).ravel()
  if not same_label:
    return int(np.bincount(side_of, minlength=len(sides))
               @ reach @ np.bincount(value_of, minlength=len(values)))
  labels, label_of = np.unique(np.r_[np.asarray(train_labels)[rows],
                                     np.asarray(test_labels)],
                               return_inverse=True)
  label_of = np.asarray(label_of).ravel()
  row_hist = np.zeros((len(labels), len(sides)))
  np.add.at(row_hist, (label_of[:len(k_in)], side_of), 1.0)
  test_hist = np.zeros((len(labels), len(values)))
  np.add.at(test_hist, (label_of[len(k_in):], value_of), 1.0)
  return int(round(float(np.sum((row_hist @ reach) * test_hist))))


def _bh(pvalues, m, level):
  return selection.fdr_select(pvalues, max(int(m), len(pvalues)), level)[0]


def filtered_bh(x_in, k_in, x_out, k_out, delta, level):
  """`filtered`: (selected bool [p], the family kept m')."""
  keep = testable(x_in + x_out, k_in, k_out, delta, level)
  selected = np.zeros(len(keep), bool)
  if keep.any():
    p = selection.difference_pvalues(x_in[keep], k_in[keep], x_out[keep],
                                     k_out[keep], delta)
    selected[keep] = _bh(p, keep.sum(), level)
  return selected, int(keep.sum())


def whole_bh(x_in, k_in, x_out, k_out, delta, level):
  """`whole`: BH over the whole family."""
  p = selection.difference_pvalues(x_in, k_in, x_out, k_out, delta)
  return _bh(p, len(p), level)


def _estimate(x_in, k_in, x_out, k_out):
  with np.errstate(invalid='ignore', divide='ignore'):
    return x_in / k_in - x_out / k_out


def two_stage(halves, delta, level, screen=0.05):
  """`two_stage`: halves = ((x_in, k_in, x_out, k_out) of the even trials,
  the same of the odd ones), each over the whole family."""
  m = len(halves[0][0])
  e_sum = np.zeros(m)
  for select_on, test_on in ((0, 1), (1, 0)):
    a, b = halves[select_on], halves[test_on]
    ok = (a[1] > 0) & (a[3] > 0) & (b[1] > 0) & (b[3] > 0)
    cand = ok & (_estimate(*a) > delta)
    cand[cand] = selection.difference_pvalues(
        a[0][cand], a[1][cand], a[2][cand], a[3][cand], delta) <= screen
    if not cand.any():
      continue
    p = selection.difference_pvalues(b[0][cand], b[1][cand], b[2][cand],
                                     b[3][cand], delta)
    chosen = _bh(p, len(p), level / 2)
    if chosen.any():
      where = np.flatnonzero(cand)[chosen]
      e_sum[where] += m / (level / 2 * chosen.sum())
  # e-BH (the r largest e-values with e_(r) >= m / (q r)) is BH on the
  # p-values 1 / e; an e-value of 0 is p = 1, never selected at q < 1.
  with np.errstate(divide='ignore'):
    pvalues = np.minimum(1.0, 2.0 / e_sum)
  return selection.fdr_select(pvalues, m, level)[0]


def simes_hierarchy(x_in, k_in, x_out, k_out, groups, delta, level):
  """`simes`: groups int [p] (the test example of each pair)."""
  p = selection.difference_pvalues(x_in, k_in, x_out, k_out, delta)
  order = np.lexsort((p, groups))
  g_sorted, p_sorted = groups[order], p[order]
  starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
  sizes = np.diff(np.r_[starts, len(p)])
  rank = np.arange(len(p)) - np.repeat(starts, sizes) + 1
  simes = np.minimum.reduceat(p_sorted * np.repeat(sizes, sizes) / rank,
                              starts)
  chosen_groups = _bh(np.minimum(simes, 1.0), len(simes), level)
  selected = np.zeros(len(p), bool)
  inner = level * chosen_groups.sum() / len(simes)
  for g in np.flatnonzero(chosen_groups):
    part = order[starts[g]:starts[g] + sizes[g]]
    selected[part] = _bh(p[part], len(part), inner)
  return selected


def counts(masks, values, rows, cols):
  """(x_in, k_in, x_out, k_out) of the pairs (rows[i], cols[i])."""
  masks = np.asarray(masks, bool)
  values = np.asarray(values, bool)
  k = masks.shape[0]
  k_in = masks[:, rows].sum(axis=0).astype(np.float64)
  total = values[:, cols].sum(axis=0).astype(np.float64)
  x_in = np.einsum('ti,ti->i', masks[:, rows].astype(np.float32),
                   values[:, cols].astype(np.float32)).astype(np.float64)
  return x_in, k_in, total - x_in, k - k_in


def select(name, masks, values, rows, cols, delta, level, screen=0.05):
  """One procedure on the family of pairs (rows, cols) of the trials:
  selected bool [p]."""
  if name == 'two_stage':
    halves = [counts(masks[h::2], values[h::2], rows, cols) for h in (0, 1)]
    return two_stage(halves, delta, level, screen)
  x_in, k_in, x_out, k_out = counts(masks, values, rows, cols)
  ok = (k_in > 0) & (k_out > 0)
  selected = np.zeros(len(rows), bool)
  args = (x_in[ok], k_in[ok], x_out[ok], k_out[ok])
  if name == 'whole':
    selected[ok] = whole_bh(*args, delta, level)
  elif name == 'filtered':
    selected[ok] = filtered_bh(*args, delta, level)[0]
  elif name == 'simes':
    selected[ok] = simes_hierarchy(*args, np.asarray(cols)[ok], delta, level)
  else:
    raise ValueError(f'procedure {name!r}: choose from {PROCEDURES}.')
  return selected


def planted_family(seed, k, n_rows=500, n_test=1000, classes=10,
                   num_planted=200, effects=(0.2, 0.8), boundary=0,
                   trial_sd=0.3, r=0.5, learned=0.84):
  """A planted-truth case shaped like an estimator's pair family.

  `n_rows` training examples in the family (memorized), `n_test` test
  examples, both spread over `classes` labels; the family is every
  same-label pair (n_rows n_test / classes). Test example j's accuracy
  without any planted partner is drawn as on image benchmarks: a share
  `learned` at 0.97-1 (84%: the demo's share of test examples right in
  >= 99% of its trials), the rest up to 90% in between (0.3-0.9), 10% hard
  (0-0.1); each trial shifts every test example's log-odds by
  N(0, trial_sd) (trials better or worse overall: the positive dependence
  real trials have). `num_planted`
  distinct test examples get one planted same-label training example with
  influence drawn uniformly from `effects`, and `boundary` more get one of
  influence exactly 0.15 (a null at delta = 0.15). With masks M ~
  Bernoulli(r), T[t, j] ~ Bernoulli(p_out + infl M[t, i]).

  Returns:
    dict: masks bool [k, n_rows], values bool [k, n_test], rows, cols (the
    family), influence float [family] (the true influence of each pair).
  """
  rng = np.random.default_rng([seed, k, 0x91A])
  train_labels = np.arange(n_rows) % classes
  test_labels = np.arange(n_test) % classes
  kind = rng.random(n_test)
  base = np.where(kind < learned, rng.uniform(0.97, 1.0, n_test),
                  np.where(kind < 0.9, rng.uniform(0.3, 0.9, n_test),
                           rng.uniform(0.0, 0.1, n_test)))
  masks = rng.random((k, n_rows)) < r
  logit = np.log(np.clip(base, 1e-4, 1 - 1e-4) / np.clip(1 - base, 1e-4, 1))
  shift = rng.normal(0.0, trial_sd, (k, 1))
  prob = 1.0 / (1.0 + np.exp(-(logit[None, :] + shift)))
  chosen = rng.choice(n_test, num_planted + boundary, replace=False)
  partner = np.full(n_test, -1)
  effect = np.zeros(n_test)
  effect[chosen[:num_planted]] = rng.uniform(*effects, num_planted)
  effect[chosen[num_planted:]] = 0.15
  for j in chosen:
    same = np.flatnonzero(train_labels == test_labels[j])
    partner[j] = rng.choice(same)
    p_out = rng.uniform(0.0, 1.0 - effect[j])
    prob[:, j] = np.clip(p_out + shift[:, 0] * 0.05, 0, 1 - effect[j]) + (
        effect[j] * masks[:, partner[j]])
  values = rng.random((k, n_test)) < prob
  rows, cols = np.nonzero(train_labels[:, None] == test_labels[None, :])
  influence = np.where(partner[cols] == rows, effect[cols], 0.0)
  return {'masks': masks, 'values': values, 'rows': rows, 'cols': cols,
          'influence': influence}


def compare(seeds, k, delta=0.15, level=0.1, names=PROCEDURES, **planted):
  """{procedure: (mean FDP, sd of FDP, mean recall)} over seeds; recall of
  the pairs whose influence exceeds delta."""
  out = {name: ([], []) for name in names}
  for seed in seeds:
    case = planted_family(seed, k, **planted)
    true = case['influence'] > delta
    for name in names:
      chosen = select(name, case['masks'], case['values'], case['rows'],
                      case['cols'], delta, level)
      out[name][0].append(np.sum(chosen & ~true) / max(chosen.sum(), 1))
      out[name][1].append(np.sum(chosen & true) / max(true.sum(), 1))
  return {name: (float(np.mean(f)), float(np.std(f)), float(np.mean(r)))
          for name, (f, r) in out.items()}

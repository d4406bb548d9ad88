"""How many trials: standard errors, the controlled sets and their cost.

From any set of trials (a 16-trial pilot will do) the planner predicts, for
larger k:

- **Standard errors.** Each estimate is a difference of two means over
  k_in ~ r k and k_out ~ (1 - r) k trials, so its variance is
  v_in / (r k) + v_out / ((1 - r) k) with the per-trial variances v fixed by
  the examples: it shrinks as 1/k. The pilot's unbiased variances
  (p(1 - p) k_side / (k_side - 1)) give each example's prediction; the
  figures are the root mean square (unbiased for the mean variance) and
  the `quantile` (default 0.9) over examples, for memorization and for the
  influence of a uniform sample of the pair family.
- **The controlled sets.** Empirical Bayes: the pilot's estimates are
  x = mu + e, e ~ N(0, s^2), with the true values mu drawn from a prior g
  on a grid over [-1, 1], fitted by maximum likelihood (EM; s from
  variances smoothed by (x + 1/2) / (k_side + 1), so that an example never
  seen wrong still has some). **Checked by the halves**: g's mass above
  the null's delta is shrunk to the share that one half of the trials
  confirms of what g claims from the other (`shrink_factor`), so that
  noise does not plant effects. **Simulated**: each column (or a sample of
  10,000) gets a true value drawn from its posterior and an out-trial rate
  that keeps its measured accuracy; at k trials two independent runs are
  drawn (binomial counts), put through the estimator's own test and
  false-discovery control (the filtered family included), and give the
  controlled set's size, its false discovery rate and the Jaccard index of
  the two runs. The estimator compares the prediction at the workdir's own
  k and at its halves' with what it measured (`Plan.check`), and gives no
  pair prediction where they disagree.
- **Cost.** Hours of training at the workdir's measured seconds per trial
  (set-up, training and prediction, as the records hold them), for one
  worker.

`trials_for` answers how many trials a target needs: a standard error
(`--target_stderr`, at the quantile) or a pair-set Jaccard.
"""

import math

import numpy as np

from tf_memorization.stats import advice
from tf_memorization.stats import bits
from tf_memorization.stats import prior as prior_lib
from tf_memorization.stats import procedures
from tf_memorization.stats import selection


GRID = prior_lib.GRID


def _side_variances(masks, values, chunk=4096):
  """Per column of 0/1 values: (k_in, k_out, estimate, unbiased v_in,
  v_out, smoothed v_in, v_out), from the in- and out-trial counts (one
  pass, in column chunks)."""
  masks = bits.as_bool(masks)
  values = bits.as_bool(values)
  k, n = masks.shape
  x_in, x_all = np.empty(n), np.empty(n)
  for start in range(0, n, chunk):
    m, v = masks[:, start:start + chunk], values[:, start:start + chunk]
    x_in[start:start + chunk] = np.count_nonzero(m & v, axis=0)
    x_all[start:start + chunk] = np.count_nonzero(v, axis=0)
  k_in = masks.sum(axis=0).astype(np.float64)
  k_out = k - k_in
  x_out = x_all - x_in
  with np.errstate(invalid='ignore', divide='ignore'):
    out = [k_in, k_out, x_in / k_in - x_out / k_out]
    for x, size in ((x_in, k_in), (x_out, k_out)):
      p = x / size
      out.append(np.where(size > 1, p * (1 - p) * size / np.maximum(size - 1,
                                                                    1),
                          np.nan))
    for x, size in ((x_in, k_in), (x_out, k_out)):
      p = (x + 0.5) / (size + 1.0)
      out.append(p * (1 - p))
  return out


def _estimates(masks, values, keep=False):
  """(estimate, unbiased per-trial variance, smoothed one) of the columns
  with trials on both sides: the per-trial variance is
  w = v_in / r + v_out / (1 - r), r = k_in / k, so the variance at k is
  w / k. keep: every column (NaN where undefined), and the columns'
  (k_in, correct in all trials) too."""
  k = masks.shape[0]
  k_in, k_out, diff, u_in, u_out, s_in, s_out = _side_variances(masks, values)
  ok = (k_in > 0) & (k_out > 0)
  r = np.where(ok, k_in / k, np.nan)
  with np.errstate(invalid='ignore', divide='ignore'):
    unbiased = u_in / r + u_out / (1 - r)
    smoothed = s_in / r + s_out / (1 - r)
  if keep:
    return (np.where(ok, diff, np.nan), np.where(ok, unbiased, np.nan),
            np.where(ok, smoothed, np.nan), k_in)
  return diff[ok], unbiased[ok], smoothed[ok]


def _halves(masks, values):
  """((estimate, accuracy, ratio, k) of the even trials, the same of the
  odd ones), per column: what grid_stderr needs."""
  out = []
  for h in (0, 1):
    part_masks, part_values = masks[h::2], values[h::2]
    k = part_masks.shape[0]
    est, _, _, k_in = _estimates(part_masks, part_values, keep=True)
    _, _, x_all = bits.column_counts(part_masks, part_values)
    out.append((est, (x_all + 0.5) / (k + 1.0), k_in / k, k))
  return out


def sample_pairs(loaded, memorization, threshold, same_label, size, seed):
  """A uniform sample of the pair family (selection's module docstring):
  (train indices, test indices, family size)."""
  rng = np.random.default_rng([seed, 0x9A1])
  candidates = np.flatnonzero(np.asarray(memorization) >= threshold)
  test_labels = np.asarray(loaded.test_labels)
  if same_label:
    by_label = {c: np.flatnonzero(test_labels == c)
                for c in np.unique(test_labels)}
    counts = np.array([len(by_label.get(c, ())) for c in
                       loaded.train_labels[candidates]], np.float64)
  else:
    counts = np.full(len(candidates), float(len(test_labels)))
  m = int(counts.sum())
  if not m:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
  if m <= size:  # the whole family
    if same_label:
      pairs = [(i, j) for i in candidates
               for j in by_label.get(loaded.train_labels[i], ())]
    else:
      pairs = [(i, j) for i in candidates for j in range(len(test_labels))]
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1], m
  rows = rng.choice(candidates, size=size, p=counts / counts.sum())
  if same_label:  # a test example of each row's label, uniformly
    cols = np.empty(size, np.int64)
    row_labels = loaded.train_labels[rows]
    for label, members in by_label.items():
      where = np.flatnonzero(row_labels == label)
      cols[where] = members[rng.integers(0, len(members), len(where))]
  else:
    cols = rng.integers(0, len(test_labels), size)
  return rows.astype(np.int64), cols, m


def detectable(per_trial_sd, k, delta, level, m):
  """The smallest influence (on GRID) that a test of median per-trial sd
  rejects with probability >= 1/2 at k trials when it is the only one
  BH selects from a family of m (cutoff q / m): the effect a first
  discovery needs. NaN if none on the grid."""
  from scipy import special  # pylint: disable=g-import-not-at-top
  if not len(per_trial_sd) or m < 1:
    return float('nan')
  s_k = max(float(np.median(per_trial_sd)), 1e-6) / math.sqrt(k)
  z = -special.ndtri(level / m)
  above = GRID[(GRID > delta) & (GRID >= delta + z * s_k)]
  return round(float(above[0]), 6) if len(above) else float('nan')


def _uncertain(per_trial_var):
  """The per-trial variances of the estimates the trials disagree on (a
  value that is the same in every trial has none, and no error to plan
  for)."""
  values = np.asarray(per_trial_var)
  return values[np.isfinite(values) & (values > 0)]


def _quantile_sd(per_trial_var, k, quantile):
  """(RMS over all, `quantile` over the uncertain) standard error at k."""
  values = np.asarray(per_trial_var)
  values = values[np.isfinite(values)]
  uncertain = _uncertain(values)
  if not len(values):
    return float('nan'), float('nan')
  rms = float(np.sqrt(np.mean(values / k)))
  return rms, (float(np.sqrt(np.quantile(uncertain, quantile) / k))
               if len(uncertain) else 0.0)


_TIMINGS = ('setup_seconds', 'train_seconds', 'predict_seconds')


def seconds_per_trial(loaded):
  """Mean set-up + training + prediction seconds of the records that hold
  all three (NaN when none does); loading checked each is in range."""
  values = [sum(m['metrics'][key] for key in _TIMINGS)
            for m in loaded.metadata
            if all(key in m.get('metrics', {}) for key in _TIMINGS)]
  return float(np.mean(values)) if values else float('nan')


def _part(estimate, unbiased, model, delta, level, m, halves):
  """One part of the plan (memorization, or the pairs): the unbiased
  per-trial variances, the prior fitted to the estimates (standard errors
  from `model`, grid_stderr's (accuracy, ratio, k)) and shrunk by the
  halves' check."""
  raw = prior_lib.fit_prior(estimate, model=model)
  alpha = (prior_lib.shrink_factor(raw, halves, delta) if halves is not None
           else 1.0)
  return {'unbiased': unbiased, 'delta': delta, 'level': level, 'm': m,
          'shrink': alpha, 'prior': prior_lib.shrunk(raw, alpha, delta)}


_SIMULATED = 10000


def simulation_units(prior, estimate, model, ratio, seed, size=_SIMULATED):
  """The truths a simulation runs on: for (a sample of `size` of) the
  columns, a true value drawn from each one's posterior under the prior,
  and its out-trial rate p_out such that the column's accuracy over all
  trials (smoothed, (x + 1/2) / (k + 1): measured on every trial, the best
  known of its figures) is ratio p_in + (1 - ratio) p_out with
  p_in = p_out + value, kept in [0, 1]. model: (accuracy, ratio, k) of
  the columns (grid_stderr). Returns {'value', 'p_out'}."""
  rng = np.random.default_rng([seed, 0x51])
  keep = (rng.choice(len(estimate), size, replace=False)
          if len(estimate) > size else np.arange(len(estimate)))
  accuracy, ratios, k = model
  post = prior_lib.posterior(prior, np.asarray(estimate)[keep],
                             model=(np.asarray(accuracy)[keep],
                                    np.asarray(ratios)[keep], k))
  cdf = np.cumsum(post, axis=1)
  u = rng.random(len(keep))[:, None] * cdf[:, -1:]
  value = GRID[np.minimum((cdf < u).sum(axis=1), len(GRID) - 1)]
  base = np.clip(np.asarray(accuracy)[keep] - ratio * value,
                 np.maximum(0.0, -value), np.minimum(1.0, 1.0 - value))
  return {'value': value, 'p_out': base}


def simulate(units, k, ratio, delta, level, m, method='bh', filtered=False,
             seed=0, runs=4, tests=True):
  """(controlled count, its fdr, Jaccard of two runs, the family's tested
  share) at k trials, from `runs` independent simulated runs of the units
  (simulation_units; the Jaccard averaged over every two; tests=False:
  only the share, the rest NaN): each unit's
  k_in ~ Binomial(k, ratio), its correct counts binomial at p_out + value
  in and p_out out, the estimator's test (selection.difference_pvalues) and
  its false-discovery control (BH, or BY, over the family of m, or over its
  testable share when filtered), the units standing for the family in
  proportion."""
  rng = np.random.default_rng([seed, int(k), 0x5E])
  size = len(units['value'])
  if not size or k < 2:
    return 0.0, 0.0, float('nan'), 0.0
  chosen, shares = [], []
  for _ in range(runs):
    k_in = np.clip(rng.binomial(k, ratio, size), 1, k - 1).astype(np.float64)
    k_out = k - k_in
    x_in = rng.binomial(k_in.astype(np.int64),
                        units['p_out'] + units['value']).astype(np.float64)
    x_out = rng.binomial(k_out.astype(np.int64),
                         units['p_out']).astype(np.float64)
    family = (procedures.testable(x_in + x_out, k_in, k_out, delta, level)
              if filtered else np.ones(size, bool))
    shares.append(family.mean())
    if not tests:  # only the family's tested share
      continue
    q = level
    if method == 'by':  # BY's constant is the real family's, not the units'
      count = max(int(round(m * family.mean())), 1)
      q = level / float(np.sum(1.0 / np.arange(1, count + 1)))
    test = family & (x_in / k_in - x_out / k_out > delta)
    pvalue = selection.difference_pvalues(
        x_in[test], k_in[test], x_out[test], k_out[test], delta)
    # BH over the family's units, those not tested counting as p = 1.
    selected = np.zeros(size, bool)
    selected[test] = selection.fdr_select(pvalue, int(family.sum()), q)[0]
    chosen.append(selected)
  if not tests:
    return float('nan'), float('nan'), float('nan'), float(np.mean(shares))
  chosen = np.array(chosen)
  selected = float(chosen.sum(axis=1).mean())
  false = float((chosen & (units['value'] <= delta)[None, :]).sum(axis=1)
                .mean())
  pairs = [(a, b) for a in range(runs) for b in range(a + 1, runs)]
  unions = [(chosen[a] | chosen[b]).sum() for a, b in pairs]
  jaccard = (float(np.mean([(chosen[a] & chosen[b]).sum() / u
                            for (a, b), u in zip(pairs, unions) if u]))
             if any(unions) else float('nan'))
  return (m * selected / size, false / selected if selected else 0.0,
          jaccard,
          float(np.mean(shares)))


PAIR_FACTOR = 2.0      # the pair model's check: within this factor,
MEMORIZED_FACTOR = 1.25  # and the memorized set's,
SMALL = 3              # or both predicted and measured at most this.
EFFECT = 0.5           # the influence the underpowered sentence speaks of


class Plan:
  """The planner's model of a workdir (see the module docstring)."""

  def __init__(self, loaded, memorization, settings, quantile=0.9,
               pair_sample=20000, seed=0):
    s = settings
    self.k = loaded.num_trials
    self.quantile = quantile
    self.seconds = seconds_per_trial(loaded)
    self.method = s.fdr_method
    self.seed = seed
    masks, correct = loaded.masks, loaded.train_correct
    self.mem = self._fit(masks, correct, (
        s.memorization_threshold if s.memorization_null is None
        else s.memorization_null), s.memorization_fdr, None, False)
    rows, cols, m = sample_pairs(loaded, memorization,
                                 s.memorization_threshold, s.same_label,
                                 pair_sample, seed)
    self.pairs = None
    self.has_test = loaded.test_correct.shape[1] > 0
    if m:
      values = np.asarray(loaded.test_correct)[:, cols]
      self.pairs = self._fit(
          masks[:, rows], values,
          s.influence_threshold if s.pair_null is None else s.pair_null,
          s.pair_fdr, m, getattr(s, 'pair_procedure', 'whole') == 'filtered'
          and values.dtype == bool)

  def _fit(self, masks, values, delta, level, m, filtered):
    """A part of the plan from its columns: the prior, checked by the
    halves, and the simulation's units."""
    est, unbiased, smoothed, k_in = _estimates(masks, values, keep=True)
    ok = np.isfinite(est)
    k = self.k
    halves = ([(e[ok], a[ok], r[ok], half_k)
               for e, a, r, half_k in _halves(masks, values)]
              if k >= 4 else None)
    _, _, x_all = bits.column_counts(masks, values)
    k_out = k - k_in
    model = ((x_all[ok] + 0.5) / (k + 1.0), k_in[ok] / k, k)
    part = _part(est[ok], unbiased[ok], model, delta, level,
                 int(ok.sum()) if m is None else m, halves)
    part['ratio'] = float(np.mean(k_in[ok] / k)) if ok.any() else 0.5
    part['filtered'] = filtered
    part['units'] = simulation_units(part['prior'], est[ok], model,
                                     part['ratio'], self.seed)
    # The per-trial sds of the columns tested at this k (the power of a
    # first discovery).
    tested = (procedures.testable(x_all[ok], k_in[ok], k_out[ok], delta,
                                  level) if filtered
              else np.ones(int(ok.sum()), bool))
    part['tested_sd'] = np.sqrt(smoothed[ok][tested])
    return part

  def at(self, k):
    """The predictions at k trials (a dict)."""
    row = {'trials': int(k),
           'training_hours': self.seconds * k / 3600.0,
           'more_training_hours': advice.hours(self.seconds, k, self.k)}
    for name, part in (('memorization', self.mem), ('pairs', self.pairs)):
      if part is None:
        continue
      rms, q = _quantile_sd(part['unbiased'], k, self.quantile)
      count, fdr, jaccard, share = simulate(
          part['units'], k, part['ratio'], part['delta'], part['level'],
          part['m'], self.method, part['filtered'], self.seed)
      row[name] = {'stderr_rms': rms, 'stderr_quantile': q,
                   'controlled': count, 'controlled_fdr': fdr,
                   'controlled_jaccard': jaccard}
      if name == 'pairs':
        row[name]['tested_family'] = share * part['m']
        row[name]['detectable_influence'] = detectable(
            part['tested_sd'], k, part['delta'], part['level'],
            share * part['m'])
    return row

  def trials_for_stderr(self, target, part='memorization'):
    """Trials for the `quantile` of the standard errors to reach target
    (None when no estimate has a variance yet: too few trials per side)."""
    unbiased = (self.mem if part == 'memorization' else self.pairs)[
        'unbiased']
    if not np.isfinite(unbiased).any():
      return None
    values = _uncertain(unbiased)
    if not len(values):
      return 2
    need = float(np.quantile(values, self.quantile)) / (target * target)
    return max(int(math.ceil(need)), 2)

  def trials_for_jaccard(self, target, part='pairs', limit=1_000_000):
    """Fewest trials (on a grid of ~19% steps) whose predicted split-run
    Jaccard of the controlled set reaches target; None past `limit`;
    'empty' when the set is predicted empty even at `limit`."""
    k = max(self.k, 2)
    if self.at(limit).get(part, {}).get('controlled', 0) < 1:
      return 'empty'
    while k <= limit:
      row = self.at(k).get(part)
      if row is None:
        return None
      if np.isfinite(row['controlled_jaccard']) and (
          row['controlled_jaccard'] >= target):
        return int(k)
      k = int(math.ceil(k * 2 ** 0.25))
    return None

  def trials_to_detect(self, effect=EFFECT, limit=1_000_000):
    """Fewest trials (~19% steps) at which a pair of influence `effect`
    would be selected with probability >= 1/2 as a first discovery."""
    part = self.pairs
    k = max(self.k, 2)
    while k <= limit:
      # The family tested at k from one simulated run (no tests needed).
      share = simulate(part['units'], k, part['ratio'], part['delta'],
                       part['level'], part['m'], self.method,
                       part['filtered'], self.seed, runs=1, tests=False)[3]
      value = detectable(part['tested_sd'], k, part['delta'],
                         part['level'], share * part['m'])
      if np.isfinite(value) and value <= effect + 1e-9:
        return int(k)
      k = int(math.ceil(k * 2 ** 0.25))
    return None

  def check(self, measured, split=None):
    """The predictions at this k (and at each half's) against what the
    estimator measured there: {part: {predicted, measured, ratio, ok}}.

    measured: summary.json's 'trust' ({'pairs': {'controlled'}, 'memorized':
    {'controlled'}}); split: its 'split_half' (controlled pairs per half).
    A part passes within PAIR_FACTOR (pairs) or MEMORIZED_FACTOR, or with
    both figures <= SMALL."""
    row = self.at(self.k)
    out = {}
    figures = [('memorization', 'memorized', MEMORIZED_FACTOR)]
    if self.pairs is not None:
      figures.append(('pairs', 'pairs', PAIR_FACTOR))
    for part, key, factor in figures:
      got = float(measured[key]['controlled'])
      want = float(row[part]['controlled'])
      entry = {'predicted': want, 'measured': got,
               'ratio': want / got if got else None,
               'ok': _agrees(want, got, factor),
               'shrink': (self.mem if part == 'memorization'
                          else self.pairs)['shrink']}
      if part == 'pairs' and split and split.get('controlled_pairs_per_half'):
        halves = split['controlled_pairs_per_half']
        half_k = split['trials_per_half'][0]
        predicted_half = float(self.at(half_k)['pairs']['controlled'])
        entry['half'] = {'trials': half_k, 'predicted': predicted_half,
                         'measured': [int(v) for v in halves],
                         'ok': _agrees(predicted_half,
                                       float(np.mean(halves)), factor)}
        entry['ok'] = entry['ok'] and entry['half']['ok']
      out[part] = entry
    return out

  def summary(self, target_stderr=0.05, target_jaccard=0.7,
              multiples=(1, 2, 4, 8, 16, 32), measured=None, split=None):
    """summary.json's 'planner' object, with its one-sentence advice; with
    the estimator's measured figures, its check against them, and no pair
    prediction where the pair model fails it."""
    rows = [self.at(self.k * f) for f in multiples]
    checked = self.check(measured, split) if measured is not None else None
    withheld = bool(checked and 'pairs' in checked
                    and not checked['pairs']['ok'])
    if withheld:
      for row in rows:
        row['pairs'] = {key: row['pairs'][key]
                        for key in ('stderr_rms', 'stderr_quantile')}
        row['pairs']['withheld'] = True
    for_stderr = self.trials_for_stderr(target_stderr)
    if not self.has_test:
      for_jaccard, detect = 'no_test', None
    elif self.pairs is None:
      for_jaccard, detect = 'no_family', None
    elif withheld:
      for_jaccard, detect = 'withheld', None
    else:
      for_jaccard = self.trials_for_jaccard(target_jaccard)
      detect = self.trials_to_detect()
    out = {'trials': self.k, 'seconds_per_trial': self.seconds,
           'quantile': self.quantile, 'rows': rows,
           'target_stderr': target_stderr,
           'trials_for_target_stderr': for_stderr,
           'target_pair_jaccard': target_jaccard,
           'trials_for_target_pair_jaccard': for_jaccard,
           'check': checked,
           'detect_effect': EFFECT,
           'trials_to_detect_effect': detect}
    if self.pairs is not None and not withheld:
      here = self.at(self.k)['pairs']
      out['detectable_influence'] = here['detectable_influence']
      out['controlled_pairs_here'] = here['controlled']
    out['pair_sentence'] = advice.pair_sentence(out, measured)
    out['advice'] = advice.advice(out)
    return out


def _agrees(predicted, measured, factor):
  if predicted <= SMALL and measured <= SMALL:
    return True
  if predicted <= 0 or measured <= 0:
    return False
  return 1.0 / factor <= predicted / measured <= factor

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
  seen wrong still has some). At k trials a test of H0: mu <= delta
  rejects, in the normal approximation, with probability
  pi(mu) = Phi((mu - delta) / s_k - z_t) at p-value cutoff t; the BH cutoff
  is the largest t with t <= q E[pi] (the expected selected fraction
  times q). Predicted: the size of the controlled set m E[pi], its false
  discovery rate, and the Jaccard index of two independent runs of k trials,
  E[pi^2] / (2 E[pi] - E[pi^2]).
- **Cost.** Hours of training at the workdir's measured seconds per trial
  (set-up, training and prediction, as the records hold them), for one
  worker.

`trials_for` answers how many trials a target needs: a standard error
(`--target_stderr`, at the quantile) or a pair-set Jaccard.
"""

import math

import numpy as np

from tf_memorization.stats import bits


GRID = np.linspace(-1.0, 1.0, 101)
_BINS = 40
_FIT_SIZE = 10000


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


def _estimates(masks, values):
  """(estimate, unbiased per-trial variance, smoothed one) of the columns
  with trials on both sides: the per-trial variance is
  w = v_in / r + v_out / (1 - r), r = k_in / k, so the variance at k is
  w / k."""
  k = masks.shape[0]
  k_in, k_out, diff, u_in, u_out, s_in, s_out = _side_variances(masks, values)
  ok = (k_in > 0) & (k_out > 0)
  r = np.where(ok, k_in / k, np.nan)
  with np.errstate(invalid='ignore', divide='ignore'):
    unbiased = u_in / r + u_out / (1 - r)
    smoothed = s_in / r + s_out / (1 - r)
  return diff[ok], unbiased[ok], smoothed[ok]


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


def fit_prior(estimate, stderr, iterations=100):
  """The prior g on GRID maximizing prod_i sum_g g N(x_i; mu_g, s_i^2)
  (EM from uniform; the pilot's estimates binned by s for speed)."""
  estimate, stderr = np.asarray(estimate), np.maximum(np.asarray(stderr),
                                                      1e-3)
  if len(estimate) > _FIT_SIZE:  # a fixed sample: the fit is of a density
    keep = np.random.default_rng(0x91).choice(len(estimate), _FIT_SIZE,
                                              replace=False)
    estimate, stderr = estimate[keep], stderr[keep]
  z = (estimate[:, None] - GRID[None, :]) / stderr[:, None]
  like = np.exp(-0.5 * z * z) / stderr[:, None]
  g = np.full(len(GRID), 1.0 / len(GRID))
  for _ in range(iterations):
    post = like * g
    post /= np.maximum(post.sum(axis=1, keepdims=True), 1e-300)
    g = post.mean(axis=0)
  return g


def _bins(per_trial_sd):
  """(bin centres, weights): the per-trial standard deviations in
  quantile bins."""
  qs = np.quantile(per_trial_sd, np.linspace(0, 1, _BINS + 1))
  centres = 0.5 * (qs[1:] + qs[:-1])
  which = np.clip(np.searchsorted(qs, per_trial_sd, side='right') - 1, 0,
                  _BINS - 1)
  weights = np.bincount(which, minlength=_BINS).astype(np.float64)
  return centres, weights / weights.sum()


def predict_selection(g, per_trial_sd, k, delta, level, method='bh', m=1):
  """Predicted (selected fraction, fdr, jaccard of two runs) at k trials."""
  from scipy import special  # pylint: disable=g-import-not-at-top
  centres, weights = _bins(per_trial_sd)
  s_k = np.maximum(centres, 1e-6) / math.sqrt(k)          # [bins]
  mean_shift = (GRID[None, :] - delta) / s_k[:, None]     # [bins, grid]
  if method == 'by':
    level = level / float(np.sum(1.0 / np.arange(1, int(m) + 1)))
  mass = weights[:, None] * g[None, :]
  cutoffs = 10.0 ** np.linspace(-16, math.log10(level), 161)
  z = -special.ndtri(cutoffs)
  every = special.ndtr(mean_shift[None] - z[:, None, None])  # [t, bins, grid]
  fractions = np.einsum('tbg,bg->t', every, mass)
  passing = np.flatnonzero(fractions >= cutoffs / level)
  if not len(passing):
    return 0.0, 0.0, float('nan')
  pi = every[passing[-1]]
  e_pi, e_pi2 = float(np.sum(mass * pi)), float(np.sum(mass * pi * pi))
  false = float(np.sum(mass * pi * (GRID <= delta)[None, :]))
  jaccard = e_pi2 / (2 * e_pi - e_pi2) if e_pi > 0 else float('nan')
  return e_pi, (false / e_pi if e_pi > 0 else 0.0), jaccard


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


class Plan:
  """The planner's model of a workdir (see the module docstring)."""

  def __init__(self, loaded, memorization, settings, quantile=0.9,
               pair_sample=20000, seed=0):
    s = settings
    self.k = loaded.num_trials
    self.quantile = quantile
    self.seconds = seconds_per_trial(loaded)
    est, unbiased, smoothed = _estimates(loaded.masks, loaded.train_correct)
    self.mem = {'estimate': est, 'unbiased': unbiased, 'smoothed': smoothed,
                'delta': (s.memorization_threshold
                          if s.memorization_null is None
                          else s.memorization_null),
                'level': s.memorization_fdr, 'm': len(est)}
    self.mem['prior'] = fit_prior(est, np.sqrt(smoothed / self.k))
    rows, cols, m = sample_pairs(loaded, memorization,
                                 s.memorization_threshold, s.same_label,
                                 pair_sample, seed)
    self.pairs = None
    if m:
      masks = loaded.masks[:, rows]
      values = np.asarray(loaded.test_correct)[:, cols]
      est, unbiased, smoothed = _estimates(masks, values)
      self.pairs = {'estimate': est, 'unbiased': unbiased,
                    'smoothed': smoothed,
                    'delta': (s.influence_threshold if s.pair_null is None
                              else s.pair_null),
                    'level': s.pair_fdr, 'm': m,
                    'prior': fit_prior(est, np.sqrt(smoothed / self.k))}
    self.method = s.fdr_method

  def at(self, k):
    """The predictions at k trials (a dict)."""
    row = {'trials': int(k),
           'training_hours': self.seconds * k / 3600.0,
           'more_training_hours': _hours(self.seconds, k, self.k)}
    for name, part in (('memorization', self.mem), ('pairs', self.pairs)):
      if part is None:
        continue
      rms, q = _quantile_sd(part['unbiased'], k, self.quantile)
      fraction, fdr, jaccard = predict_selection(
          part['prior'], np.sqrt(part['smoothed']), k, part['delta'],
          part['level'], self.method, part['m'])
      row[name] = {'stderr_rms': rms, 'stderr_quantile': q,
                   'controlled': fraction * part['m'],
                   'controlled_fdr': fdr, 'controlled_jaccard': jaccard}
    return row

  def trials_for_stderr(self, target, part='memorization'):
    """Trials for the `quantile` of the standard errors to reach target."""
    values = _uncertain((self.mem if part == 'memorization'
                         else self.pairs)['unbiased'])
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

  def summary(self, target_stderr=0.05, target_jaccard=0.7,
              multiples=(1, 2, 4, 8, 16, 32)):
    """summary.json's 'planner' object, with its one-sentence advice."""
    rows = [self.at(self.k * f) for f in multiples]
    for_stderr = self.trials_for_stderr(target_stderr)
    for_jaccard = (self.trials_for_jaccard(target_jaccard)
                   if self.pairs is not None else 'no_family')
    out = {'trials': self.k, 'seconds_per_trial': self.seconds,
           'quantile': self.quantile, 'rows': rows,
           'target_stderr': target_stderr,
           'trials_for_target_stderr': for_stderr,
           'target_pair_jaccard': target_jaccard,
           'trials_for_target_pair_jaccard': for_jaccard}
    out['advice'] = advice(out)
    return out


def _hours(seconds, trials, done):
  return seconds * max(trials - done, 0) / 3600.0


def advice(plan):
  """The planner's summary in one sentence."""
  k, sec = plan['trials'], plan['seconds_per_trial']
  parts = []
  need = plan['trials_for_target_stderr']
  if need is not None:
    if need <= k:
      parts.append(f'the {k} trials already give memorization standard '
                   f'errors <= {plan["target_stderr"]:g} for '
                   f'{plan["quantile"]:.0%} of the examples the trials '
                   'disagree on')
    else:
      parts.append(f'{need:,} trials (~{_hours(sec, need, k):,.1f} more '
                   f'hours at {sec:.1f} s per trial) bring memorization '
                   f'standard errors to <= {plan["target_stderr"]:g} for '
                   f'{plan["quantile"]:.0%} of the examples the trials '
                   'disagree on')
  need = plan['trials_for_target_pair_jaccard']
  target = plan['target_pair_jaccard']
  if need == 'no_family':
    parts.append('no pair can be tested (no training example reaches the '
                 'memorization threshold of the pair family)')
  elif need == 'empty':
    parts.append('the trials show no pair whose influence exceeds the null '
                 'beyond chance, so the controlled pair set is predicted to '
                 'stay empty at any k')
  elif need is None:
    parts.append(f'no k up to 1,000,000 is predicted to give a controlled '
                 f'pair set whose split-run Jaccard reaches {target:g}')
  elif need <= k:
    parts.append(f'the controlled pair set is predicted stable (Jaccard >= '
                 f'{target:g} between independent runs) at this k')
  else:
    parts.append(f'{need:,} trials (~{_hours(sec, need, k):,.1f} more hours) '
                 f'are predicted to make the controlled pair set stable '
                 f'(Jaccard {target:g} between independent runs)')
  return 'Planner: ' + '; '.join(parts) + '.'

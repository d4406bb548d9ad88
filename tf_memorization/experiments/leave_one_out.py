"""Direct leave-one-out: memorization measured by leaving single examples
out of full-data training, against the subsampled estimate. Writes
leave_one_out.csv / .json / .png.

The examples are drawn at random from strata of the subsampled estimate, most
from the middle band 0.1 <= mem <= 0.9 where the two methods can disagree (an
example at 0 or 1 is matched by any method that gets the extremes right);
one set of full-data models serves every example, and each example gets as
many models without it as its predicted standard error needs. The pure
functions below (stratification, the models needed, the agreement
statistics) need no training.

The two measure different quantities. Leave-one-out compares models trained
on all n examples with models trained on n - 1; the subsampled estimate
compares models trained on random subsets of m = ratio * n (0.7 n in the
demo) with and without the example. Memorization depends on the size of the
training set: in a bigger set an example is more likely to be learned from
the other examples (its neighbours, its class), so leave-one-out memorization
is expected to be lower than the subsampled one. The summary's mean signed
difference (leave-one-out - subsampled) shows by how much; agreement is read
from the rank correlation and from how often the two differ by more than their
combined standard errors.
"""

import os

import gin
import numpy as np

from tf_memorization.core import errors
from tf_memorization.experiments import base
from tf_memorization.reporting import estimate_figures
from tf_memorization.stats import ranks
from tf_memorization.stats import scores
from tf_memorization.training import runs
from tf_memorization.workdir import estimates

# Interior bin edges of the strata: [0.1, 0.3), [0.3, 0.5), [0.5, 0.7),
# [0.7, 0.9] and the two tails < 0.1 and > 0.9.
DEFAULT_STRATA = (0.1, 0.3, 0.5, 0.7, 0.9)
DEFAULT_BAND = (0.1, 0.9)
UNDEFINED = -1  # the stratum of an example without a subsampled estimate
# Estimates are binned after rounding to this many decimals, so that a
# difference of means that is 0.1 up to floating-point rounding counts as 0.1.
_DECIMALS = 9


def _rounded(values):
  return np.round(np.asarray(values, np.float64), _DECIMALS)


def strata_of(memorization, strata):
  """The stratum of each estimate, for interior edges e_0 < ... < e_K.

  Stratum 0: mem < e_0; stratum j (1 <= j <= K): e_{j-1} <= mem < e_j, the
  last one closed (e_{K-1} <= mem <= e_K); stratum K + 1: mem > e_K;
  UNDEFINED (-1) where the estimate is NaN.

  Args:
    memorization: float [m] subsampled estimates.
    strata: the edges, strictly increasing, at least two.

  Returns:
    int64 [m].
  """
  mem, edges = _rounded(memorization), np.asarray(strata, np.float64)
  out = np.full(mem.shape, UNDEFINED, np.int64)
  defined = np.isfinite(mem)
  # side='right': an estimate equal to an edge opens the bin above it.
  out[defined] = np.searchsorted(edges, mem[defined], side='right')
  out[defined & (mem == edges[-1])] = len(edges) - 1  # the last bin is closed
  return out


def stratum_labels(strata):
  """A label per stratum, e.g. '<0.1', '0.1-0.3', ..., '0.7-0.9', '>0.9'."""
  edges = [f'{e:g}' for e in strata]
  return ([f'<{edges[0]}'] + [f'{a}-{b}' for a, b in zip(edges, edges[1:])]
          + [f'>{edges[-1]}'])


def stratum_sizes(strata, per_stratum, per_tail=None):
  """How many examples to draw from each stratum: `per_stratum` from each
  bin between the edges, `per_tail` (None: per_stratum // 2) from each of
  the two tails."""
  tail = per_stratum // 2 if per_tail is None else per_tail
  return [tail] + [per_stratum] * (len(strata) - 1) + [tail]


def choose_stratified(memorization, strata, per_stratum, seed, per_tail=None):
  """Training examples drawn at random within strata of the estimate.

  From each stratum (strata_of) stratum_sizes(...) examples, drawn without
  replacement with a generator seeded by (seed, stratum): the same estimates
  and seed give the same examples. A stratum holding fewer gives all it has;
  undefined estimates are never drawn.

  Args:
    memorization: float [n] subsampled estimates.
    strata: interior bin edges.
    per_stratum: examples per bin between the edges.
    seed: the design's seed.
    per_tail: examples from each tail (None: per_stratum // 2; 0: none, every
      example from between the edges).

  Returns:
    (int64 [m] training indices, sorted; list of per-stratum dicts: stratum
    label, low, high (None: unbounded), available, chosen).
  """
  stratum = strata_of(memorization, strata)
  chosen, table = [], []
  bounds = [None] + list(strata) + [None]
  for j, (label, size) in enumerate(zip(stratum_labels(strata),
                                        stratum_sizes(strata, per_stratum,
                                                      per_tail))):
    members = np.flatnonzero(stratum == j)
    rng = np.random.default_rng([seed, 0x100, j])
    take = min(size, len(members))
    chosen.append(rng.choice(members, size=take, replace=False))
    table.append({'stratum': label, 'low': bounds[j], 'high': bounds[j + 1],
                  'available': len(members), 'chosen': take})
  return np.sort(np.concatenate(chosen)).astype(np.int64), table


def predicted_stderr(p_full, p_out, full_repeats, repeats):
  """sqrt(p_f (1 - p_f) / R_full + p_o (1 - p_o) / r): the standard error of
  a leave-one-out estimate from R_full full-data models of accuracy p_f and r
  models without the example of accuracy p_o (plain Bernoulli variance).
  An undefined (NaN) prediction counts as 0.5, the largest variance."""
  p_full, p_out = _prediction(p_full), _prediction(p_out)
  return np.sqrt(p_full * (1 - p_full) / full_repeats
                 + p_out * (1 - p_out) / np.asarray(repeats, np.float64))


def _prediction(p):
  p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
  return np.where(np.isfinite(p), p, 0.5)


def repeats_for_target(p_full, p_out, full_repeats, target, minimum, maximum):
  """The models without each example that bring predicted_stderr to target.

  r = ceil(v_o / (target^2 - v_f / R_full)) with v = p (1 - p), clipped to
  [minimum, maximum]. Where the full-data models alone exceed the target
  (target^2 <= v_f / R_full) no r reaches it: `maximum` (the closest),
  unless v_o = 0 (more models would not change the error): `minimum`.

  Args:
    p_full: float [m] predicted accuracy on each example of models trained
      with it (the subsampled in-trial accuracy, memorization + consistency).
    p_out: float [m] predicted accuracy without it (the out-trial accuracy,
      the consistency score).
    full_repeats: R_full.
    target: the wanted standard error.
    minimum, maximum: the bounds on r.

  Returns:
    int64 [m].
  """
  p_full, p_out = _prediction(p_full), _prediction(p_out)
  v_full, v_out = p_full * (1 - p_full), p_out * (1 - p_out)
  budget = target ** 2 - v_full / full_repeats
  with np.errstate(divide='ignore', invalid='ignore'):
    needed = np.where(budget > 0, v_out / np.where(budget > 0, budget, 1.0),
                      np.inf)
  # A tolerance so that an exact quotient (25.000000000004) is not rounded up.
  needed = np.ceil(np.minimum(needed, maximum) - 1e-9)
  needed = np.where(v_out == 0, minimum, needed)
  return np.clip(needed, minimum, maximum).astype(np.int64)


def in_band(memorization, band):
  """band[0] <= mem <= band[1] (rounded as in strata_of); False where NaN."""
  mem = _rounded(memorization)
  with np.errstate(invalid='ignore'):
    return (mem >= band[0]) & (mem <= band[1])


def differs(loo, loo_stderr, subsampled, subsampled_stderr):
  """|loo - sub| > sqrt(se_loo^2 + se_sub^2): 1.0 where the two estimates
  differ by more than their combined standard error, 0.0 where not, NaN
  where any of the four is undefined."""
  loo, sub = np.asarray(loo, np.float64), np.asarray(subsampled, np.float64)
  combined = np.sqrt(np.square(np.asarray(loo_stderr, np.float64))
                     + np.square(np.asarray(subsampled_stderr, np.float64)))
  with np.errstate(invalid='ignore'):
    out = (np.abs(loo - sub) > combined).astype(np.float64)
  out[~(np.isfinite(loo) & np.isfinite(sub) & np.isfinite(combined))] = np.nan
  return out


def _mean(values):
  return float(np.mean(values)) if len(values) else float('nan')


def agreement(loo, loo_stderr, subsampled, subsampled_stderr, select=None):
  """How well the two estimates agree, over the entries `select` (all if
  None) where both are defined.

  Returns:
    dict: num_examples; pearson, spearman (scores.rank_correlations; NaN
    below 3 examples or for a constant column); mean_abs_difference
    mean |loo - sub|; mean_signed_difference mean (loo - sub);
    fraction_differs, the mean of `differs` (over the entries where the
    standard errors are defined too); median_loo_stderr. NaN where no entry.
  """
  loo, sub = np.asarray(loo, np.float64), np.asarray(subsampled, np.float64)
  loo_se = np.asarray(loo_stderr, np.float64)
  sub_se = np.asarray(subsampled_stderr, np.float64)
  keep = np.isfinite(loo) & np.isfinite(sub)
  if select is not None:
    keep &= np.asarray(select, bool)
  loo, sub, loo_se, sub_se = loo[keep], sub[keep], loo_se[keep], sub_se[keep]
  pearson, spearman = ranks.correlations(loo, sub)
  flags = differs(loo, loo_se, sub, sub_se)
  stderrs = loo_se[np.isfinite(loo_se)]
  return {'num_examples': int(keep.sum()), 'pearson': pearson,
          'spearman': spearman,
          'mean_abs_difference': _mean(np.abs(loo - sub)),
          'mean_signed_difference': _mean(loo - sub),
          'fraction_differs': _mean(flags[np.isfinite(flags)]),
          'median_loo_stderr': (float(np.median(stderrs)) if len(stderrs)
                                else float('nan'))}


def _band(name, value):
  band = errors.sequence(name, value, errors.number)
  if len(band) != 2 or not -1 <= band[0] < band[1] <= 1:
    raise errors.ConfigError(f'{name} must be two numbers low < high within '
                             f'[-1, 1], got {value!r}.')
  return band


def _strata(name, value):
  edges = errors.sequence(name, value, lambda n, v: errors.number(
      n, v, minimum=-1, maximum=1))
  if len(edges) < 2 or any(a >= b for a, b in zip(edges, edges[1:])):
    raise errors.ConfigError(f'{name} must be at least two strictly '
                             f'increasing numbers, got {value!r}.')
  return edges


@base.register('leave_one_out')
@gin.configurable
class LeaveOneOutExperiment(base.Experiment):
  """Memorization estimated directly, by leaving single examples out.

  R_full models on the full training set are shared by every chosen example
  i; r_i models train on the full set minus i. With C the 0/1 correctness on
  i, mem_loo(i) = p_in - p_out, p_in = mean C over the full-data models,
  p_out = mean C over the models without i, and
  stderr = sqrt(p_in (1 - p_in) / R_full + p_out (1 - p_out) / r_i): the
  plain (maximum-likelihood) Bernoulli variance p (1 - p), as the subsampled
  estimate's stderr uses (scores.difference_of_means), so the two are
  comparable; it is 0 where every model agrees, which understates the error
  of few models.

  The two estimates measure different quantities: leave-one-out trains on
  n vs n - 1 examples, the subsampled estimate on m = ratio * n (e.g. 0.7 n)
  with and without i. An example is more likely learned from the other
  examples of a bigger set, so mem_loo is expected to be lower; the summary's
  mean_signed_difference (loo - subsampled) shows by how much.

  Cost: R_full + sum_i r_i models, each on the whole training set (logged
  before training). With the defaults (50 examples, target 0.1) an example
  of the middle band needs up to max_repeats = 32 models: about 1,600 models.

  Args:
    examples: training indices, or 'auto': drawn at random (seeded by the
      design's seed) within strata of the subsampled estimate: per_stratum
      from each bin between the `strata` edges, per_stratum // 2 from each
      tail below the first and above the last edge (per_tail when set; a
      stratum with fewer gives all it has). With the defaults: 4 x 10 in the
      middle band, 2 x 5 outside it.
    per_stratum: examples drawn per bin between the edges.
    per_tail: examples drawn from each tail; None: per_stratum // 2; 0: all
      from between the edges (with the default strata, all in the middle
      band).
    per_group: the earlier name of per_stratum; when set it replaces it.
    strata: the interior bin edges, strictly increasing (default 0.1, 0.3,
      0.5, 0.7, 0.9: bins [0.1, 0.3) ... [0.7, 0.9], tails < 0.1 and > 0.9).
    repeats: r, the models without each example (the least when
      target_stderr is set).
    full_repeats: R_full; None: max_repeats when target_stderr is set, else
      repeats.
    target_stderr: r_i is the least r in [repeats, max_repeats] whose
      predicted stderr sqrt(p_f (1 - p_f) / R_full + p_o (1 - p_o) / r) is
      at most this, with p_f = the subsampled in-trial accuracy
      (memorization + consistency) and p_o = the out-trial accuracy
      (consistency) of the example (repeats_for_target); None: r_i = repeats.
    max_repeats: the most models without one example.
    middle_band: (low, high): the summary's 'middle_band' statistics are over
      the examples with low <= subsampled estimate <= high.
  """

  def __init__(self, examples='auto', per_stratum=10, per_group=None,
               strata=DEFAULT_STRATA, repeats=3, full_repeats=None,
               target_stderr=0.1, max_repeats=32, middle_band=DEFAULT_BAND,
               per_tail=None):
    name = 'LeaveOneOutExperiment.'
    if examples != 'auto':
      examples = errors.sequence(name + 'examples', examples,
                                 lambda n, v: errors.integer(n, v, minimum=0),
                                 allow_empty=False)
    self.examples = examples
    self.per_stratum = errors.integer(name + 'per_stratum', per_stratum,
                                      minimum=1)
    if per_group is not None:
      self.per_stratum = errors.integer(name + 'per_group', per_group,
                                        minimum=1)
    self.per_tail = errors.integer(name + 'per_tail', per_tail, minimum=0,
                                   allow_none=True)
    self.strata = _strata(name + 'strata', strata)
    self.repeats = errors.integer(name + 'repeats', repeats, minimum=1)
    self.max_repeats = errors.integer(name + 'max_repeats', max_repeats,
                                      minimum=self.repeats)
    self.target_stderr = errors.number(name + 'target_stderr', target_stderr,
                                       above=0, allow_none=True)
    self.full_repeats = errors.integer(name + 'full_repeats', full_repeats,
                                       minimum=1, allow_none=True)
    if self.full_repeats is None:
      self.full_repeats = (self.repeats if self.target_stderr is None
                           else self.max_repeats)
    self.middle_band = _band(name + 'middle_band', middle_band)

  def chosen(self, memorization, seed):
    """(sorted training indices, the strata table) of the examples."""
    if self.examples == 'auto':
      return choose_stratified(memorization, self.strata, self.per_stratum,
                               seed, self.per_tail)
    for number, i in enumerate(self.examples):
      if i >= len(memorization):
        raise errors.ConfigError(
            f'LeaveOneOutExperiment.examples[{number}] = {i} is not a '
            f'training index (the training set has {len(memorization)}).')
    return np.unique(np.asarray(self.examples, np.int64)), []

  def repeats_of(self, mem, chosen):
    """r_i of each chosen example, from the scores.Memorization `mem`."""
    if self.target_stderr is None:
      return np.full(len(chosen), self.repeats, np.int64)
    p_out = mem.consistency[chosen]
    return repeats_for_target(mem.memorization[chosen] + p_out, p_out,
                              self.full_repeats, self.target_stderr,
                              self.repeats, self.max_repeats)

  def jobs(self, setup, chosen, repeats_of):
    """The full-data models first, then r_i models without each example i
    (in index order); each job's seed from its position."""
    n = len(setup.dataset.train)
    plan = [(None, self.full_repeats)] + [
        (int(i), int(r)) for i, r in zip(chosen, repeats_of)]
    jobs = []
    for target, count in plan:
      for repeat in range(count):
        mask = np.ones(n, bool)
        if target is not None:
          mask[target] = False
        index = len(jobs)
        seed = base.seed_of(setup.design.seed, 'loo', index)
        jobs.append(runs.Job(index, mask, seed,
                             {'left_out': -1 if target is None else target,
                              'repeat': repeat}))
    return jobs

  def _log_cost(self, log, chosen, strata, repeats_of, predicted):
    counts = ', '.join(f"{s['chosen']} of {s['available']} in {s['stratum']}"
                       for s in strata)
    target = ('' if self.target_stderr is None else
              f'; predicted stderr <= {self.target_stderr:g} for '
              f'{int((predicted <= self.target_stderr + 1e-12).sum())} of '
              f'{len(chosen)}')
    r_range = (f'{repeats_of.min()}-{repeats_of.max()}' if len(chosen)
               else '0')
    log(f'Leave-one-out: {len(chosen)} examples'
        + (f' ({counts})' if counts else '')
        + f'; {self.full_repeats} models on the full training set and '
        f'{int(repeats_of.sum())} without one example (r = {r_range} each'
        f'{target}): {self.full_repeats + int(repeats_of.sum())} models.')

  def run(self, inputs):
    output_dir, setup, log = inputs.output_dir, inputs.setup, inputs.log
    mem = inputs.memorization
    chosen, strata = self.chosen(mem.memorization, setup.design.seed)
    repeats_of = self.repeats_of(mem, chosen)
    p_out = mem.consistency[chosen]
    predicted = predicted_stderr(mem.memorization[chosen] + p_out, p_out,
                                 self.full_repeats, repeats_of)
    self._log_cost(log, chosen, strata, repeats_of, predicted)
    jobs = self.jobs(setup, chosen, repeats_of)
    loaded = base.run_jobs(inputs.workdir, 'leave_one_out', setup, jobs, log)
    rows_of = {}
    for row, meta in enumerate(loaded.metadata):
      rows_of.setdefault(meta['left_out'], []).append(row)
    with_i = loaded.train_correct[rows_of[-1]][:, chosen].astype(np.float64)
    p_in = with_i.mean(axis=0)
    p_without = np.array([loaded.train_correct[rows_of[int(i)], i].mean()
                          for i in chosen], np.float64)
    loo = p_in - p_without
    loo_se = np.asarray(scores.difference_stderr(
        p_in * (1 - p_in), self.full_repeats,
        p_without * (1 - p_without), repeats_of), np.float64).reshape(-1)
    sub, sub_se = mem.memorization[chosen], mem.stderr[chosen]
    band = in_band(sub, self.middle_band)
    flags = differs(loo, loo_se, sub, sub_se)
    labels = stratum_labels(self.strata)
    stratum = strata_of(sub, self.strata)
    header = ['index', 'memorization_loo', 'memorization_loo_stderr',
              'memorization_subsampled', 'memorization_subsampled_stderr',
              'stratum', 'repeats', 'predicted_loo_stderr', 'in_middle_band',
              'differs']
    rows = [[int(i), float(loo[k]), float(loo_se[k]), float(sub[k]),
             float(sub_se[k]),
             labels[stratum[k]] if stratum[k] != UNDEFINED else 'undefined',
             int(repeats_of[k]), float(predicted[k]), bool(band[k]),
             bool(flags[k]) if np.isfinite(flags[k]) else float('nan')]
            for k, i in enumerate(chosen)]
    summary = {
        'examples': [int(i) for i in chosen], 'repeats': self.repeats,
        'full_repeats': self.full_repeats, 'max_repeats': self.max_repeats,
        'target_stderr': self.target_stderr,
        'repeats_per_example': [int(r) for r in repeats_of],
        'models_trained': self.full_repeats + int(repeats_of.sum()),
        'per_stratum': self.per_stratum, 'per_tail': self.per_tail,
        'strata': strata,
        'variance': 'p(1-p)',
        **agreement(loo, loo_se, sub, sub_se),
        'middle_band': {'band': list(self.middle_band),
                        **agreement(loo, loo_se, sub, sub_se, band)}}
    estimates.write_table(output_dir, self.kind, header, rows, summary)
    self._plot(output_dir, rows)
    middle = summary['middle_band']
    log(f'Leave-one-out vs subsampled memorization on {len(chosen)} examples: '
        f"Spearman {summary['spearman']:.3f}, Pearson "
        f"{summary['pearson']:.3f}, mean difference (loo - subsampled) "
        f"{summary['mean_signed_difference']:+.3f}; in the middle band "
        f"{middle['num_examples']} examples, Spearman "
        f"{middle['spearman']:.3f}, differing beyond their standard errors: "
        f"{middle['fraction_differs']:.2f}.")
    return summary

  def _plot(self, output_dir, rows):
    estimate_figures.leave_one_out(
        os.path.join(output_dir, estimates.LEAVE_ONE_OUT_PNG), rows,
        self.middle_band)

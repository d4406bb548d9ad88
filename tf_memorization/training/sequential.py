"""Sequential training: rounds of trials until the planner's target is met.

The train binary's `--target_stderr=X --max_trials=N [--round_trials=R]`
trains the configured `SubsetDesign.num_trials` first, then, round by round,
loads the records, asks the planner (planner.py) how many trials bring the
0.9-quantile of the memorization standard errors (over the examples the
trials disagree on) to X, and trains up to max(R more, that many), at most N.
It stops once the trials on disk reach what the planner asks for, or N.

A round is the ordinary train run with `SubsetDesign.num_trials = K`
appended to the bindings: it trains the trials of [0, K) not on disk yet.
Only the independent design grows in place (its masks and seeds do not depend
on num_trials, which is left out of the fingerprint: SubsetDesign
.fingerprint_fields), so the records of every round share one fingerprint;
each round rewrites W/operative_config.gin with its K. Running the command
again resumes: finished trials are skipped, and a finished run stops after
its first (empty) round.

`planner_lines` is the inspect binary's view of the same planner.
"""

import dataclasses

import numpy as np

from tf_memorization.core import errors
from tf_memorization.stats import planner
from tf_memorization.stats import scores
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

# Fewer trials leave most examples with one trial on a side, whose variance
# cannot be estimated: no prediction.
MIN_TRIALS = 4
# The per-trial arrays of loading.Records (as Records.first slices them).
_PER_TRIAL = ('masks', 'train_correct', 'test_correct', 'train_prob',
              'test_prob', 'train_margin', 'test_margin', 'train_pred',
              'test_pred', 'trial_indices')


def check_flags(target_stderr, max_trials, round_trials, trials=None,
                shard_index=None, num_shards=None):
  """Refuses bad combinations of the sequential flags (before any work)."""
  if target_stderr is None:
    if max_trials is not None or round_trials is not None:
      raise errors.UserError('--max_trials and --round_trials belong to '
                             'sequential training: pass --target_stderr too.')
    return
  if not target_stderr > 0:
    raise errors.UserError(f'--target_stderr={target_stderr} must be > 0, '
                           'e.g. 0.05.')
  if max_trials is None:
    raise errors.UserError('--target_stderr needs --max_trials=N, the most '
                           'trials sequential training may train.')
  if round_trials is not None and round_trials < 1:
    raise errors.UserError(f'--round_trials={round_trials} must be >= 1.')
  if trials or shard_index is not None or num_shards is not None:
    raise errors.UserError('--target_stderr trains all trials of each round '
                           'in this process: drop --trials, --shard_index and '
                           '--num_shards.')


def check_design(design, max_trials):
  """Refuses a design that cannot grow in place, or a cap below it."""
  if design.design != 'independent':
    raise errors.UserError(
        f"--target_stderr needs SubsetDesign.design = 'independent' (this "
        f"config: {design.design!r}): the {design.design} design's masks "
        'depend on num_trials, so it cannot grow in place.')
  if max_trials < design.num_trials:
    raise errors.UserError(
        f'--max_trials={max_trials} is below SubsetDesign.num_trials = '
        f'{design.num_trials}, the first round: raise --max_trials.')


def make_plan(loaded, settings, quantile=0.9):
  """(planner.Plan, None), or (None, why not) when it cannot predict."""
  if loaded.num_trials < MIN_TRIALS:
    return None, (f'planning needs at least {MIN_TRIALS} trials, there are '
                  f'{loaded.num_trials}')
  masks = np.asarray(loaded.masks, bool)
  if not np.any(masks.any(axis=0) & (~masks).any(axis=0)):
    return None, ('no training example is both in and out of the trials, so '
                  'planning has nothing to go on')
  mem = scores.memorization(loaded.masks, loaded.train_correct).memorization
  return planner.Plan(loaded, mem, settings, quantile=quantile), None


@dataclasses.dataclass
class Assessment:
  """What the planner says of a workdir's records after a round."""
  trials: int            # the trials it plans from (diverged ones left out)
  recorded: int          # records on disk, diverged included
  stderr_quantile: float = None
  needed: int = None     # None: too few trials to plan
  why_not: str = None


def assess(workdir, settings, target_stderr, quantile=0.9):
  """Loads the records of `workdir` and asks the planner (an Assessment)."""
  loaded = loading.load(workdir, margins=False, diverged='skip')
  recorded = len(records.list_records(workdir))
  plan, why_not = make_plan(loaded, settings, quantile)
  if plan is None:
    return Assessment(loaded.num_trials, recorded, why_not=why_not)
  row = plan.at(plan.k)['memorization']
  return Assessment(loaded.num_trials, recorded, row['stderr_quantile'],
                    plan.trials_for_stderr(target_stderr))


@dataclasses.dataclass
class Summary:
  rounds: int
  trained: list          # trial indices trained by this command
  trials: int            # trials planned from at the end
  needed: int            # the planner's last answer (None: never planned)
  stopped: str           # 'target' or 'max_trials'
  fingerprint: str


def train_until(train_round, assess_round, first, target_stderr, max_trials,
                round_trials=None, log=print, quantile=0.9):
  """The rounds (module docstring).

  Args:
    train_round: trains the missing trials of [0, K) given K; returns the
      train binary's RunSummary.
    assess_round: () -> Assessment of the records after a round.
    first: the first round's K (SubsetDesign.num_trials).
    target_stderr, max_trials, round_trials: the flags (round_trials None:
      `first`).
    log: callable taking one line.

  Returns:
    A Summary.
  """
  round_trials = round_trials or first
  k, number, trained, fingerprint = min(first, max_trials), 0, [], None
  while True:
    number += 1
    result = train_round(k)
    trained += list(result.trained)
    fingerprint = result.fingerprint
    state = assess_round()
    if state.needed is None:
      log(f'Round {number}: {state.trials} trials; planner: '
          f'{state.why_not} (target {target_stderr:g})')
      wanted = max(state.recorded + round_trials, MIN_TRIALS)
    else:
      log(f'Round {number}: {state.trials} trials; planner: {quantile:g}-'
          f'quantile memorization stderr {state.stderr_quantile:.3f} -> '
          f'needs {state.needed} trials (target {target_stderr:g})')
      if state.trials >= state.needed:
        log(f'Stopped after round {number}: the {state.trials} trials reach '
            f'the target stderr {target_stderr:g} (the planner needs '
            f'{state.needed}).')
        return Summary(number, trained, state.trials, state.needed, 'target',
                       fingerprint)
      # Diverged trials do not count: the planner's trials come on top.
      wanted = max(state.recorded + round_trials,
                   state.needed + state.recorded - state.trials)
    if k >= max_trials or state.recorded >= max_trials:
      log(f'Stopped after round {number}: --max_trials={max_trials} reached '
          f'with {state.trials} trials' + (
              f' (the planner needs {state.needed} for the target stderr '
              f'{target_stderr:g}).' if state.needed is not None else '.'))
      return Summary(number, trained, state.trials, state.needed,
                     'max_trials', fingerprint)
    k = min(max_trials, max(wanted, k + 1))  # every round grows K


def first_round(workdir, num_trials, max_trials):
  """The first round's K: the configured num_trials, or, resuming, up to
  the highest trial on disk (at most max_trials), so that a resumed run
  finishes its interrupted round and keeps W/operative_config.gin's K."""
  found = records.list_records(workdir)
  on_disk = max(found) + 1 if found else 0
  return max(num_trials, min(on_disk, max_trials))


def check_targets(target_stderr, target_pair_jaccard):
  if not target_stderr > 0:
    raise errors.UserError(f'--target_stderr={target_stderr} must be > 0, '
                           'e.g. 0.05.')
  if not 0 < target_pair_jaccard <= 1:
    raise errors.UserError(f'--target_pair_jaccard={target_pair_jaccard} '
                           'must be in (0, 1], e.g. 0.7.')


def _fmt(value, spec, width=0):
  if value is None or (isinstance(value, float) and not np.isfinite(value)):
    return '-'.rjust(width)
  return format(value, spec).rjust(width)


def planner_lines(loaded, settings, target_stderr, target_pair_jaccard,
                  multiples=(2, 4, 8, 16)):
  """The planner's advice and its predictions at `multiples` of k (lines);
  diverged trials are left out, as the estimator leaves them out."""
  check_targets(target_stderr, target_pair_jaccard)
  if loaded.diverged:
    keep = np.array([t not in loaded.diverged for t in loaded.trial_indices])
    loaded = dataclasses.replace(
        loaded, metadata=[m for m, ok in zip(loaded.metadata, keep) if ok],
        paths=[p for p, ok in zip(loaded.paths, keep) if ok],
        **{name: getattr(loaded, name)[keep] for name in _PER_TRIAL
           if getattr(loaded, name) is not None})
  plan, why_not = make_plan(loaded, settings)
  if plan is None:
    return [f'  planner: {why_not}; train more trials to get its predictions.']
  summary = plan.summary(target_stderr, target_pair_jaccard, multiples)
  lines = [f'  {summary["advice"]}',
           f'  predicted at {plan.k} trials x {", ".join(map(str, multiples))}'
           f' (memorization stderr: RMS / {plan.quantile:.0%} quantile):',
           f'    {"trials":>6} {"hours":>9}   {"mem stderr":^13}'
           f'{"controlled pairs":>19}   {"pair Jaccard":>12}']
  for row in summary['rows']:
    mem, pairs = row['memorization'], row.get('pairs') or {}
    lines.append(
        f'    {row["trials"]:>6,} {_fmt(row["training_hours"], ".2f", 9)}   '
        f'{_fmt(mem["stderr_rms"], ".3f", 5)} / '
        f'{_fmt(mem["stderr_quantile"], ".3f", 5)}'
        f'{_fmt(pairs.get("controlled"), ",.0f", 19)}   '
        f'{_fmt(pairs.get("controlled_jaccard"), ".2f", 12)}')
  return lines

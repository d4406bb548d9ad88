"""The planner's predictions in words (summary.json's planner 'advice' and
the report's pairs caption): what the trials can tell, and what they cannot
yet."""


import math


def hours(seconds, trials, done):
  return seconds * max(trials - done, 0) / 3600.0


def _more(seconds, trials, done, per_trial=False):
  """' (~H more hours[ at S s per trial])', or '' when the records hold no
  training time (imported trials)."""
  if seconds is None or not math.isfinite(seconds):
    return ''
  rate = f' at {seconds:.1f} s per trial' if per_trial else ''
  return f' (~{hours(seconds, trials, done):,.1f} more hours{rate})'


def pair_sentence(plan, measured=None):
  """What the pairs can and cannot tell at this k, in words: the
  controlled set, or why it is empty (too few trials to tell, or no
  influence a test of this power would miss)."""
  k, sec = plan['trials'], plan['seconds_per_trial']
  need = plan['trials_for_target_pair_jaccard']
  target = plan['target_pair_jaccard']
  if need == 'no_test':
    return 'no pair can be tested (the workdir has no test examples)'
  if need == 'no_family':
    return ('no pair can be tested (no training example reaches the '
            'memorization threshold of the pair family)')
  if need == 'withheld':
    check = plan['check']['pairs']
    half = check.get('half') or {}
    if half and not half.get('ok', True):
      where = (f'{half["predicted"]:.0f} controlled pairs predicted in each '
               f'half of {half["trials"]} trials, '
               + ' and '.join(str(v) for v in half['measured']) + ' measured')
    else:
      where = (f'{check["predicted"]:.0f} controlled pairs predicted at this '
               f'k, {check["measured"]:.0f} measured')
    return (f'the pair model failed its check ({where}), so no pair '
            'prediction is given')
  found = (measured or {}).get('pairs', {}).get('controlled')
  if found is None:  # no estimate yet: the prediction at this k
    found = plan.get('controlled_pairs_here', 0.0)
  effect = plan['detect_effect']
  detect = plan.get('trials_to_detect_effect')
  floor = plan.get('detectable_influence', float('nan'))
  if found < 1:
    if detect is None or detect > k:
      more = ('no k up to 1,000,000 would' if detect is None else
              f'about {detect:,} trials{_more(sec, detect, k)} would')
      return (f'underpowered at this k: too few trials to tell whether '
              f'pairs exceed the null; {more} let pairs of influence >= '
              f'{effect:g} be selected')
    verb = ('exceeds' if (measured or {}).get('pairs') else
            'is expected to exceed')
    return (f'no pair {verb} the null beyond chance, and at this k a pair '
            f'of influence >= {floor:g} would be selected with probability '
            '>= 1/2: there is no sign of influence that large')
  if need == 'empty':
    return ('the controlled pairs found are not predicted to grow with k')
  if need is None:
    return (f'no k up to 1,000,000 is predicted to give a controlled pair '
            f'set whose split-run Jaccard reaches {target:g}')
  if need <= k:
    return (f'the controlled pair set is predicted stable (Jaccard >= '
            f'{target:g} between independent runs) at this k')
  return (f'{need:,} trials{_more(sec, need, k)} are predicted to make '
          f'the controlled pair set stable (Jaccard '
          f'{target:g} between independent runs)')


def advice(plan):
  """The planner's summary in one sentence (its pair sentence as
  pair_sentence wrote it into the plan)."""
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
      parts.append(f'{need:,} trials{_more(sec, need, k, True)} bring '
                   'memorization '
                   f'standard errors to <= {plan["target_stderr"]:g} for '
                   f'{plan["quantile"]:.0%} of the examples the trials '
                   'disagree on')
  check = (plan.get('check') or {}).get('memorization')
  if check and not check['ok']:
    parts.append(f'its memorized-set model missed its check at this k '
                 f'({check["predicted"]:.0f} predicted, '
                 f'{check["measured"]:.0f} measured): read its memorized '
                 'counts as rough')
  parts.append(plan['pair_sentence'])
  return 'Planner: ' + '; '.join(parts) + '.'

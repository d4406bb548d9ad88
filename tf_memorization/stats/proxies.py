"""How well cheap proxies predict memorization, and held-out predictions for
label-issue tools.

Memorization needs many trials: mem(i) = mean_{t: M[t,i]=1} C[t,i] -
mean_{t: M[t,i]=0} C[t,i] (scores.py). The proxies here come from far fewer:

  * learning-dynamics proxies, recorded while each trial trains (DESIGN.md,
    "Learning-dynamics proxies"), for the examples in its subset only:
    cumulative sample loss `csl` (sum of an example's losses over its visits),
    `final_loss` (loss at its last visit), `learned_epoch` (visits up to and
    including its last misclassified one), `forgetting` (correct at one visit,
    wrong at the next: Toneva et al. 2019) and `visits`;
  * held-out scores from the same trials' predictions: `heldout_accuracy`
    (the C-score of Jiang et al. 2021) and `heldout_prob` (its soft variant).

For a proxy P computed from the first K trials,

    P_K(i) = mean_{t < K: t trained on i} P[t, i]     (learning dynamics)
    P_K(i) = mean_{t < K: t left i out}   P[t, i]     (held-out scores)

(NaN where no such trial), and prediction_table reports, for K = 1, 2, 4, ...,
the Spearman, Pearson and cosine of DIRECTIONS[P] * P_K with the memorization
estimate from all k trials, next to the same-budget baseline
'memorization_first_k': mem recomputed from those first K trials. A reference
figure, not comparable on other data: Ravikumar et al. 2025 report cosine 0.87
and Pearson 0.79 of cumulative sample loss against Feldman & Zhang's CIFAR-100
memorization scores (RAVIKUMAR_2025).

What the numbers mean, and do not:
  * Spearman and Pearson do not depend on where a proxy's zero lies; cosine
    does (it is the Pearson of uncentred values), so it means little for an
    oriented held-out score (-C-score is negative everywhere).
  * The held-out scores and memorization_first_k are computed from the same
    outcomes C[t, i] (t < K) that enter the full-k estimate, so part of their
    agreement with it is shared noise, more so as K approaches k. The
    learning-dynamics proxies are other measurements of the same models.

Label issues: heldout_class_probabilities turns the summed class-probability
vectors of the trials that left each example out into out-of-sample
pred_probs, the input of cleanlab-style tools; label_issue_scores scores them
as cleanlab does, and detection_auc measures any score (those, or the
memorization estimate) as a detector of flipped labels.

numpy only; reporting/estimate_figures.proxies draws the table.
"""

import collections

import numpy as np

from tf_memorization.stats import ranks
from tf_memorization.stats import scores

# +1: a larger value means more memorized; -1: a smaller one does.
DIRECTIONS = {
    # Examples a network memorizes (atypical, ambiguous, mislabeled) are fit
    # late, so their loss stays high for many epochs: a large sum
    # (Ravikumar et al. 2025).
    'csl': +1,
    # Such an example is the last to be fit, so its loss at the end of
    # training is still above that of typical examples.
    'final_loss': +1,
    # Learned late (a late last mistake), as slowly learned examples have low
    # C-scores (Jiang et al. 2021).
    'learned_epoch': +1,
    # Often forgotten examples are the atypical and mislabeled ones;
    # unforgettable ones are typical (Toneva et al. 2019).
    'forgetting': +1,
    # mem = p_in - p_out, and p_in is close to 1 for a fitted training
    # example, so mem ~ 1 - C-score: low held-out accuracy, high memorization.
    'heldout_accuracy': -1,
    # The same with the true-class probability.
    'heldout_prob': -1,
}
LEARNING_DYNAMICS = ('csl', 'final_loss', 'learned_epoch', 'forgetting')
HELDOUT = ('heldout_accuracy', 'heldout_prob')
# Where each held-out score comes from (proxy_values' `arrays` keys).
HELDOUT_SOURCES = {'heldout_accuracy': 'train_correct',
                   'heldout_prob': 'train_prob'}
# The same-budget baseline row: mem from the first K trials.
REFERENCE = 'memorization_first_k'
TITLES = {'csl': 'cumulative sample loss',
          'final_loss': 'final loss',
          'learned_epoch': 'learned epoch',
          'forgetting': 'forgetting events',
          'heldout_accuracy': 'held-out accuracy',
          'heldout_prob': 'held-out probability',
          REFERENCE: 'memorization from the first trials'}
TRIAL_COUNTS = (1, 2, 4, 8, 16)
# Cumulative sample loss vs the paper's CIFAR-100 memorization (Ravikumar et
# al. 2025): a reference figure, not comparable on other data.
RAVIKUMAR_2025 = {'cosine': 0.87, 'pearson': 0.79}


def _mean_where(values, valid):
  """Per column, the mean of `values` where `valid` (NaN where none)."""
  counts = valid.sum(axis=0)
  sums = np.where(valid, values, 0.0).sum(axis=0)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _trial_rows(name, array, masks, first):
  """array [k_a, n] as float64 and masks[:k_a]; checks shapes and `first`."""
  array = np.asarray(array)
  if array.ndim != 2 or array.shape[1] != masks.shape[1] or (
      array.shape[0] > masks.shape[0]):
    raise ValueError(f'{name} has shape {array.shape}: it needs [k, n] with '
                     f'at most the masks\' {masks.shape[0]} trials and n = '
                     f'{masks.shape[1]}.')
  if not 1 <= first <= array.shape[0]:
    raise ValueError(f'first = {first}, but {name} has '
                     f'{array.shape[0]} trials: use 1 ... {array.shape[0]}.')
  return np.asarray(array[:first], np.float64), masks[:first]


def proxy_values(name, arrays, masks, first):
  """Proxy `name` per training example, from the first `first` trials.

    learning dynamics: P_K(i) = mean_{t < K, M[t,i]=1} P[t, i]
    learned_epoch:     P[t, i] = learned_epoch[t, i] / visits[t, i]  (0..1)
    held-out scores:   P_K(i) = mean_{t < K, M[t,i]=0} P[t, i]

  with K = `first`. A value where masks is False (for a learning-dynamics
  proxy), non-finite, or (learned_epoch) of a trial with no visits is
  missing; an example with no value is NaN.

  Args:
    name: a key of DIRECTIONS.
    arrays: {name: [k_p, n]}: `name` itself (and 'visits' for
      learned_epoch) for a learning-dynamics proxy; 'train_correct' (bool)
      for heldout_accuracy, 'train_prob' for heldout_prob. Row t is trial t.
    masks: bool [k, n], True where trial t trained on example i (k >= k_p).
    first: how many trials, from the first, to use.

  Returns:
    float64 [n].
  """
  if name not in DIRECTIONS:
    raise ValueError(f'unknown proxy {name!r}: use one of '
                     f'{", ".join(DIRECTIONS)}.')
  masks = np.asarray(masks, bool)
  if masks.ndim != 2:
    raise ValueError(f'masks has shape {masks.shape}: it needs [k, n].')
  source = HELDOUT_SOURCES.get(name, name)
  if source not in arrays:
    raise ValueError(f'proxy {name!r} needs arrays[{source!r}].')
  values, in_trial = _trial_rows(source, arrays[source], masks, first)
  if name in HELDOUT:
    return _mean_where(values, ~in_trial & np.isfinite(values))
  valid = in_trial & np.isfinite(values)
  if name == 'learned_epoch':
    if 'visits' not in arrays:
      raise ValueError("proxy 'learned_epoch' needs arrays['visits'] (it is "
                       'normalised by each trial\'s visits).')
    visits, _ = _trial_rows('visits', arrays['visits'], masks, first)
    valid &= np.isfinite(visits) & (visits > 0)
    with np.errstate(invalid='ignore', divide='ignore'):
      values = values / visits
  return _mean_where(values, valid)


def _row(name, direction, trials, all_trials, values, memorization):
  # A held-out score in [0, 1] turns into 1 − score (not −score), so that its
  # cosine with memorization (≈ 1 − C-score) means something too.
  oriented = 1.0 - values if name in HELDOUT else direction * values
  x, _ = ranks.finite_pairs(oriented, memorization)
  return {'proxy': name, 'direction': direction, 'trials': trials,
          'all_trials': all_trials, 'examples': int(len(x)),
          'spearman': ranks.spearman(oriented, memorization),
          'pearson': ranks.pearson(oriented, memorization),
          'cosine': ranks.cosine(oriented, memorization)}


def _counts(trial_counts, available):
  counts = sorted({int(c) for c in trial_counts})
  if counts and counts[0] < 1:
    raise ValueError(f'trial_counts {tuple(trial_counts)}: every count must '
                     'be at least 1.')
  return [c for c in counts if c <= available]


def prediction_table(memorization, masks, proxies, train_correct, train_prob,
                     trial_counts=TRIAL_COUNTS, all_trials=None):
  """How well each proxy from the first K trials ranks the memorization.

  For each proxy P and each K in trial_counts (those above the trials P has
  are dropped: k_p for a learning-dynamics proxy, train_correct's k for the
  held-out scores), one row comparing DIRECTIONS[P] * proxy_values(P, ..., K)
  (1 − proxy_values for the held-out scores, in [0, 1]) with
  `memorization`, then the REFERENCE rows: mem recomputed from the first
  K trials of masks and train_correct (the same-budget baseline).

  Args:
    memorization: float [n], the estimate from all k trials (NaN: none).
    masks: bool [k, n].
    proxies: {name: [k_p, n]} of learning-dynamics proxies (LEARNING_DYNAMICS,
      plus 'visits' when learned_epoch is there); may be empty.
    train_correct: bool [k, n], every trial's correctness on every example.
    train_prob: float [k, n] true-class probabilities, or None (no
      heldout_prob rows).
    trial_counts: the K to try.
    all_trials: k, the trials `memorization` comes from (default: the
      masks' rows; the arrays may hold only the first max(trial_counts)).

  Returns:
    [dict]: proxy, direction, trials (K), all_trials (k), examples (pairs
    with both finite), spearman, pearson, cosine.
  """
  masks = np.asarray(masks, bool)
  memorization = np.asarray(memorization, np.float64)
  if masks.ndim != 2 or memorization.shape != (masks.shape[1],):
    raise ValueError(f'memorization {memorization.shape} and masks '
                     f'{masks.shape}: they need [n] and [k, n].')
  unknown = sorted(set(proxies) - set(LEARNING_DYNAMICS) - {'visits'})
  if unknown:
    raise ValueError(f'unknown learning-dynamics proxies {unknown}: use '
                     f'{", ".join(LEARNING_DYNAMICS)} (and visits).')
  arrays = dict(proxies)
  arrays['train_correct'] = np.asarray(train_correct, bool)
  if train_prob is not None:
    arrays['train_prob'] = train_prob
  k = masks.shape[0] if all_trials is None else int(all_trials)
  rows = []
  for name in LEARNING_DYNAMICS + HELDOUT:
    source = HELDOUT_SOURCES.get(name, name)
    if source not in arrays:
      continue
    for trials in _counts(trial_counts, np.shape(arrays[source])[0]):
      values = proxy_values(name, arrays, masks, trials)
      rows.append(_row(name, DIRECTIONS[name], trials, k, values,
                       memorization))
  correct, _ = _trial_rows('train_correct', arrays['train_correct'], masks,
                           arrays['train_correct'].shape[0])
  for trials in _counts(trial_counts, correct.shape[0]):
    first_k = scores.difference_of_means(masks[:trials],
                                         correct[:trials] > 0)['estimate']
    rows.append(_row(REFERENCE, +1, trials, k, first_k, memorization))
  return rows


def summary_line(rows):
  """One sentence: the proxy whose ranking is closest to the memorization's.

  The count compared is the largest K that every proxy with a finite Spearman
  has (so a proxy recorded in fewer trials is not judged on a smaller
  budget), or the largest K of any proxy when they share none.
  """
  finite = [r for r in rows if r['proxy'] != REFERENCE and
            np.isfinite(r['spearman'])]
  if not finite:
    return ('No proxy could be compared with the memorization estimate '
            f'(fewer than {ranks.MIN_PAIRS} examples with both).')
  by_proxy = collections.defaultdict(set)
  for r in finite:
    by_proxy[r['proxy']].add(r['trials'])
  shared = set.intersection(*by_proxy.values())
  trials = max(shared) if shared else max(r['trials'] for r in finite)
  at = sorted((r for r in finite if r['trials'] == trials),
              key=lambda r: -r['spearman'])
  best = at[0]
  whole = (f'the memorization from all {best["all_trials"]} trials'
           if best.get('all_trials') else 'the full-k memorization')
  text = (f'From {trials} trials, {TITLES.get(best["proxy"], best["proxy"])} '
          f'ranks examples most like {whole} '
          f'(Spearman {best["spearman"]:.2f})')
  if len(at) > 1:
    text += '; ' + ', '.join(
        f'{TITLES.get(r["proxy"], r["proxy"])} {r["spearman"]:.2f}'
        for r in at[1:])
  reference = [r for r in rows if r['proxy'] == REFERENCE and
               r['trials'] == trials and np.isfinite(r['spearman'])]
  if reference:
    text += (f'; memorization itself from those {trials} trials '
             f'{reference[0]["spearman"]:.2f}')
  return text + '.'


def heldout_class_probabilities(sum_probs, counts):
  """Out-of-sample pred_probs: per example, the mean class-probability vector
  of the trials that left it out.

    pred_probs[i] = sum_probs[i] / counts[i], renormalised to sum 1

  The vectors are stored in float16, whose rounding (about 5e-4 relative per
  entry) leaves sums off 1 by up to ~C·5e-4; tools such as cleanlab expect
  rows that sum to 1, so each finite row is divided by its sum.

  Args:
    sum_probs: float [n, C], the sum over those trials of the vectors.
    counts: int [n], how many trials left each example out.

  Returns:
    float32 [n, C]; NaN rows for examples never held out (count 0) and for
    rows with a non-finite entry or a zero sum.
  """
  sum_probs = np.asarray(sum_probs, np.float64)
  counts = np.asarray(counts)
  if sum_probs.ndim != 2 or counts.shape != (sum_probs.shape[0],):
    raise ValueError(f'sum_probs {sum_probs.shape} and counts '
                     f'{counts.shape}: they need [n, C] and [n].')
  if (counts < 0).any():
    raise ValueError('counts has negative entries: it counts trials.')
  with np.errstate(invalid='ignore', divide='ignore'):
    mean = sum_probs / np.where(counts > 0, counts, np.nan)[:, None]
    total = mean.sum(axis=1)
    ok = np.isfinite(total) & (total > 0)
    pred_probs = np.where(ok[:, None], mean / total[:, None], np.nan)
  return pred_probs.astype(np.float32)


def label_issue_scores(pred_probs, labels):
  """Per-example label quality in cleanlab's conventions (lower = more likely
  a label issue), from out-of-sample pred_probs [n, C] and labels [n]:

    self_confidence   = p[i, y_i]
    margin            = p[i, y_i] - max_{c != y_i} p[i, c]        (-1 .. 1)
    normalized_margin = (margin + 1) / 2                          ( 0 .. 1)

  normalized_margin is cleanlab.rank's value (its code rescales the margin
  to [0, 1]; same order as margin). NaN rows give NaN scores.

  Returns:
    {'self_confidence', 'margin', 'normalized_margin'}: float64 [n] each.
  """
  pred_probs = np.asarray(pred_probs, np.float64)
  labels = np.asarray(labels)
  if pred_probs.ndim != 2 or labels.shape != (pred_probs.shape[0],):
    raise ValueError(f'pred_probs {pred_probs.shape} and labels '
                     f'{labels.shape}: they need [n, C] and [n].')
  n, num_classes = pred_probs.shape
  if num_classes < 2:
    raise ValueError(f'pred_probs has {num_classes} class: a margin needs '
                     'at least 2.')
  if n and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f'labels range over {labels.min()} ... {labels.max()}, '
                     f'outside the {num_classes} classes of pred_probs.')
  rows = np.arange(n)
  self_confidence = pred_probs[rows, labels]
  others = pred_probs.copy()
  others[rows, labels] = -np.inf
  margin = self_confidence - others.max(axis=1)
  return {'self_confidence': self_confidence, 'margin': margin,
          'normalized_margin': (margin + 1.0) / 2.0}


Detection = collections.namedtuple('Detection', ['auc', 'average_precision'])


def detection_auc(scores_, is_flipped, lower_is_issue=True):
  """`scores_` as a detector of the flipped labels, over finite scores.

    auc = P(a flipped example looks more suspicious than a clean one),
          ties counting 1/2 (the Mann-Whitney statistic, from average ranks)
    average_precision = sum_j (R_j - R_{j-1}) P_j over the distinct score
          thresholds j, most suspicious first (scikit-learn's definition)

  Args:
    scores_: float [n]; examples with a non-finite score are left out.
    is_flipped: bool [n].
    lower_is_issue: True for label-quality scores (self-confidence), False
      for scores where higher is more suspicious (memorization).

  Returns:
    Detection(auc, average_precision): floats, NaN when the finite scores
    have no flipped or no clean example.
  """
  values = np.asarray(scores_, np.float64).ravel()
  positive = np.asarray(is_flipped, bool).ravel()
  if values.shape != positive.shape:
    raise ValueError(f'scores has {values.size} values and is_flipped '
                     f'{positive.size}.')
  ok = np.isfinite(values)
  suspicion = -values[ok] if lower_is_issue else values[ok]
  positive = positive[ok]
  num_pos = int(positive.sum())
  num_neg = len(positive) - num_pos
  if not num_pos or not num_neg:
    return Detection(float('nan'), float('nan'))
  auc = float(ranks.rank_auc(suspicion, positive))
  order = np.argsort(-suspicion, kind='mergesort')
  ordered = suspicion[order]
  last_of_tie = np.r_[ordered[1:] != ordered[:-1], True]
  true_pos = np.cumsum(positive[order])[last_of_tie]
  flagged = np.flatnonzero(last_of_tie) + 1.0
  recall = true_pos / num_pos
  average_precision = float(np.sum(np.diff(np.r_[0.0, recall]) *
                                   (true_pos / flagged)))
  return Detection(float(auc), average_precision)

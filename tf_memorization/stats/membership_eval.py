"""How well LiRA does on the trials: each trial the target in turn.

The scores Λ are membership's (as target_scores: the other k - 1 trials are
each target's shadows; notation and fits in membership's docstring); this
module pools them over the targets and measures the attack. It runs on
membership's internals (the input checks, the sufficient statistics, the
leave-one-out scores, the rank AUC) and its _CHUNK_VALUES, so that one
setting sizes the chunks of both modules.

Evaluation (`evaluate`): labels M[t, i]; the scores of all (t, i) with a
finite Λ are pooled, P members and N non-members:

    AUC      P(Λ_member > Λ_non-member) + ½ P(=)  (Mann–Whitney, exact)
    TPR@α    the largest TPR of a threshold on the pooled scores with
             FPR ≤ α: with v the (⌊αN⌋ + 1)-th largest non-member score,
             TPR = #{members > v} / P
    accuracy max over thresholds of (TPR + 1 - FPR) / 2 (balanced)

The pooled scores are held sorted: 8 bytes per (t, i) scored (1.6 GB at
k = 4,000, n = 50,000); everything else runs in chunks of ~32 MB.

reporting/estimate_figures.membership_roc draws the ROC curves on log-log
axes, as in the paper.
"""

import dataclasses
import math

import numpy as np

from tf_memorization.stats import membership
from tf_memorization.stats import ranks

ROC_POINTS = 2_000         # most points of a returned ROC curve
EXACT_ROC_VERTICES = 500   # non-member scores kept exactly at the low-FPR end


# --------------------------------------------------------------------------
# Evaluation: each trial the target in turn


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """The attack's success over the targets' pooled (t, i) scores.

  Attributes:
    attack, variance: the variant evaluated.
    auc: pooled ROC AUC (ties ½).
    tpr_at: {fpr: the largest TPR with FPR ≤ fpr}.
    accuracy: the best balanced accuracy over thresholds.
    fpr, tpr: the ROC curve from (0, 0) to (1, 1), at most ROC_POINTS
      points, exact over the EXACT_ROC_VERTICES highest non-member scores
      (linear between points: its area is the AUC when not downsampled).
    trials: the target trials.
    target_auc: each target's own AUC (NaN: no member or non-member scored).
    target_auc_mean, target_auc_sd: their mean and sd (ddof 1) over targets.
    num_scored: (t, i) with a finite score; num_members: members among them.
  """
  attack: str
  variance: str
  auc: float
  tpr_at: dict
  accuracy: float
  fpr: np.ndarray
  tpr: np.ndarray
  trials: np.ndarray
  target_auc: np.ndarray
  target_auc_mean: float
  target_auc_sd: float
  num_scored: int
  num_members: int


def _count_below(reference, values, side):
  """Σ_v #{reference < v} (side 'left') or ≤ v ('right'); `reference`
  sorted; in blocks (the counts of 10^8 values would take 800 MB)."""
  total, block = 0, membership._CHUNK_VALUES
  for start in range(0, len(values), block):
    total += int(np.searchsorted(reference, values[start:start + block],
                                 side).sum())
  return total


def _pooled_auc(members, others):
  if not len(members) or not len(others):
    return math.nan
  ties_half = (_count_below(others, members, 'left') +
               _count_below(others, members, 'right'))
  return ties_half / (2.0 * len(members) * len(others))


def _tpr_at(members, others, fpr):
  """The largest TPR of a threshold with FPR ≤ fpr (both sorted)."""
  if not len(members) or not len(others):
    return math.nan
  allowed = math.floor(fpr * len(others) + 1e-9)  # non-members let through
  if allowed >= len(others):
    return 1.0
  v = others[len(others) - 1 - allowed]
  return float(len(members) - np.searchsorted(members, v, 'right')) / len(
      members)


def _balanced_accuracy(members, others):
  """max over thresholds u of (TPR + 1 - FPR) / 2, predicting score ≥ u a
  member; TPR - FPR is largest at a member score (or above all: 0.5)."""
  if not len(members) or not len(others):
    return math.nan
  first = np.ones(len(members), bool)
  first[1:] = members[1:] != members[:-1]
  starts = np.flatnonzero(first)
  tpr = (len(members) - starts) / len(members)
  fpr = (len(others) - np.searchsorted(others, members[starts], 'left')) / len(
      others)
  return 0.5 + 0.5 * max(0.0, float((tpr - fpr).max()))


def _roc_curve(members, others, points=ROC_POINTS, exact=EXACT_ROC_VERTICES):
  """(fpr, tpr) from (0, 0) to (1, 1), both sorted score arrays.

  For each distinct non-member score v, from the highest: the vertex just
  above v (#> v) and at v (#≥ v); between them the line is the ties' ½.
  When there are more than `points`, the `exact` highest v are kept and the
  rest thinned to log-spaced FPR.
  """
  p, n = len(members), len(others)
  if not p or not n:
    return np.zeros(0), np.zeros(0)
  first = np.ones(n, bool)
  first[1:] = others[1:] != others[:-1]
  starts = np.flatnonzero(first)[::-1]  # distinct values, highest first
  values = others[starts]
  fp_at = n - starts                    # #non-members ≥ v
  fp_above = np.concatenate([[0], fp_at[:-1]])
  chosen = np.arange(len(values))
  if 2 * len(values) + 2 > points:
    pairs = (points - 2) // 2
    head = chosen[:min(exact, pairs - 1)]
    grid = np.geomspace(fp_at[len(head)], n, pairs - len(head) - 1)
    tail = np.minimum(np.searchsorted(fp_at, grid, 'left'), len(values) - 1)
    chosen = np.unique(np.concatenate([head, tail, [len(values) - 1]]))
  v = values[chosen]
  tp_above = p - np.searchsorted(members, v, 'right')
  tp_at = p - np.searchsorted(members, v, 'left')
  fpr = np.stack([fp_above[chosen], fp_at[chosen]], 1).ravel() / n
  tpr = np.stack([tp_above, tp_at], 1).ravel() / p
  return (np.concatenate([[0.0], fpr, [1.0]]),
          np.concatenate([[0.0], tpr, [1.0]]))


def _pooled(parts):
  """The parts' scores in one sorted array, sorted in place (the pooled
  scores of 64 targets at ImageNet's size are 82M values: one copy, not
  three)."""
  pooled = np.concatenate(parts or [np.zeros(0)])
  parts.clear()
  pooled.sort()
  return pooled


def evaluate(confidence, masks, variance='per_example', attack='online',
             trials=None, fprs=(0.001, 0.01), sides=None):
  """LiRA with each trial the target in turn, the others its shadows.

  Args:
    confidence: [k, n] φ.
    masks: bool [k, n]; masks[t] are target t's membership labels.
    variance: 'per_example' or 'global'.
    attack: 'online' or 'offline'.
    trials: the targets (distinct indices); None: all k.
    fprs: the false positive rates of tpr_at, each in (0, 1].
    sides: membership.moments(confidence, masks) when the caller has them
      (shared by the attacks: one pass over the values for all).

  Returns:
    Evaluation.
  """
  membership._choice(variance, membership.VARIANCES, 'variance')
  membership._choice(attack, membership.ATTACKS, 'attack')
  confidence, masks = membership._check(confidence, masks)
  k, n = confidence.shape
  if trials is None:
    targets = np.arange(k)
  else:
    targets = np.asarray(trials)
    if (targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer) or
        ((targets < 0) | (targets >= k)).any() or
        len(np.unique(targets)) != len(targets)):
      raise ValueError(f'trials must be distinct trial indices in 0..{k - 1}.')
  for fpr in fprs:
    if not 0 < fpr <= 1:
      raise ValueError(f'fprs: {fpr} is not a false positive rate in (0, 1].')
  inside, outside = sides or membership._moments(confidence, masks)
  members, others = [], []
  target_auc = np.full(len(targets), np.nan)
  rows = max(1, membership._CHUNK_VALUES // max(n, 1))
  for start in range(0, len(targets), rows):
    chunk = targets[start:start + rows]
    member = np.asarray(masks[chunk], bool)
    scores = membership._scores(confidence[chunk].astype(np.float64), member,
                                inside, outside, variance, attack)
    finite = np.isfinite(scores)
    members.append(scores[finite & member])
    others.append(scores[finite & ~member])
    target_auc[start:start + rows] = ranks.rank_auc(
        np.where(finite, scores, np.nan), finite & member, finite & ~member)
  members, others = _pooled(members), _pooled(others)
  fpr, tpr = _roc_curve(members, others)
  scored = target_auc[np.isfinite(target_auc)]
  return Evaluation(
      attack=attack, variance=variance, auc=_pooled_auc(members, others),
      tpr_at={float(a): _tpr_at(members, others, a) for a in fprs},
      accuracy=_balanced_accuracy(members, others), fpr=fpr, tpr=tpr,
      trials=targets, target_auc=target_auc,
      target_auc_mean=float(scored.mean()) if len(scored) else math.nan,
      target_auc_sd=float(scored.std(ddof=1)) if len(scored) > 1 else math.nan,
      num_scored=len(members) + len(others), num_members=len(members))

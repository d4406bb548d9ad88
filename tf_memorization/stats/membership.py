"""Membership inference from the trials: LiRA (Carlini et al. 2022).

"Membership Inference Attacks From First Principles", online and offline
variants, run on the trials this package trains anyway: each trial in turn is
the target model, the other k - 1 trials are its shadow models.

Notation: k trials, n training examples; mask M[t, i] = 1 when trial t
trained on example i; φ_t(i) = z_y - log Σ_{y'≠y} exp z_{y'}, the logit-scaled
confidence (log-odds) of the true class y from trial t's logits z.

Per example i and side s (in: the trials with M[t, i] = 1, out: the rest):
k_s(i) trials, mean μ_s(i) and SS_s(i) = Σ_t (φ_t(i) - μ_s(i))².

    per_example  σ_s(i)² = SS_s(i) / (k_s(i) - 1)      (unbiased, ddof = 1)
                 when k_s(i) ≥ 2; an example with one trial on side s
                 takes that side's global σ_s.
    global       σ_s²    = Σ_i SS_s(i) / Σ_{i: k_s(i) ≥ 1} (k_s(i) - 1)
                 one σ per side, the pooled within-example variance (each
                 example about its own mean): for small k, where σ from a
                 handful of trials is noise.

Every σ is floored at SD_FLOOR = 1e-3 (log-odds units), so that an example
whose trials all give the same φ (e.g. a saturated float16 record) gives a
large finite score, not an infinity or a NaN. A side with no trials has
μ = σ = NaN; a side where no example has two trials has no global σ (NaN).

Scores of target trial t on example i, x = φ_t(i), all statistics from the
trials other than t:

    online   Λ = log N(x; μ_in, σ_in) - log N(x; μ_out, σ_out)
               = log(σ_out / σ_in) - (x - μ_in)² / (2 σ_in²)
                                   + (x - μ_out)² / (2 σ_out²)
    offline  Λ = -log(1 - Φ((x - μ_out) / σ_out))

The offline form is the paper's one-sided test (members have larger φ): its
score 1 - Pr[Z > x], Z ~ N(μ_out, σ_out²), is Φ((x - μ_out)/σ_out); we report
-log of the out tail p-value, the same order (so the same ROC) without
rounding to 1 in the tail, where the low-FPR thresholds live. The log tail is
computed from log erfc (Numerical Recipes' erfcc, relative error < 1.2e-7,
no scipy); far below the out mean (z ≲ -38) the scores tie at 0.

Leaving the target out subtracts its contribution from the statistics
(count, mean, SS: the numerically stable form of count, Σφ, Σφ², computed
in float64 with two passes, each example about its own mean), no refit:

    k' = k_s - 1,  μ' = μ_s - (x - μ_s) / k',  SS' = SS_s - (x - μ_s)² k_s / k'

on the target's side s; the global σ is pooled again from SS' for each
target. This equals a fit on the other k - 1 trials. An example whose in or
out side (out side only, offline) is empty after that scores NaN.

How exposed each example is (`per_example_scores`, from all k trials):
separation (μ_in - μ_out) / sqrt((σ_in² + σ_out²) / 2), and auc, the
Mann–Whitney P(φ_in > φ_out) + ½ P(=) over its k_in × k_out trial pairs.

Older records hold only the float16 true-class probability p or the margin
z_y - max_{y'≠y} z_{y'}; `from_probabilities` and `from_margins` turn them
into stand-ins for φ. The exact log-odds field is preferred: members are
mostly fitted to p ≈ 1, exactly where float16 p holds nothing (see
from_probabilities), and LiRA's signal is the in/out shift at that end.

How well the attack does, each trial the target in turn (pooled AUC, TPR at
low FPR, the ROC and its figure), is membership_eval's. This module needs
numpy only; its temporary arrays run in chunks of ~32 MB (_CHUNK_VALUES,
which sizes membership_eval's chunks too).
"""

import dataclasses
import math

import numpy as np

from tf_memorization.stats import bits
from tf_memorization.stats import ranks

VARIANCES = ('per_example', 'global')
ATTACKS = ('online', 'offline')
SD_FLOOR = 1e-3            # log-odds units
_CHUNK_VALUES = 4_000_000  # float64 values per temporary array (32 MB)

# float16 probabilities: the largest value below 1, and the smallest positive.
_P_HIGH = 1.0 - 2.0**-11
_P_LOW = 2.0**-24


# --------------------------------------------------------------------------
# Inputs


def _check(confidence, masks):
  """(confidence, masks as bool), or a ValueError saying what is wrong."""
  confidence = bits.as_columns(confidence)  # a spill stays on its file
  if not isinstance(masks, bits.BitMatrix):
    masks = np.asarray(masks)
  if confidence.ndim != 2 or confidence.shape != masks.shape:
    raise ValueError(
        f'confidence {confidence.shape} and masks {masks.shape} must be '
        '[k, n] arrays of one shape (trials x training examples).')
  if not (np.issubdtype(confidence.dtype, np.floating) or
          np.issubdtype(confidence.dtype, np.integer)):
    raise ValueError(f'confidence must be numbers, not {confidence.dtype}.')
  if masks.dtype != bool:
    if (not np.issubdtype(masks.dtype, np.integer) or
        ((masks != 0) & (masks != 1)).any()):
      raise ValueError('masks must be bool (or 0/1 integers): True where the '
                       f'trial trained on the example, got {masks.dtype}.')
    masks = masks.astype(bool)
  return confidence, masks


def _choice(value, allowed, name):
  if value not in allowed:
    raise ValueError(f'{name}={value!r}: choose one of {", ".join(allowed)}.')


def from_probabilities(prob):
  """φ stand-in from float16 true-class probabilities: log(p / (1 - p)).

  p is clipped to float16's open interval [2^-24, 1 - 2^-11]. float16 keeps
  nothing of a confident example: its largest value below 1 is 1 - 2^-11,
  so every φ above log(2047) ≈ 7.62 reads back as at most 7.62 (p rounds to
  exactly 1 from φ ≈ log(4095) ≈ 8.32 up), and the levels below are coarse
  (log 1023 ≈ 6.93, log(2045/3) ≈ 6.52, ...). At the other end p rounds to
  0 below φ ≈ -16.6.

  Args:
    prob: [k, n] (or any shape) true-class probabilities.

  Returns:
    float64 array of the same shape.
  """
  p = np.clip(np.asarray(prob, np.float64), _P_LOW, _P_HIGH)
  return np.log(p) - np.log1p(-p)


def from_margins(margin):
  """φ stand-in from margins m = z_y - max_{y'≠y} z_{y'}: m itself.

  With C classes, max ≤ log Σ_{y'≠y} exp z_{y'} ≤ max + log(C - 1), so
  φ ≤ m ≤ φ + log(C - 1): equal when one other class dominates, never
  saturating, but off by an example- and trial-dependent amount up to
  log(C - 1) (LiRA's Gaussians then fit a proxy, not φ).

  Returns:
    float64 array of the same shape.
  """
  return np.asarray(margin, np.float64)


# --------------------------------------------------------------------------
# Sufficient statistics and the Gaussians


@dataclasses.dataclass(frozen=True)
class _Moments:
  """One side's statistics per example: count, mean (0 when the count is 0)
  and SS, the sum of squared deviations from the mean."""
  count: np.ndarray
  mean: np.ndarray
  ss: np.ndarray


def _moments(confidence, masks):
  """(_Moments of the in side, of the out side) over all k trials, [n] each;
  two passes per block of examples (mean, then SS about it), float64."""
  k, n = confidence.shape
  sides = [(np.zeros(n, np.int64), np.zeros(n), np.zeros(n))
           for _ in range(2)]
  width = max(1, _CHUNK_VALUES // max(k, 1))
  for start in range(0, n, width):
    columns = slice(start, start + width)
    phi = confidence[:, columns].astype(np.float64)
    if not np.isfinite(phi).all():
      bad = int((~np.isfinite(phi)).sum())
      raise ValueError(
          f'confidence holds {bad} non-finite values among examples '
          f'{start}..{min(n, start + width) - 1}: a trial diverged or its '
          'record is damaged; leave that trial out.')
    member = masks[:, columns]
    for (count, mean, ss), chosen in zip(sides, (member, ~member)):
      count[columns] = chosen.sum(0)
      total = np.where(chosen, phi, 0.0).sum(0)
      mean[columns] = np.divide(total, count[columns], out=np.zeros_like(total),
                                where=count[columns] > 0)
      deviation = np.where(chosen, phi - mean[columns], 0.0)
      ss[columns] = np.einsum('ij,ij->j', deviation, deviation)
  return tuple(_Moments(*side) for side in sides)


def _leave_out(side, x, removed):
  """The side's statistics [b, n] without the values x [b, n] where
  `removed` (the downdate of the module docstring)."""
  count = side.count - removed
  delta = x - side.mean
  downdated = removed & (count > 0)
  safe = np.where(downdated, count, 1)
  mean = np.where(downdated, side.mean - delta / safe,
                  np.where(count > 0, side.mean, 0.0))
  ss = np.where(downdated, side.ss - delta**2 * (count + 1) / safe,
                np.where(removed, 0.0, side.ss))
  return _Moments(count, mean, np.maximum(ss, 0.0))


def _gaussian(moments, variance):
  """(μ, σ, global σ) of one side: μ and σ shaped like the counts, NaN
  where the side is empty; the global σ pooled over the last axis."""
  count, ss = moments.count, moments.ss
  occupied = count >= 1
  df = np.where(occupied, count - 1, 0).sum(-1, keepdims=True)
  pooled = np.where(occupied, ss, 0.0).sum(-1, keepdims=True)
  with np.errstate(invalid='ignore', divide='ignore'):
    global_sd = np.maximum(
        np.where(df > 0, np.sqrt(pooled / np.maximum(df, 1)), np.nan),
        SD_FLOOR)
    if variance == 'per_example':
      sd = np.where(count >= 2, np.sqrt(ss / np.maximum(count - 1, 1)),
                    global_sd)
    else:
      sd = np.broadcast_to(global_sd, count.shape)
  sd = np.where(occupied, np.maximum(sd, SD_FLOOR), np.nan)
  mu = np.where(occupied, moments.mean, np.nan)
  return mu, sd, global_sd[..., 0]


@dataclasses.dataclass(frozen=True)
class Gaussians:
  """LiRA's per-example Gaussians over all k trials ([n] arrays; μ and σ are
  NaN where a side has no trials), with the two global σ (NaN where no
  example has two trials on that side) and the variance variant."""
  k_in: np.ndarray
  mu_in: np.ndarray
  sd_in: np.ndarray
  k_out: np.ndarray
  mu_out: np.ndarray
  sd_out: np.ndarray
  global_sd_in: float
  global_sd_out: float
  variance: str


def moments(confidence, masks):
  """Both sides' sufficient statistics over all k trials (one pass over
  the values, a block of examples at a time), for fit and
  membership_eval.evaluate to share."""
  return _moments(*_check(confidence, masks))


def fit(confidence, masks, variance='per_example', sides=None):
  """The in and out Gaussians of every example over all k trials.

  Args:
    confidence: [k, n] φ_t(i) (any float dtype; float64 inside).
    masks: bool [k, n], True where trial t trained on example i.
    variance: 'per_example' or 'global' (module docstring).
    sides: moments(confidence, masks) when the caller has them.

  Returns:
    Gaussians.
  """
  _choice(variance, VARIANCES, 'variance')
  confidence, masks = _check(confidence, masks)
  inside, outside = sides or _moments(confidence, masks)
  mu_in, sd_in, global_in = _gaussian(inside, variance)
  mu_out, sd_out, global_out = _gaussian(outside, variance)
  return Gaussians(k_in=inside.count, mu_in=mu_in, sd_in=sd_in,
                   k_out=outside.count, mu_out=mu_out, sd_out=sd_out,
                   global_sd_in=float(global_in),
                   global_sd_out=float(global_out),
                   variance=variance)


# --------------------------------------------------------------------------
# Scores


_ERFC = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
         0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def _log_erfc(x):
  """log erfc(x), vectorised (Numerical Recipes' erfcc: relative error of
  erfc below 1.2e-7 for every x; no overflow in the far tail)."""
  a = np.abs(x)
  t = 1.0 / (1.0 + 0.5 * a)
  poly = np.zeros_like(t)
  for c in _ERFC[:0:-1]:
    poly = (poly + c) * t
  log_tail = np.log(t) - a * a + _ERFC[0] + poly  # log erfc(|x|)
  return np.where(x >= 0, log_tail,
                  math.log(2.0) + np.log1p(-0.5 * np.exp(log_tail)))


def _log_normal_tail(z):
  """log(1 - Φ(z))."""
  return math.log(0.5) + _log_erfc(z / math.sqrt(2.0))


def _scores(x, member, inside, outside, variance, attack):
  """Λ [b, n] of targets with φ x [b, n] and masks `member` [b, n], each
  fitted on the trials other than itself."""
  mu_out, sd_out, _ = _gaussian(_leave_out(outside, x, ~member), variance)
  with np.errstate(invalid='ignore', over='ignore'):
    z_out = (x - mu_out) / sd_out
    if attack == 'offline':
      return -_log_normal_tail(z_out)
    mu_in, sd_in, _ = _gaussian(_leave_out(inside, x, member), variance)
    z_in = (x - mu_in) / sd_in
    return np.log(sd_out / sd_in) - 0.5 * z_in**2 + 0.5 * z_out**2


def target_scores(confidence, masks, trial, variance='per_example',
                  attack='online'):
  """Λ of target trial `trial` on every example, the other k - 1 trials its
  shadows (module docstring).

  Args:
    confidence: [k, n] φ.
    masks: bool [k, n].
    trial: the target's index, 0 <= trial < k.
    variance: 'per_example' or 'global'.
    attack: 'online' or 'offline'.

  Returns:
    float64 [n]; NaN where a side needed is empty without the target.
  """
  _choice(variance, VARIANCES, 'variance')
  _choice(attack, ATTACKS, 'attack')
  confidence, masks = _check(confidence, masks)
  k = confidence.shape[0]
  if not (isinstance(trial, (int, np.integer)) and 0 <= trial < k):
    raise ValueError(f'trial={trial!r}: choose a trial index in 0..{k - 1}.')
  inside, outside = _moments(confidence, masks)
  x = confidence[trial].astype(np.float64)[None]
  return _scores(x, masks[trial][None], inside, outside, variance, attack)[0]


@dataclasses.dataclass(frozen=True)
class ExampleScores:
  """How exposed each example is to membership inference, [n] each (NaN
  where a side has no trials): separation (μ_in - μ_out) /
  sqrt((σ_in² + σ_out²) / 2) and auc, P(φ_in > φ_out) + ½ P(=) over its
  trial pairs."""
  separation: np.ndarray
  auc: np.ndarray
  k_in: np.ndarray
  k_out: np.ndarray
  variance: str


def per_example_scores(confidence, masks, variance='per_example',
                       gaussians=None):
  """Per-example separation and Mann–Whitney AUC over all k trials.

  Args:
    confidence: [k, n] φ.
    masks: bool [k, n].
    variance: the σ of the separation, 'per_example' or 'global'.
    gaussians: fit(confidence, masks, variance) when the caller has it.

  Returns:
    ExampleScores.
  """
  if gaussians is None:
    gaussians = fit(confidence, masks, variance)
  confidence, masks = _check(confidence, masks)
  with np.errstate(invalid='ignore'):
    separation = (gaussians.mu_in - gaussians.mu_out) / np.sqrt(
        (gaussians.sd_in**2 + gaussians.sd_out**2) / 2)
  k, n = confidence.shape
  auc = np.full(n, np.nan)
  width = max(1, _CHUNK_VALUES // max(k, 1))
  for start in range(0, n, width):
    columns = slice(start, start + width)
    member = np.asarray(masks[:, columns], bool)
    values = np.asarray(confidence[:, columns])
    if values.dtype == np.float16 and not np.isnan(values).any():
      auc[columns] = ranks.column_auc_float16(values, member)
    else:
      auc[columns] = ranks.rank_auc(values.T.astype(np.float64), member.T,
                                    ~member.T)
  return ExampleScores(separation=separation, auc=auc, k_in=gaussians.k_in,
                       k_out=gaussians.k_out, variance=variance)

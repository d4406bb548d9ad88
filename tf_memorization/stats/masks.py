"""Subset masks: which training examples each trial trains on.

Two designs, both deterministic so that any worker can build trial t alone:

* ``independent`` (Feldman & Zhang 2020): trial t trains on a uniform random
  subset of exactly ``round(subset_ratio * n)`` examples, drawn from a generator
  seeded by ``(seed, trial_index)``. Trials are independent of each other and of
  ``num_trials``, so a run can be extended with more trials later.
* ``balanced`` (as in the LiRA code of Carlini et al. 2022): every example is in
  exactly ``round(subset_ratio * num_trials)`` of the ``num_trials`` trials, so
  every example has in- and out-trials. Trial sizes vary around the ratio. The
  whole design is a function of ``(seed, num_trials)``.
"""

import dataclasses
import functools

import gin
import numpy as np

DESIGNS = ('independent', 'balanced')
# Examples are processed in chunks so that the balanced design never holds an
# [n, num_trials] float array (CIFAR-100 at 4,000 trials would need 1.6 GB).
_BALANCED_CHUNK = 4096


def round_half_up(x):
  """Rounds half up (Python's round() rounds half to even)."""
  return int(np.floor(x + 0.5))


def _check(num_examples, subset_ratio, num_trials=None):
  if num_examples < 1:
    raise ValueError(f'num_examples must be positive, got {num_examples}.')
  if not 0.0 < subset_ratio < 1.0:
    raise ValueError(
        f'subset_ratio must be in (0, 1), got {subset_ratio}: every example '
        'needs trials that include it and trials that leave it out.')
  if num_trials is not None and num_trials < 2:
    raise ValueError(f'num_trials must be at least 2, got {num_trials}.')


def independent_mask(num_examples, subset_ratio, seed, trial_index):
  """The paper's design: a uniform subset of round(subset_ratio * n) examples."""
  _check(num_examples, subset_ratio)
  size = round_half_up(subset_ratio * num_examples)
  rng = np.random.default_rng([seed, trial_index, 0x5B5E7])
  mask = np.zeros(num_examples, dtype=bool)
  mask[rng.choice(num_examples, size=size, replace=False)] = True
  return mask


@functools.lru_cache(maxsize=4)
def _balanced_packed(num_examples, num_trials, subset_ratio, seed):
  """All trials of the balanced design, bit-packed along examples: [k, n/8]."""
  _check(num_examples, subset_ratio, num_trials)
  per_example = round_half_up(subset_ratio * num_trials)
  if not 0 < per_example < num_trials:
    raise ValueError(
        f'subset_ratio={subset_ratio} with num_trials={num_trials} puts every '
        f'example in {per_example} trials; it must be between 1 and '
        f'{num_trials - 1}. Use more trials.')
  packed_chunks = []
  for chunk, start in enumerate(range(0, num_examples, _BALANCED_CHUNK)):
    stop = min(start + _BALANCED_CHUNK, num_examples)
    rng = np.random.default_rng([seed, num_trials, chunk, 0xBA1])
    keys = rng.random((stop - start, num_trials), dtype=np.float32)
    # Each example is in the trials holding its `per_example` smallest keys.
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
    chunk_mask = (ranks < per_example).T  # [k, chunk]
    packed_chunks.append(chunk_mask)
  return np.packbits(np.concatenate(packed_chunks, axis=1), axis=1)


def balanced_mask(num_examples, num_trials, subset_ratio, seed, trial_index):
  """Balanced design: each example in exactly round(p * k) of the k trials."""
  if not 0 <= trial_index < num_trials:
    raise ValueError(
        f'trial_index {trial_index} is outside [0, num_trials={num_trials}).')
  packed = _balanced_packed(num_examples, num_trials, float(subset_ratio), seed)
  return np.unpackbits(packed[trial_index], count=num_examples).astype(bool)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SubsetDesign:
  """How trials choose their training subsets (a gin configurable).

  Attributes:
    num_trials: k, the number of models trained on random subsets.
    subset_ratio: m / n, the fraction of the training set in each subset.
    design: 'independent' (the paper) or 'balanced'.
    seed: base seed; trial t's mask and training seed derive from (seed, t).
  """
  num_trials: int = gin.REQUIRED
  subset_ratio: float = 0.7
  design: str = 'independent'
  seed: int = 0

  def __post_init__(self):
    if self.design not in DESIGNS:
      raise ValueError(
          f'SubsetDesign.design must be one of {DESIGNS}, got {self.design!r}.')
    if not isinstance(self.num_trials, int) or self.num_trials < 2:
      raise ValueError(
          f'SubsetDesign.num_trials must be an integer >= 2, got '
          f'{self.num_trials!r}: memorization needs trials with and without '
          'each example.')
    if isinstance(self.subset_ratio, bool) or not isinstance(
        self.subset_ratio, (int, float)) or not 0.0 < self.subset_ratio < 1.0:
      raise ValueError(
          f'SubsetDesign.subset_ratio must be in (0, 1), got '
          f'{self.subset_ratio!r}.')
    if isinstance(self.seed, bool) or not isinstance(self.seed, int):
      raise ValueError(f'SubsetDesign.seed must be an integer, got '
                       f'{self.seed!r}.')

  def mask(self, num_examples, trial_index):
    """Boolean [num_examples] mask of trial `trial_index`'s training subset."""
    if self.design == 'independent':
      return independent_mask(num_examples, self.subset_ratio, self.seed,
                              trial_index)
    return balanced_mask(num_examples, self.num_trials, self.subset_ratio,
                         self.seed, trial_index)

  def trial_seed(self, trial_index):
    """A 31-bit seed for trial t's initialisation, shuffling and augmentation."""
    rng = np.random.default_rng([self.seed, trial_index, 0x7EED])
    return int(rng.integers(0, 2**31 - 1))

  def fingerprint_fields(self):
    """The fields that decide trial t's mask and seed.

    The independent design does not depend on num_trials, so a run may be
    extended with more trials; the balanced design does.
    """
    fields = {'design': self.design, 'subset_ratio': float(self.subset_ratio),
              'seed': int(self.seed)}
    if self.design == 'balanced':
      fields['num_trials'] = int(self.num_trials)
    return fields

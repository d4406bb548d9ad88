"""Every other per-example score from the same trials: one training budget.

The trials that estimate memorization also answer what other tools train
their own models for. From the records (format 3), with no retraining:

* **Membership inference** (LiRA, Carlini et al. 2022; membership.py,
  membership_eval.py): per example, Gaussians of the log-odds of its label
  over the trials that trained on it and those that did not; each of up to
  `membership_targets` trials in turn is the target model, the others its
  shadows. Written: membership.csv (per example: the in/out Gaussians, the
  separation d' and the per-example AUC, P(φ_in > φ_out)), membership.json
  (AUC, TPR at 0.1% and 1% FPR, per attack), membership_roc.png, and the
  correlation of the per-example scores with memorization.
* **How cheaply memorization can be predicted** (proxies.py): the
  learning-dynamics proxies recorded in training (dynamics.py) and the
  held-out scores, from the first 1, 2, 4, 8, 16 trials, against the
  memorization from all k: proxies.csv / .json / .png.
* **Held-out class probabilities** (records with TrialTrainer.
  record_heldout_probs): heldout_pred_probs.npz, `pred_probs` [n, C] in the
  layout label-issue tools (cleanlab) take, with `labels` (those trained
  on) and `ids`; with label noise, how well its self-confidence finds the
  flipped labels against memorization (label_issues.json).

Each part is 'auto' by default: computed when every record holds its fields,
skipped with one log line otherwise. Asked for explicitly (True), a record
without them is one error naming the file.
"""

import os
import time

import gin
import numpy as np

from tf_memorization.core import config
from tf_memorization.core import errors
from tf_memorization.core import progress
from tf_memorization.core import storage
from tf_memorization.reporting import estimate_figures
from tf_memorization.stats import membership
from tf_memorization.stats import membership_eval
from tf_memorization.stats import proxies as proxies_lib
from tf_memorization.stats import ranks
from tf_memorization.workdir import estimates
from tf_memorization.workdir import imported
from tf_memorization.workdir import loading
from tf_memorization.workdir import records

config.not_fingerprinted('PerExampleScores.')

MEMBERSHIP = estimates.MEMBERSHIP
MEMBERSHIP_PNG = estimates.MEMBERSHIP_PNG
PROXIES = estimates.PROXIES
PROXIES_PNG = estimates.PROXIES_PNG
PRED_PROBS_NPZ = estimates.PRED_PROBS_NPZ
LABEL_ISSUES = estimates.LABEL_ISSUES
MEMBERSHIP_HEADER = ('index', 'id', 'label', 'memorization', 'lira_auc',
                     'lira_separation', 'mu_in', 'sd_in', 'k_in', 'mu_out',
                     'sd_out', 'k_out')
PROXIES_HEADER = ('proxy', 'trials', 'examples', 'spearman', 'pearson',
                  'cosine')
# The attacks evaluated: (name, attack, variance).
ATTACKS = (('online', 'online', 'per_example'),
           ('online, global variance', 'online', 'global'),
           ('offline', 'offline', 'per_example'))
_CHOICES = ('auto', True, False)


@gin.configurable
class PerExampleScores:
  """Which of the other per-example scores the estimator computes.

  Args:
    membership: LiRA membership inference: 'auto' (when every record holds
      the log-odds, records.LOGODDS_FIELDS), True (an error otherwise),
      False; or 'prob' / 'margin' to compute it from the float16
      probabilities (saturated above log-odds 7.6) or the margins of older
      records.
    membership_targets: trials evaluated as the target model, evenly
      spread (all when there are fewer).
    proxies: the learning-dynamics proxy table: 'auto', True or False.
    proxy_trials: the numbers of trials the proxies are taken from.
    heldout_probs: heldout_pred_probs.npz: 'auto', True or False.
  """

  def __init__(self, membership='auto', membership_targets=64,
               proxies='auto', proxy_trials=(1, 2, 4, 8, 16),
               heldout_probs='auto'):
    name = 'PerExampleScores.'
    for key, value, allowed in (
        ('membership', membership, _CHOICES + ('prob', 'margin')),
        ('proxies', proxies, _CHOICES), ('heldout_probs', heldout_probs,
                                         _CHOICES)):
      if not isinstance(value, (bool, str)):  # 0 == False, 1 == True
        raise errors.ConfigError(
            f'{name}{key} = {value!r}: choose one of {allowed}.')
      errors.choice(name + key, value, allowed)
    self.membership = membership
    self.proxies = proxies
    self.heldout_probs = heldout_probs
    self.membership_targets = errors.integer(
        name + 'membership_targets', membership_targets, minimum=1)
    self.proxy_trials = errors.sequence(
        name + 'proxy_trials', proxy_trials,
        lambda n, v: errors.integer(n, v, minimum=1))

  def load_fields(self):
    """(fields, if_present) the estimator's loading.load needs for these."""
    required, optional = [], []
    if self.membership is True:
      required.append('train_logodds')
    elif self.membership == 'auto':
      optional.append('train_logodds')
    target = required if self.heldout_probs is True else optional
    if self.heldout_probs:
      target.append(records.HELDOUT_PROBS)
    return tuple(required), tuple(optional)

  @property
  def margins(self):
    return self.membership == 'margin'


def missing_fix(field):
  """What to do about a record without `field`, naming its binding."""
  binding = {'train_logodds': 'membership',
             records.HELDOUT_PROBS: 'heldout_probs'}.get(field, 'proxies')
  return ('Retrain into a new --workdir with this version of '
          f'tf_memorization, or bind PerExampleScores.{binding} = False (or '
          "'auto').")


def compute(settings, workdir, loaded, mem, output_dir, log,
            diverged='refuse', stages=None):
  """The parts `settings` asks for; summary.json's entries of them
  (`stages`: a progress.Stages timing each part)."""
  stages = stages or progress.Stages({})
  summary = {}
  if 'train' not in loaded.predicted:
    log('Membership inference and proxies: skipped, the records hold no '
        'predictions on the training examples.')
    return summary
  with stages('membership'):
    result = _membership(settings, loaded, mem, output_dir, log)
  if result:
    summary[MEMBERSHIP] = result
  with stages('proxies'):
    result = _proxies(settings, workdir, loaded, mem, output_dir, log,
                      diverged)
  if result:
    summary[PROXIES] = result
  result = _heldout_probs(settings, loaded, mem, output_dir, log)
  if result:
    summary[LABEL_ISSUES] = result
  return summary


def _skipped(log, what, loaded, field):
  count, path = loaded.missing_fields[field]
  source = imported.source(loaded)
  if source is not None:
    log(f'{what}: skipped, the records imported from {source.get("source")} '
        f'hold no {field} (e.g. {path}: margins alone do not give it).')
    return
  log(f'{what}: skipped, {count} of the records lack {field} (e.g. {path}: '
      'written before record format 3, or with it turned off).')


def _confidence(settings, loaded, log):
  """The [k, n] log-odds LiRA is computed on, or None (skipped)."""
  if settings.membership is False:
    return None
  if settings.membership == 'prob':
    return membership.from_probabilities(loaded.train_prob)
  if settings.membership == 'margin':
    return membership.from_margins(loaded.train_margin)
  if 'train_logodds' not in loaded.extra:
    _skipped(log, 'Membership inference', loaded, 'train_logodds')
    return None
  return loaded.extra['train_logodds']


def _per_example(confidence, masks, sides):
  """membership.fit and per_example_scores of every example (`sides`:
  membership.moments, shared with the attacks' evaluation)."""
  fitted = membership.fit(confidence, masks, sides=sides)
  scored = membership.per_example_scores(confidence, masks, gaussians=fitted)
  out = {name: np.asarray(getattr(fitted, name), np.float64) for name in
         ('mu_in', 'sd_in', 'k_in', 'mu_out', 'sd_out', 'k_out')}
  out['auc'], out['separation'] = scored.auc, scored.separation
  return out


def _membership(settings, loaded, mem, output_dir, log):
  confidence = _confidence(settings, loaded, log)
  if confidence is None:
    return None
  k = loaded.num_trials
  targets = np.unique(np.linspace(0, k - 1, min(k, settings.membership_targets))
                      .round().astype(np.int64))
  start = time.perf_counter()
  sides = membership.moments(confidence, loaded.masks)
  per = _per_example(confidence, loaded.masks, sides)
  log(f'  membership: per-example Gaussians and AUC of {len(per["auc"])} '
      f'examples over {k} trials ({time.perf_counter() - start:.0f}s)')
  evaluations, attacks = {}, {}
  for done, (name, attack, variance) in enumerate(ATTACKS, 1):
    evaluation = membership_eval.evaluate(confidence, loaded.masks, variance,
                                          attack, trials=targets, sides=sides)
    log(f'  membership: attack {done}/{len(ATTACKS)} ({name}) on '
        f'{len(targets)} target trials ({time.perf_counter() - start:.0f}s)')
    evaluations[name] = evaluation
    attacks[name] = {
        'auc': evaluation.auc, 'accuracy': evaluation.accuracy,
        'tpr_at_0.1%_fpr': evaluation.tpr_at.get(0.001),
        'tpr_at_1%_fpr': evaluation.tpr_at.get(0.01),
        'target_auc_mean': evaluation.target_auc_mean,
        'target_auc_sd': evaluation.target_auc_sd,
        'scored': evaluation.num_scored}
  memorized = mem.memorization >= 0.25
  defined = np.isfinite(mem.memorization) & np.isfinite(per['auc'])
  summary = {
      'source': ('train_logodds' if settings.membership in ('auto', True)
                 else f'train_{settings.membership}'),
      'targets': len(targets), 'attacks': attacks,
      'memorization_spearman': ranks.spearman(per['auc'],
                                              mem.memorization),
      'memorization_pearson': ranks.pearson(per['auc'],
                                            mem.memorization),
      'mean_example_auc_memorized': _mean(per['auc'][defined & memorized]),
      'mean_example_auc_others': _mean(per['auc'][defined & ~memorized]),
  }
  cells = estimates.cells
  storage.atomic_replace(
      os.path.join(output_dir, f'{MEMBERSHIP}.csv'),
      estimates.cells_bytes(MEMBERSHIP_HEADER, [
          cells(np.arange(len(mem.memorization))), cells(loaded.train_ids),
          cells(loaded.train_labels), cells(mem.memorization),
          cells(per['auc']), cells(per['separation'])] + [
              cells(per[name]) for name in MEMBERSHIP_HEADER[6:]]))
  storage.atomic_write_text(os.path.join(output_dir, f'{MEMBERSHIP}.json'),
                            estimates.json_text(summary))
  estimate_figures.membership_roc(os.path.join(output_dir, MEMBERSHIP_PNG),
                                  evaluations)
  online = attacks['online']
  log(f'Membership inference (LiRA, {len(targets)} target trials): AUC '
      f'{online["auc"]:.3f}, TPR {_percent(online["tpr_at_1%_fpr"])} at 1% '
      f'FPR; per-example AUC vs memorization Spearman '
      f'{summary["memorization_spearman"]:.3f}.')
  return summary


def _proxies(settings, workdir, loaded, mem, output_dir, log, diverged):
  if settings.proxies is False:
    return None
  counts = [c for c in settings.proxy_trials if c <= loaded.num_trials]
  first = loaded.trial_indices[:max(counts or [1])]
  fields = records.DYNAMICS_FIELDS
  arrays = {}
  reason = imported.skipped(
      loaded, 'Learning-dynamics proxies', "they are recorded by this "
      "package's trainer while it trains")
  if reason:
    log(reason)
  else:
    found = loading.load(
        workdir, margins=False, trial_indices=list(first),
        diverged=diverged, missing_fix=missing_fix,
        **({'fields': fields} if settings.proxies is True
           else {'if_present': fields}))
    if all(f in found.extra for f in fields):
      arrays = {f.removeprefix('train_'): found.extra[f].astype(np.float32)
                for f in fields}
    else:
      _skipped(log, 'Learning-dynamics proxies', found,
               next(f for f in fields if f in found.missing_fields))
  # Only the first trials are read (the rows of the largest count).
  first_rows = slice(0, max(counts or [1]))
  rows = proxies_lib.prediction_table(
      mem.memorization, np.asarray(loaded.masks[first_rows], bool), arrays,
      np.asarray(loaded.train_correct[first_rows], bool),
      np.asarray(loaded.train_prob[first_rows]), tuple(counts),
      all_trials=loaded.num_trials)
  line = proxies_lib.summary_line(rows)
  estimates.write_table(output_dir, PROXIES, PROXIES_HEADER,
                        [[r[h] for h in PROXIES_HEADER] for r in rows],
                        {'rows': rows, 'line': line,
                         'dynamics_recorded': bool(arrays)})
  estimate_figures.proxies(os.path.join(output_dir, PROXIES_PNG), rows)
  log(line)
  return {'line': line, 'dynamics_recorded': bool(arrays), 'rows': rows}


def _heldout_probs(settings, loaded, mem, output_dir, log):
  if settings.heldout_probs is False:
    return None
  if loaded.heldout_prob_sum is None:  # opt-in when training: no line
    return None
  pred_probs = proxies_lib.heldout_class_probabilities(
      loaded.heldout_prob_sum, loaded.heldout_count)
  storage.atomic_replace(
      os.path.join(output_dir, PRED_PROBS_NPZ), storage.npz_bytes({
          'pred_probs': pred_probs, 'labels': loaded.train_labels,
          'ids': loaded.train_ids, 'heldout_trials': loaded.heldout_count}))
  summary = {'file': PRED_PROBS_NPZ,
             'examples': int(np.isfinite(pred_probs[:, 0]).sum())}
  flipped = loaded.train_labels != loaded.original_train_labels
  if flipped.any():
    issue = proxies_lib.label_issue_scores(pred_probs, loaded.train_labels)
    detectors = {
        'self_confidence': proxies_lib.detection_auc(
            issue['self_confidence'], flipped),
        'normalized_margin': proxies_lib.detection_auc(
            issue['normalized_margin'], flipped),
        'memorization': proxies_lib.detection_auc(
            mem.memorization, flipped, lower_is_issue=False)}
    summary['flipped'] = int(flipped.sum())
    summary['detectors'] = {
        name: {'auc': d.auc, 'average_precision': d.average_precision}
        for name, d in detectors.items()}
    log('Finding the flipped labels: held-out self-confidence AUC '
        f'{detectors["self_confidence"].auc:.3f}, memorization AUC '
        f'{detectors["memorization"].auc:.3f}.')
  storage.atomic_write_text(os.path.join(output_dir, f'{LABEL_ISSUES}.json'),
                            estimates.json_text(summary))
  return summary


def _mean(values):
  return float(np.mean(values)) if len(values) else None


def _percent(value):
  return 'n/a' if value is None or not np.isfinite(value) else (
      f'{100 * value:.2f}%')

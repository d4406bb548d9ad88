"""How far to trust the estimates: controlled sets, a null, convergence.

From one blocked pass over the views of the trials (views.py):

- **Controlled sets.** The paper's raw sets (pairs with influence >= 0.15
  of a training example with memorization >= 0.25 and the same label;
  examples with memorization >= 0.25) beside the sets whose false discovery
  rate is controlled at `Estimator.pair_fdr` / `memorization_fdr`
  (selection.py: the tests, their null H0: value <= delta, BH or BY).
  The pairs tested (the family) are fixed before the influence is looked
  at: every pair of a training example with estimated memorization >= the
  threshold and (same_label) a test example of its label; the memorization
  comes from the training examples' own correctness, not from the test
  predictions the influence test uses.
- **A null from the same records.** 'null' views give each trial another
  trial's test predictions (a derangement): every influence is then 0 and
  the pairs over the thresholds are false. Their count, averaged over
  `null_permutations`, estimates how many of the raw pairs are there by
  chance: estimated false discovery proportion = null count / raw count.
  For memorization the masks are permuted instead (each trial's
  correctness against another trial's subset). Each null costs one matrix
  product, or a share `null_sample` of one (every 1/null_sample-th of the
  blocks of training examples that hold pairs of the family, so a family
  of any size is covered; the count is scaled to the whole family). The null
  keeps every trial's accuracy and the correlation between test examples
  within a trial; it breaks the link between a trial's overall quality and its
  subset, so it can undercount slightly when better trials are in part
  better because of their subset.
- **Convergence with k.** The nested views k/8, k/4, k/2 against all k:
  Spearman of memorization, counts over the thresholds, Jaccard of the raw
  and controlled pair sets with those of all k.
- **Split halves.** The even against the odd trials, raw and controlled.
"""

import dataclasses

import numpy as np

from tf_memorization.stats import ranks
from tf_memorization.stats import scores
from tf_memorization.stats import selection
from tf_memorization.stats import views


@dataclasses.dataclass
class Assessment:
  """The estimator's pass: influence of all trials and what to trust."""
  influence: scores.InfluenceResult     # all k, as scores.influence
  pairs: views.ViewPairs                # all k: raw pairs and tests
  memorization_tests: dict              # selection.memorization_tests
  summary: dict                         # summary.json's 'trust' section
  convergence: list                     # rows of the convergence table


def _memorization(masks, correct):
  return scores.memorization(masks, correct).memorization


def _pairs_figures(view):
  return {'trials': view.num_trials, 'family': view.family,
          'testable': view.num_tests,
          'tested': int(len(view.pvalue)), 'raw': int(len(view.raw_train)),
          'controlled': int(view.selected.sum())}


def assess(loaded, settings, mem, test_values, dense_path=None,
           progress=None, seed=0):
  """The influence pass over every view and the figures built from it.

  Args:
    loaded: loading.Records.
    settings: the Estimator (thresholds, levels, nulls, block size).
    mem: scores.Memorization of all the trials.
    test_values: [k, n_test] the values influence is computed on.
    dense_path, progress: as in scores.influence.
    seed: of the null's permutations.

  Returns:
    An Assessment.
  """
  masks, correct = loaded.masks, loaded.train_correct
  k = masks.shape[0]
  s = settings
  rows = {'all': np.arange(k)}
  nested = views.nested_rows(k)
  if s.convergence and k >= 8:
    rows.update({name: nested[name] for name in ('k/8', 'k/4', 'k/2')})
  if s.split_half and k >= 4:
    rows.update({name: nested[name] for name in ('k/2', 'odd')})
  mem_delta = (s.memorization_threshold if s.memorization_null is None
               else s.memorization_null)
  # Each view's memorization and its tests from one count of its trials
  # (strided views of the records, not copies).
  mem_tests = {name: selection.memorization_tests(
      masks[views.as_index(r)], correct[views.as_index(r)], mem_delta,
      s.memorization_fdr, s.fdr_method) for name, r in rows.items()}
  view_mem = {name: (mem.memorization if name == 'all'
                     else mem_tests[name]['estimate'])
              for name in rows}
  specs = [views.Spec(name, r, view_mem[name]) for name, r in rows.items()]
  perms = []
  for p in range(s.null_permutations if k >= 2 else 0):
    perms.append(selection.derangement(k, seed + p))
    specs.append(views.Spec(f'null{p}', np.arange(k), mem.memorization,
                            perms[-1], every=max(1, round(1 / s.null_sample))))
  infl, results = views.influence_views(
      masks, test_values, loaded.train_labels, loaded.test_labels, specs,
      topk=s.topk, influence_threshold=s.influence_threshold,
      memorization_threshold=s.memorization_threshold,
      same_label=s.same_label, delta=s.pair_null, level=s.pair_fdr,
      method=s.fdr_method, block_size=s.block_size, dense_path=dense_path,
      progress=progress, scope=s.influence_scope,
      procedure=s.pair_procedure)
  full = results['all']
  raw_memorized = int(np.sum(mem.memorization >= s.memorization_threshold))
  summary = {
      'pairs': {**_pairs_figures(full), 'level': s.pair_fdr,
                'method': s.fdr_method, 'procedure': s.pair_procedure,
                'null_influence': (s.influence_threshold if s.pair_null is None
                                   else s.pair_null),
                'controlled_in_raw': len(np.intersect1d(
                    full.controlled_keys(), full.raw_keys(),
                    assume_unique=True))},
      'memorized': {'raw': raw_memorized,
                    'controlled': int(mem_tests['all']['selected'].sum()),
                    'tested': mem_tests['all']['num_tests'],
                    'level': s.memorization_fdr, 'method': s.fdr_method,
                    'null_memorization': mem_delta},
  }
  if perms:
    null_pairs = [results[f'null{p}'] for p in range(len(perms))]
    null_mem = []
    for perm in perms:
      value = _memorization(masks[perm], correct)
      null_mem.append(int(np.sum(value >= s.memorization_threshold)))
    # A null covering a share of the family (Estimator.null_sample) counts
    # for the whole of it.
    raw_null = float(np.mean([len(v.raw_train) / v.coverage
                              for v in null_pairs]))
    summary['null'] = {
        'permutations': len(perms),
        'family_covered': float(np.mean([v.coverage for v in null_pairs])),
        'raw_pairs': raw_null,
        'controlled_pairs': float(np.mean([v.selected.sum()
                                           for v in null_pairs])),
        'pairs_fdp': _ratio(raw_null, len(full.raw_train)),
        'raw_memorized': float(np.mean(null_mem)),
        'memorized_fdp': _ratio(float(np.mean(null_mem)), raw_memorized),
    }
  convergence = []
  if s.convergence and all(name in results for name in views.NESTED):
    full_raw, full_controlled = full.raw_keys(), full.controlled_keys()
    for name in views.NESTED:
      view = results[name]
      pearson, spearman = ranks.correlations(view_mem[name],
                                             mem.memorization)
      del pearson
      convergence.append({
          'view': name, 'trials': view.num_trials,
          'memorization_spearman': spearman,
          'memorized_raw': int(np.sum(view_mem[name]
                                      >= s.memorization_threshold)),
          'memorized_controlled': int(mem_tests[name]['selected'].sum()),
          'pairs_raw': int(len(view.raw_train)),
          'pairs_controlled': int(view.selected.sum()),
          'pairs_raw_jaccard': scores.jaccard_keys(view.raw_keys(),
                                                   full_raw),
          'pairs_controlled_jaccard': _jaccard(view.controlled_keys(),
                                               full_controlled),
      })
  summary['convergence'] = convergence
  if 'odd' in results:
    even, odd = results['k/2'], results['odd']
    pearson, spearman = ranks.correlations(view_mem['k/2'],
                                           view_mem['odd'])
    summary['split_half'] = {
        'trials_per_half': [even.num_trials, odd.num_trials],
        'memorization_pearson': pearson, 'memorization_spearman': spearman,
        'pairs_per_half': [len(even.raw_train), len(odd.raw_train)],
        'pairs_jaccard': scores.jaccard_keys(even.raw_keys(),
                                             odd.raw_keys()),
        'controlled_pairs_per_half': [int(even.selected.sum()),
                                      int(odd.selected.sum())],
        'controlled_pairs_jaccard': _jaccard(even.controlled_keys(),
                                             odd.controlled_keys()),
        'memorized_jaccard': _jaccard(
            np.flatnonzero(view_mem['k/2'] >= s.memorization_threshold),
            np.flatnonzero(view_mem['odd'] >= s.memorization_threshold)),
        'controlled_memorized_jaccard': _jaccard(
            np.flatnonzero(mem_tests['k/2']['selected']),
            np.flatnonzero(mem_tests['odd']['selected'])),
    }
  else:
    summary['split_half'] = None
  return Assessment(influence=infl, pairs=full,
                    memorization_tests=mem_tests['all'], summary=summary,
                    convergence=convergence)


def _jaccard(a, b):
  """scores.jaccard_keys of two key arrays, but None when both are empty
  (no agreement to measure)."""
  return scores.jaccard_keys(a, b) if len(a) or len(b) else None


def _ratio(numerator, denominator):
  return min(1.0, numerator / denominator) if denominator else None


def pair_table(loaded, pairs):
  """The raw and the controlled pairs together, each once, the highest
  influence first (ties by test index): {column: array}."""
  chosen = pairs.selected
  raw_keys = pairs.raw_train * len(loaded.test_labels) + pairs.raw_test
  tested_keys = pairs.test_train * len(loaded.test_labels) + pairs.test_test
  # Controlled pairs under the influence threshold (pair_null below it) are
  # not among the raw pairs: their influence and stderr computed here.
  extra = chosen & ~np.isin(tested_keys, raw_keys)
  value, stderr = scores.pair_statistics(
      loaded.masks, np.asarray(loaded.test_correct, np.float32),
      pairs.test_train[extra], pairs.test_test[extra])
  train = np.concatenate([pairs.raw_train, pairs.test_train[extra]])
  test = np.concatenate([pairs.raw_test, pairs.test_test[extra]])
  keys = train * len(loaded.test_labels) + test
  # The row of each tested pair among the tested ones (distinct keys).
  found = np.isin(keys, tested_keys)
  order = np.argsort(tested_keys)
  where = order[np.searchsorted(tested_keys, keys[found], sorter=order)]
  pvalue = np.full(len(keys), np.nan)
  qvalue = np.full(len(keys), np.nan)
  controlled = np.zeros(len(keys), np.int64)
  pvalue[found] = pairs.pvalue[where]
  qvalue[found] = pairs.qvalue[where]
  controlled[found] = chosen[where]
  table = {'train': train, 'test': test,
           'influence': np.concatenate([pairs.raw_influence, value]),
           'stderr': np.concatenate([pairs.raw_stderr, stderr]),
           'pvalue': pvalue, 'qvalue': qvalue,
           'raw': np.r_[np.ones(len(pairs.raw_train), np.int64),
                        np.zeros(int(extra.sum()), np.int64)],
           'controlled': controlled}
  order = np.lexsort((table['test'], -table['influence']))
  return {name: column[order] for name, column in table.items()}

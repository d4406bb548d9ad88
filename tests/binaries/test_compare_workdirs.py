"""tools/compare_workdirs.py: what it ignores, and that it sees a change."""

import json
import os
import shutil
import sys

import numpy as np

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'tools'))
import compare_workdirs  # pylint: disable=g-import-not-at-top,wrong-import-position


def _record(path, written_at, prob, seconds=1.0):
  meta = {'trial_index': 0, 'written_at': written_at, 'host': written_at,
          'checksum': written_at, 'seed': 7,
          'metrics': {'test_accuracy': 0.5, 'train_seconds': seconds}}
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez(path, train_prob=np.array(prob, np.float16),
           metadata=np.array(json.dumps(meta)))


def _workdir(root, written_at, prob=(0.5, 0.25), seconds=1.0, auc=0.9,
             need=317):
  _record(os.path.join(root, 'trials', 'trial_000000.npz'), written_at, prob,
          seconds)
  os.makedirs(os.path.join(root, 'estimates'))
  hours = f'~{seconds * need / 3600:.1f} more hours at {seconds:.1f} s per trial'
  with open(os.path.join(root, 'estimates', 'summary.json'), 'w') as f:
    json.dump({'workdir': root, 'timings': {'load_seconds': seconds},
               'label_noise': {'auc': auc},
               'experiments': {'removal': {'seconds': seconds}},
               'planner': {'seconds_per_trial': seconds,
                           'advice': f'Planner: {need} trials ({hours}).',
                           'rows': [{'trials': 8, 'training_hours': seconds,
                                     'more_training_hours': seconds}]}}, f)
  os.makedirs(os.path.join(root, 'report'))
  with open(os.path.join(root, 'report', 'index.html'), 'w') as f:
    f.write(f'<p class="note">4 trials, built {written_at} from '
            f'{root}/estimates.</p><td>{root}</td><p>{need} trials '
            f'({hours})</p><table><tr><th>trials</th><th>training hours</th>'
            f'</tr><tr><td class="num">8</td><td class="num">{seconds}</td>'
            '</tr></table>')


def _compare(a, b):
  lines = []
  return compare_workdirs.compare(a, b, log=lines.append), lines


def test_write_times_hosts_timings_hours_and_paths_are_ignored(tmp_path):
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  _workdir(a, '2026-01-01', seconds=1.0)
  _workdir(b, '2026-02-02', seconds=9.0)
  count, lines = _compare(a, b)
  assert count == 0, lines
  assert lines[-1] == '3 files compared, 0 differences.'


def test_a_changed_value_or_a_missing_file_is_a_difference(tmp_path):
  a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
  _workdir(a, '2026-01-01')
  _workdir(b, '2026-01-01', prob=(0.5, 0.375), auc=0.8)
  count, lines = _compare(a, b)
  assert count == 2, lines
  assert 'trials/trial_000000.npz: array train_prob differs' in lines
  assert 'estimates/summary.json: summary differs' in lines
  # The planner's advice beyond its hours is compared.
  c = str(tmp_path / 'c')
  _workdir(c, '2026-01-01', need=318)
  count, lines = _compare(a, c)
  assert lines == ['estimates/summary.json: summary differs',
                   'report/index.html: bytes differ',
                   '3 files compared, 2 differences.']
  shutil.rmtree(os.path.join(b, 'report'))
  count, lines = _compare(a, b)
  assert f'only in {a}: report/index.html' in lines

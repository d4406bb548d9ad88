"""core/progress.py: the ETA lines and the estimator's stage timings."""

import subprocess
import sys

import numpy as np
import pytest

from tf_memorization.core import progress


class _Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_eta_at_the_rate_so_far():
  clock = _Clock()
  p = progress.Progress(10, clock=clock)
  assert p.eta(0) == '?'
  clock.now += 30.0           # 3 units in 30 s: 7 left take 70 s
  assert p.eta(3) == '1m10s'
  assert progress.format_seconds(3725) == '1h02m05s'


def test_stages_time_each_stage_and_record_the_peak_memory():
  clock = _Clock()
  timings = {}
  stages = progress.Stages(timings, clock=clock)
  with stages('load'):
    clock.now += 2.5
  with stages('influence'):
    clock.now += 1.0
  assert timings['load_seconds'] == pytest.approx(2.5)
  assert timings['influence_seconds'] == pytest.approx(1.0)
  peaks = timings['peak_rss_mib']
  assert list(peaks) == ['load', 'influence']
  assert 0 < peaks['load'] <= peaks['influence']
  assert peaks['influence'] <= progress.peak_rss_mib() + 0.1  # rounded


_PEAK = """
import sys
sys.path.insert(0, {repo!r})
import numpy as np
from tf_memorization.core import progress
before = progress.peak_rss_mib()
block = np.ones(300 << 20, np.uint8)  # 300 MiB, every page touched
print(before, progress.peak_rss_mib())
"""


def test_the_peak_is_the_process_own_not_its_parent_s():
  """A fresh process started by this (large) one reports its own peak: it
  starts small and grows by what it touches."""
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  held = np.ones(400 << 20, np.uint8)  # the parent is large at the fork
  out = subprocess.run([sys.executable, '-c', _PEAK.format(repo=REPO)],
                       capture_output=True, text=True, check=True).stdout
  del held
  before, after = map(float, out.split())
  assert before < 300 < after
  assert after - before >= 290


def test_a_failing_stage_records_nothing():
  timings = {}
  stages = progress.Stages(timings)
  with pytest.raises(ValueError):
    with stages('membership'):
      raise ValueError('bad')
  assert timings == {}

"""core/progress.py: the ETA lines and the estimator's stage timings."""

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
  block = np.ones(64 << 20, np.uint8)  # 64 MiB touched: the peak grows
  with stages('influence'):
    clock.now += 1.0
  del block
  assert timings['load_seconds'] == pytest.approx(2.5)
  assert timings['influence_seconds'] == pytest.approx(1.0)
  peaks = timings['peak_rss_mib']
  assert list(peaks) == ['load', 'influence']
  assert peaks['influence'] >= peaks['load'] > 0
  assert peaks['influence'] >= 64  # the process held the block


def test_a_failing_stage_records_nothing():
  timings = {}
  stages = progress.Stages(timings)
  with pytest.raises(ValueError):
    with stages('membership'):
      raise ValueError('bad')
  assert timings == {}

"""Progress of long work: how much is done, how fast, and the time left.

The one ETA helper of the package: the train binary's per-trial lines, the
experiments' retraining and the estimator's influence pass all print their
progress through it.
"""

import contextlib
import time


def format_seconds(seconds):
  """'4m20s', or '1h02m05s' from an hour on."""
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return (f'{hours}h{minutes:02d}m{secs:02d}s' if hours else
          f'{minutes}m{secs:02d}s')


class Progress:
  """`total` units of work started now (e.g. trials, training examples).

  Args:
    total: units to do.
    every_seconds: due() is True at most this often (and at the end).
    clock: seconds, monotonic (time.perf_counter).
  """

  def __init__(self, total, every_seconds=0.0, clock=time.perf_counter):
    self.total = total
    self.every_seconds = every_seconds
    self._clock = clock
    self.start = clock()
    self._last = self.start

  def elapsed(self):
    return self._clock() - self.start

  def per_unit(self, done):
    """Seconds per unit so far."""
    return self.elapsed() / max(done, 1)

  def eta(self, done, remaining=None):
    """The time left as text, at the rate so far (`remaining`: units left,
    default total - done)."""
    left = self.total - done if remaining is None else remaining
    return format_seconds(self.per_unit(done) * max(left, 0)) if done else '?'

  def due(self, done):
    """Whether a progress line is due: every `every_seconds`, and when the
    work is done."""
    now = self._clock()
    if done >= self.total or now - self._last >= self.every_seconds:
      self._last = now
      return True
    return False


def peak_rss_mib(pid='self'):
  """The peak resident memory of process `pid` so far, in MiB: Linux's
  VmHWM, the high-water mark of the process's own memory (ru_maxrss also
  counts the parent's memory at the fork before exec, so a process started
  by a large one reports that one's size); elsewhere ru_maxrss."""
  try:
    with open(f'/proc/{pid}/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024  # kB
  except OSError:
    pass
  import resource  # pylint: disable=g-import-not-at-top
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Stages:
  """Seconds and peak memory of the stages of one run, into `timings`:

      stages = Stages(timings)
      with stages('influence'):
        ...

  sets timings['influence_seconds'] and timings['peak_rss_mib']['influence']
  (the process's peak so far, so the stage that raised it stands out).
  """

  def __init__(self, timings, clock=time.perf_counter):
    self.timings = timings
    self._clock = clock

  @contextlib.contextmanager
  def __call__(self, name):
    start = self._clock()
    yield
    self.timings[f'{name}_seconds'] = self._clock() - start
    self.timings.setdefault('peak_rss_mib', {})[name] = round(
        peak_rss_mib(), 1)

"""The binaries print only this package's lines: TensorFlow's C++ log is filtered.

TensorFlow writes log lines to the process's stderr (file descriptor 2) from
C++ while it loads, before any Python setting can reach them: the oneDNN
notice, cudart's and cuInit's "no GPU", the CPU-feature notice, absl's
pre-init warning. TF_CPP_MIN_LOG_LEVEL does not silence all of them (those
of XLA's and absl's own logging ignore it), so each binary, run as
`python -m tf_memorization.<binary>`, calls `filter_library_logs()` before
it imports TensorFlow: descriptor 2 becomes a pipe read by a forked filter
process that forwards every line but TensorFlow's log lines to the real
stderr. A separate process, so the last lines (a crash's) still come out
when the binary dies; it exits when the binary and everything it started
have closed the pipe. The binary waits for it at exit, so its output ends
before the shell's prompt.

TF_MEMORIZATION_VERBOSE=1 keeps everything. Nothing here imports
TensorFlow.
"""

import atexit
import os
import re
import signal
import sys
import time

VERBOSE_ENV = 'TF_MEMORIZATION_VERBOSE'

# TensorFlow's C++ log lines ("I0000 00:00:1796604748.180792    9096
# cudart_stub.cc:31] ..."), absl's pre-init notice, and the CPU-feature
# notice's second line (the same patterns ./run.sh filters).
LIBRARY_LOG_LINE = re.compile(
    rb'^[IWEF][0-9]{4} [0-9:.]+ +[0-9]+ [^ ]+:[0-9]+\] '
    rb'|^WARNING: All log messages before absl::InitializeLog\(\) is called'
    rb'|^To enable the following instructions: ')

# Seconds a binary waits at exit for the filter to forward the last lines.
_DRAIN_SECONDS = 5.0


def verbose():
  """Whether TF_MEMORIZATION_VERBOSE=1 asks for every library log line."""
  return os.environ.get(VERBOSE_ENV, '0') not in ('', '0')


def _forward(source, target):
  """The filter process: copies lines from `source` to `target` but the
  library's log lines, until `source` ends."""
  with os.fdopen(source, 'rb') as lines, os.fdopen(target, 'wb', 0) as out:
    for line in lines:
      if not LIBRARY_LOG_LINE.match(line):
        out.write(line)


def filter_library_logs():
  """Routes this process's stderr through the filter (see the module
  docstring); does nothing when verbose, without fork (Windows), or when
  called twice."""
  if verbose() or not hasattr(os, 'fork') or _state:
    return
  # Fewer lines for the filter to drop (a setting of your own is kept).
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  try:
    sys.stderr.flush()
    real_stderr = os.dup(2)
  except (OSError, ValueError, AttributeError):  # no stderr to filter
    return
  read_end, write_end = os.pipe()
  pid = os.fork()
  if pid == 0:  # the filter
    try:
      os.close(write_end)
      for unused in (0, 1):  # held by the binary alone
        os.close(unused)
      # Ctrl-C goes to the whole process group: the filter outlives the
      # binary's handling of it, so the binary's last lines still pass.
      signal.signal(signal.SIGINT, signal.SIG_IGN)
      _forward(read_end, real_stderr)
    finally:
      os._exit(0)  # pylint: disable=protected-access
  os.close(read_end)
  os.dup2(write_end, 2)
  os.close(write_end)
  _state.update(pid=pid, real_stderr=real_stderr)
  atexit.register(_drain)


_state = {}


def _drain():
  """At exit: gives stderr back and waits (briefly) for the filter to pass
  the last lines."""
  try:
    sys.stderr.flush()
  except (OSError, ValueError):
    pass
  os.dup2(_state['real_stderr'], 2)  # closes this process's pipe end
  deadline = time.monotonic() + _DRAIN_SECONDS
  while time.monotonic() < deadline:
    try:
      done, _ = os.waitpid(_state['pid'], os.WNOHANG)
    except ChildProcessError:
      return
    if done:
      return
    time.sleep(0.01)

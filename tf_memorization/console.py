"""The console scripts setup.py installs: tfmem-train, tfmem-estimate,
tfmem-report, tfmem-inspect, tfmem-compare and tfmem-import.

Each does what `python -m tf_memorization.<binary>` does: starts the filter
of TensorFlow's C++ log lines (core/quiet.py) before the binary's module
loads TensorFlow, defines the binary's flags and runs its main.
"""

import importlib
import sys

from tf_memorization.core import quiet


def _run(binary):
  quiet.filter_library_logs()  # before the binary's module loads TensorFlow
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(f'tf_memorization.{binary}')
  module.define_flags()
  # --help prints the main module's doc and flags: the script's, here the
  # binary's.
  sys.modules['__main__'].__doc__ = module.__doc__
  for flag in flags.FLAGS.get_key_flags_for_module(module.__name__):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  app.run(module.main)


def train():
  _run('train')


def estimate():
  _run('estimate')


def report():
  _run('report')


def inspect_workdir():
  _run('inspect_workdir')


def compare():
  _run('compare')


def import_trials():
  _run('import_trials')

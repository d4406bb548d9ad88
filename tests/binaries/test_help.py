"""Every binary answers --help, as `python -m` and as its console script:
absl prints the binary's doc and flags and exits with status 1, as every
absl binary does for --help."""

import os
import subprocess
import sys

import pytest

from conftest import REPO

BINARIES = {'train': 'tfmem-train', 'estimate': 'tfmem-estimate',
            'report': 'tfmem-report', 'inspect_workdir': 'tfmem-inspect',
            'compare': 'tfmem-compare', 'import_trials': 'tfmem-import'}
# A flag of each binary its --help must list.
FLAGS = {'train': '--target_stderr', 'estimate': '--output_dir',
         'report': '--estimates_dir', 'inspect_workdir': '--upgrade_records',
         'compare': '--published_pairs', 'import_trials': '--lira_dir'}


# The console script run as a process (the others share its code path,
# console._run, and are checked to name their binary's function).
RUN_SCRIPT = 'import_trials'


@pytest.mark.slow
def test_every_binary_answers_help():
  """The six binaries at once (each loads TensorFlow), and the console
  scripts setup.py installs beside this Python (./run.sh installs them):
  one run, every one naming its binary's console function."""
  from tf_memorization import console  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  commands = {name: [sys.executable, '-m', f'tf_memorization.{name}',
                     '--help'] for name in BINARIES}
  scripts = os.path.dirname(sys.executable)
  for name, script in BINARIES.items():
    path = os.path.join(scripts, script)
    assert os.path.exists(path), (
        f'{path} is missing: install the package (./run.sh test does)')
    text = open(path).read()
    assert f'from tf_memorization.console import {name}' in text, text
    assert callable(getattr(console, name))
    if name == RUN_SCRIPT:
      commands[script] = [path, '--help']
  running = {name: subprocess.Popen(
      command, cwd=REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for name, command in
             commands.items()}
  for name, proc in running.items():
    out, _ = proc.communicate(timeout=300)
    binary = next(b for b, s in BINARIES.items() if name in (b, s))
    assert proc.returncode == 1, (name, out[-2000:])  # absl's --help
    assert FLAGS[binary] in out, (name, out[-2000:])
    assert 'Traceback' not in out, (name, out[-2000:])

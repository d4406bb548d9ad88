r"""GPU readiness: one MirroredStrategy process vs one worker per GPU.

    python benchmarks/multi_gpu.py [--gin_file=gin_configs/demo.gin]
        [--trials=32] [--binding='TrialTrainer.models_per_step = 4' ...]

Trains the same trials of one config twice, each into its own fresh workdir,
with the train binary (python -m tf_memorization.train):

  mirrored     one process, get_strategy.kind = 'mirrored' over every GPU:
               each trial's batch is split over the GPUs;
  per-GPU      one process per GPU (CUDA_VISIBLE_DEVICES=i, kind =
               'one_device', --shard_index=i --num_shards=G): each GPU trains
               whole trials on its own (what `./run.sh ... --per_gpu_workers`
               starts).

Prints trials/hour for each (launch to last exit, so start-up counts) and
their ratio. Small models usually favour per-GPU workers (no all-reduce per
step); large ones with large batches favour mirrored.

Without GPUs it runs a CPU stand-in so the script itself is tested: mirrored
over 2 logical CPU devices vs 2 worker processes sharing the CPU. Those
figures say nothing about GPUs.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import common  # pylint: disable=g-import-not-at-top


def count_gpus():
  try:
    out = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True,
                         check=False)
  except OSError:
    return 0
  return sum(1 for line in out.stdout.splitlines() if line.startswith('GPU '))


def train_command(args, workdir, bindings, extra=()):
  command = [sys.executable, '-m', 'tf_memorization.train',
             f'--gin_file={args.gin_file}', f'--workdir={workdir}',
             f'--gin_bindings=SubsetDesign.num_trials = {args.trials}']
  command += [f'--gin_bindings={b}' for b in list(args.binding) + bindings]
  if args.data_dir:
    command.append(f'--data_dir={args.data_dir}')
  return command + list(extra)


def run_processes(commands, envs):
  """Starts every command at once; returns the wall time until all exit."""
  start = time.perf_counter()
  processes = [subprocess.Popen(c, cwd=REPO, env=e, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
               for c, e in zip(commands, envs)]
  outputs = [p.communicate()[0] for p in processes]
  wall = time.perf_counter() - start
  for p, out in zip(processes, outputs):
    if p.returncode:
      raise RuntimeError(f'worker failed ({p.returncode}):\n{out[-3000:]}')
  return wall


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--gin_file', default='gin_configs/demo.gin')
  parser.add_argument('--trials', type=int, default=32)
  parser.add_argument('--binding', action='append', default=[],
                      help='Extra gin bindings for both ways.')
  parser.add_argument('--data_dir', default=os.path.join(
      tempfile.gettempdir(), 'tf_memorization_bench_tfds'))
  args = parser.parse_args()
  gpus = count_gpus()
  base_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  devices = gpus if gpus >= 2 else 2
  with tempfile.TemporaryDirectory() as root:
    if gpus >= 2:
      mirrored = train_command(args, os.path.join(root, 'mirrored'),
                               ["get_strategy.kind = 'mirrored'"])
    else:
      mirrored = train_command(args, os.path.join(root, 'mirrored'), [
          "get_strategy.kind = 'mirrored'", 'get_strategy.num_cpu_devices = 2'])
    mirrored_s = run_processes([mirrored], [base_env])
    commands, envs = [], []
    for i in range(devices):
      commands.append(train_command(
          args, os.path.join(root, 'per_gpu'),
          ["get_strategy.kind = 'one_device'"],
          [f'--shard_index={i}', f'--num_shards={devices}']))
      envs.append(dict(base_env, CUDA_VISIBLE_DEVICES=str(i)) if gpus >= 2
                  else base_env)
    per_gpu_s = run_processes(commands, envs)
  print(common.machine_line())
  what = (f'{gpus} GPUs' if gpus >= 2 else
          'no multi-GPU machine: CPU stand-in with 2 logical devices / '
          '2 processes (not a GPU figure)')
  print(f'{args.gin_file}, {args.trials} trials; {what}')
  rate_m = 3600 * args.trials / mirrored_s
  rate_p = 3600 * args.trials / per_gpu_s
  print(f'  mirrored (1 process, {devices} devices)  {rate_m:9,.0f} trials/hour'
        f'  ({mirrored_s:.0f} s)')
  print(f'  per-device workers ({devices} processes) {rate_p:9,.0f} trials/hour'
        f'  ({per_gpu_s:.0f} s)')
  print(f'  ratio per-device / mirrored: {rate_p / rate_m:.2f}')


if __name__ == '__main__':
  main()

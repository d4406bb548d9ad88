r"""Which pair-selection procedure: false discovery proportion and recall on
planted truth, over many seeds (stats/procedures.py).

    python benchmarks/fdr_procedures.py [--seeds=50] [--trials=64,128,256,512]

Each seed draws procedures.planted_family: 500 family training examples,
1,000 test examples, 10 labels (a same-label family of 50,000 pairs), 200
planted pairs of influence uniform in [0.2, 0.8] and 50 at exactly 0.15 (true
nulls on the boundary of H0: influence <= 0.15), every trial shifting all
test examples' log-odds together. Prints, per k and procedure, the mean false
discovery proportion (with its standard error over seeds), the mean recall
of the pairs over 0.15, and the recall over BH's on the same seeds.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from tf_memorization.stats import procedures  # pylint: disable=g-import-not-at-top,wrong-import-position


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--seeds', type=int, default=50)
  parser.add_argument('--trials', default='64,128,256,512')
  parser.add_argument('--level', type=float, default=0.1)
  parser.add_argument('--boundary', type=int, default=50)
  args = parser.parse_args()
  print(f'{args.seeds} seeds, level {args.level}, delta 0.15, family 50,000 '
        f'pairs, 200 planted (0.2-0.8), {args.boundary} on the boundary')
  print(f'{"k":>4s} {"procedure":>10s} {"mean FDP":>9s} {"(se)":>7s} '
        f'{"recall":>7s} {"/whole":>6s}')
  for k in [int(v) for v in args.trials.split(',')]:
    start = time.time()
    table = procedures.compare(range(args.seeds), k, level=args.level,
                               boundary=args.boundary)
    base = table['whole'][2]
    for name, (fdp, sd, recall) in table.items():
      print(f'{k:4d} {name:>10s} {fdp:9.4f} {sd / np.sqrt(args.seeds):7.4f} '
            f'{recall:7.3f} {recall / base if base else float("nan"):6.2f}')
    print(f'     ({time.time() - start:.0f} s)', flush=True)


if __name__ == '__main__':
  main()

"""The TrialWriter example of docs/data.md, run as written with numpy
logits: its `import torch` gets a small stand-in (this suite has no torch)
whose no_grad, Subset and tensors pass numpy arrays through, and the "model" a
numpy function of the examples. The records it writes are then loaded and
estimated, and the masks and predictions are the model's."""

import builtins
import re
import types

import numpy as np

from tf_memorization.estimation import pipeline
from tf_memorization.workdir import loading

from conftest import REPO

DOC = f'{REPO}/docs/data.md'


def _example():
  text = open(DOC).read()
  match = re.search(r'<!-- trialwriter-example -->\n```python\n(.*?)```',
                    text, re.S)
  assert match, 'docs/data.md lost its TrialWriter example'
  return match.group(1)


class _Tensor:
  """What the example calls on a torch tensor: .cuda(), .float(), .cpu(),
  .numpy(), each passing the numpy array through."""

  def __init__(self, array):
    self.array = np.asarray(array)

  def cuda(self):
    return self

  float = cpu = cuda

  def numpy(self):
    return self.array


def _torch():
  torch = types.ModuleType('torch')
  torch.no_grad = lambda: (lambda function: function)
  data = types.SimpleNamespace(Subset=lambda dataset, indices: (
      dataset, np.asarray(indices)))
  torch.utils = types.SimpleNamespace(data=data)
  return torch


def test_the_trialwriter_example_runs_as_documented(tmp_path):
  rng = np.random.default_rng(0)
  n, n_test, classes = 240, 90, 4
  labels = rng.integers(0, classes, n + n_test)
  train_labels, test_labels = labels[:n], labels[n:]

  class Model:
    """Right on the examples it saw and on a fixed half of the others."""

    def __init__(self, seen):
      self.seen = set(seen.tolist())

    def eval(self):
      return self

    def __call__(self, batch):
      index = batch.array[:, 0].astype(int)
      logits = rng.normal(size=(len(index), classes)).astype(np.float32)
      right = np.array([i in self.seen or i % 2 == 0 for i in index])
      truth = labels[index]
      logits[np.arange(len(index)), truth] += np.where(right, 20.0, -20.0)
      return _Tensor(logits)

  def loader(indices, batch=64):
    return [(_Tensor(np.stack([indices[a:a + batch],
                               np.zeros(len(indices[a:a + batch]))], 1)),
             None) for a in range(0, len(indices), batch)]

  torch = _torch()

  def importer(name, *args, **kwargs):  # `import torch` in the example only
    if name == 'torch':
      return torch
    return builtins.__import__(name, *args, **kwargs)

  workdir = str(tmp_path / 'mine')
  namespace = {
      '__builtins__': dict(vars(builtins), __import__=importer),
      'workdir': workdir, 'train_labels': train_labels,
      'test_labels': test_labels, 'num_trials': 12,
      'train_set': 'train set',
      'train_model': lambda subset: Model(subset[1]),
      'train_eval_loader': loader(np.arange(n)),
      'test_loader': loader(np.arange(n, n + n_test))}
  exec(compile(_example(), DOC, 'exec'), namespace)  # pylint: disable=exec-used

  loaded = loading.load(workdir)
  masks = np.random.default_rng(0).random((12, n)) < 0.5  # the example's
  np.testing.assert_array_equal(loaded.masks, masks)
  # Right where seen or even: memorization 1 for the odd examples.
  odd = np.arange(n) % 2 == 1
  np.testing.assert_array_equal(loaded.train_correct, masks | ~odd)
  lines = []
  summary = pipeline.run(workdir, gin_bindings=['Estimator.report = False'],
                         log=lines.append)
  assert summary['num_trials'] == 12
  memorization = np.genfromtxt(f'{workdir}/estimates/memorization.csv',
                               delimiter=',', names=True, dtype=None,
                               encoding='utf-8')['memorization']
  defined = np.isfinite(memorization)
  np.testing.assert_array_equal(memorization[defined],
                                odd[defined].astype(float))

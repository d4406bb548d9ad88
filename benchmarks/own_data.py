r"""Your data, your model: each source end to end on small real data.

    python benchmarks/own_data.py [--trials=16] [--sources=folder,...]

Every source trains the same way docs/data.md's "Your data, your model" shows
(in one process, one source after the other), on data that ships offline:

  builder      a user's own tfds builder through a gin `import`
               (tests/userland/my_research: the digits labelled by parity)
               and the user's own model (its tiny_cnn);
  folder       the digits written as PNG files in class sub-folders
               (image_folder, hash split), held in memory;
  folder_stream the same folder read and decoded per batch (streaming);
  arrays       the digits as an .npz of uint8 images (arrays source);
  tabular      scikit-learn's breast-cancer table (569 x 30 features) as
               an .npz, an MLP, with 10% of the training labels flipped:
               the label-noise AUC of memorization on a dataset that is not
               the digits;
  finetune     models.pretrained: a MobileNetV2 (alpha 0.35, 32x32)
               backbone first trained on the digits 0-4 and saved to a local
               file, then every trial fine-tunes it on the digits 5-9.

Prints per source: trials, trials/hour (the train binary's run: set-up,
data preparation and the first trial's tracing are counted; the estimate
is not), mean test accuracy of the trials (diverged trials, which predict
one class for everything, left out and counted), and for `tabular` the AUC
with which memorization ranks the flipped labels (the estimate binary's
label_noise).
"""

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import gin  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, 'tests', 'userland'))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

from tf_memorization import configurables  # pylint: disable=g-import-not-at-top,unused-import,wrong-import-position
from tf_memorization.estimation import pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization import train  # pylint: disable=g-import-not-at-top,wrong-import-position
from tf_memorization.workdir import loading  # pylint: disable=g-import-not-at-top,wrong-import-position

SOURCES = ('builder', 'folder', 'folder_stream', 'arrays', 'tabular',
           'finetune')
# The demo's training (gin_configs/demo.gin) without its dataset and noise.
BASE = """
SubsetDesign.subset_ratio = 0.7
SubsetDesign.design = 'independent'
TrialTrainer.batch_size = 64
TrialTrainer.base_learning_rate = 0.1
TrialTrainer.schedule = 'cosine'
TrialTrainer.momentum = 0.9
get_strategy.kind = 'one_device'
"""
SMALL_RESNET = """
TrialTrainer.model_fn = @small_resnet
small_resnet.width = 32
TrialTrainer.epochs = 15
"""


def _digits():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
  return images, digits.target.astype(np.int64)


def _fixed_split(n):
  test = np.zeros(n, bool)
  test[4::5] = True
  return ~test, test


def make_inputs(root):
  """Writes the folder and the .npz files; returns their paths."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  images, labels = _digits()
  folder = os.path.join(root, 'digits_png')
  for i, (image, label) in enumerate(zip(images, labels)):
    directory = os.path.join(folder, f'digit_{label}')
    os.makedirs(directory, exist_ok=True)
    Image.fromarray(image).save(os.path.join(directory, f'{i:04d}.png'))
  digits_train, digits_test = train_mask, test_mask = _fixed_split(
      len(labels))
  digits_npz = os.path.join(root, 'digits.npz')
  np.savez(digits_npz, x_train=images[train_mask], y_train=labels[train_mask],
           x_test=images[test_mask], y_test=labels[test_mask],
           ids_train=np.flatnonzero(train_mask).astype(str),
           ids_test=np.flatnonzero(test_mask).astype(str))
  from sklearn.datasets import load_breast_cancer  # pylint: disable=g-import-not-at-top
  table = load_breast_cancer()
  train_mask, test_mask = _fixed_split(len(table.target))
  tabular_npz = os.path.join(root, 'breast_cancer.npz')
  np.savez(tabular_npz, x_train=table.data[train_mask],
           y_train=table.target[train_mask], x_test=table.data[test_mask],
           y_test=table.target[test_mask],
           class_names=np.array(list(table.target_names)))
  # Fine-tuning: "pretrained" on digits 0-4, fine-tuned on digits 5-9.
  low, high = labels < 5, labels >= 5
  split = {'x_train': images[low & digits_train],
           'y_train': labels[low & digits_train],
           'x_test': images[low & digits_test],
           'y_test': labels[low & digits_test]}
  finetune_npz = os.path.join(root, 'digits_5_to_9.npz')
  np.savez(finetune_npz, x_train=images[high & digits_train],
           y_train=labels[high & digits_train] - 5,
           x_test=images[high & digits_test],
           y_test=labels[high & digits_test] - 5)
  weights = os.path.join(root, 'mobilenetv2_digits04.weights.h5')
  _pretrain(split, weights)
  return {'folder': folder, 'digits_npz': digits_npz,
          'tabular_npz': tabular_npz, 'finetune_npz': finetune_npz,
          'weights': weights}


def _pretrain(split, path):
  """Trains a MobileNetV2 backbone on digits 0-4; saves its weights."""
  import keras  # pylint: disable=g-import-not-at-top
  from tf_memorization.training import pretrained  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  model = pretrained.pretrained((8, 8, 1), 5, backbone='MobileNetV2',
                                image_size=32,
                                backbone_kwargs={'alpha': 0.35})
  model.compile(keras.optimizers.Adam(1e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])
  x = split['x_train'][..., None].astype(np.float32)
  model.fit(x, split['y_train'], batch_size=32, epochs=20, verbose=0)
  # keras.applications' BatchNormalization moving averages (momentum 0.999)
  # lag far behind after this short training: set them to the statistics of
  # the whole pretraining set (one pass, momentum 0), as a long pretraining
  # would have them.
  norms = [layer for layer in model._flatten_layers()  # pylint: disable=protected-access
           if isinstance(layer, keras.layers.BatchNormalization)]
  momenta = [layer.momentum for layer in norms]
  for layer in norms:
    layer.momentum = 0.0
  model(x, training=True)
  for layer, momentum in zip(norms, momenta):
    layer.momentum = momentum
  _, accuracy = model.evaluate(split['x_test'][..., None].astype(np.float32),
                               split['y_test'], verbose=0)
  print(f'  pretraining on digits 0-4: test accuracy {accuracy:.3f}',
        flush=True)
  model.get_layer('backbone').save_weights(path)


def configs(inputs):
  """{source: (gin text, extra estimator bindings)}."""
  no_name = 'load_dataset.name = None\n'
  return {
      'builder': ('import my_research.parity_digits\n'
                  'import my_research.models\n'
                  "load_dataset.name = 'parity_digits'\n"
                  'TrialTrainer.model_fn = @tiny_cnn\n'
                  'TrialTrainer.epochs = 6\nTrialTrainer.batch_size = 16\n'
                  'TrialTrainer.base_learning_rate = 0.05\n', []),
      'folder': (no_name + 'load_dataset.source = @image_folder\n'
                 f"image_folder.root = '{inputs['folder']}'\n" + SMALL_RESNET,
                 []),
      'folder_stream': (no_name + 'load_dataset.source = @image_folder\n'
                        f"image_folder.root = '{inputs['folder']}'\n"
                        'image_folder.streaming = True\n' + SMALL_RESNET, []),
      'arrays': (no_name + 'load_dataset.source = @arrays\n'
                 f"arrays.paths = '{inputs['digits_npz']}'\n" + SMALL_RESNET,
                 []),
      'tabular': (no_name + 'load_dataset.source = @arrays\n'
                  f"arrays.paths = '{inputs['tabular_npz']}'\n"
                  'label_noise.fraction = 0.1\n'
                  'TrialTrainer.model_fn = @mlp\nmlp.widths = (64,)\n'
                  'TrialTrainer.epochs = 30\n'
                  'TrialTrainer.base_learning_rate = 0.05\n', []),
      'finetune': (no_name + 'load_dataset.source = @arrays\n'
                   f"arrays.paths = '{inputs['finetune_npz']}'\n"
                   'TrialTrainer.model_fn = @pretrained\n'
                   "pretrained.backbone = 'MobileNetV2'\n"
                   "pretrained.backbone_kwargs = {'alpha': 0.35}\n"
                   f"pretrained.weights_path = '{inputs['weights']}'\n"
                   'pretrained.image_size = 32\n'
                   "pretrained.trainable = 'all'\n"
                   'Preprocessing.standardize = False\n'
                   'TrialTrainer.epochs = 3\n'
                   'TrialTrainer.base_learning_rate = 0.001\n', []),
  }


def run_source(name, text, root, trials):
  gin.clear_config()
  workdir = os.path.join(root, f'w_{name}')
  path = os.path.join(root, f'{name}.gin')
  with open(path, 'w') as f:
    f.write(BASE + text + f'SubsetDesign.num_trials = {trials}\n')
  start = time.perf_counter()
  train.run(workdir, [path], [], data_dir=os.path.join(root, 'tfds'),
            log=lambda _: None)
  seconds = time.perf_counter() - start
  gin.clear_config()
  records = loading.load(workdir, diverged='skip')
  accuracy = float(records.test_correct.mean())
  summary = pipeline.run(workdir, [path], ['Estimator.report = False',
                                           "Estimator.diverged_trials = 'skip'"],
                         data_dir=os.path.join(root, 'tfds'),
                         log=lambda _: None)
  noise = summary.get('label_noise') or {}
  auc = noise.get('auc')
  line = (f'  {name:14s} {trials:3d} trials  {trials * 3600 / seconds:8,.0f} '
          f'trials/hour  test accuracy {accuracy:.3f}')
  if records.diverged:
    line += f' ({len(records.diverged)} diverged trials left out)'
  if auc is not None:
    line += f'  label-noise AUC {auc:.3f} ({noise.get("num_flipped")} flipped)'
  print(line, flush=True)
  return {'trials_per_hour': trials * 3600 / seconds,
          'test_accuracy': accuracy, 'label_noise_auc': auc}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--trials', type=int, default=16)
  parser.add_argument('--sources', default=','.join(SOURCES))
  parser.add_argument('--json', default=None, help='Also write the figures.')
  args = parser.parse_args()
  print(common.machine_line(), flush=True)
  results = {}
  with tempfile.TemporaryDirectory() as root:
    inputs = make_inputs(root)
    texts = configs(inputs)
    for name in args.sources.split(','):
      results[name] = run_source(name, texts[name][0], root, args.trials)
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()

r"""Several models in one compiled step: separate copies vs grouped convolutions.

    python benchmarks/models_per_step.py [--setting=demo|cifar] [--seconds=4]

Measures the bare training step (a fixed batch in memory, no input pipeline)
of K models trained at once, in images/s summed over the K models:

  copies   K separate copies of the model in one tf.function, each on its own
           batch, one summed loss and one optimizer (what TrialTrainer does
           with models_per_step = K);
  grouped  the K models fused into one: every convolution has K x the
           filters with groups=K, BatchNorm over all K x C channels, one head
           per model (EinsumDense); the K batches are stacked on the channel
           axis. It computes the same K independent models.

The K = 1 copy is the baseline; each line prints its ratio to it. On a CPU
the model's arithmetic bounds the gain of K copies; the line `GFLOP/s` gives
the rate reached (forward + backward counted as 3x the forward's MACs x 2).

Settings: `demo` small_resnet(width=32) on 8x8x1, batch 64, 10 classes;
`cifar` resnet_cifar(depth=8, width=8) on 32x32x3, batch 64, 100 classes.
"""

import argparse
import os
import time

os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'

import keras  # pylint: disable=g-import-not-at-top
from keras import layers  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tf_memorization.training import models  # pylint: disable=g-import-not-at-top

import common  # pylint: disable=g-import-not-at-top

SETTINGS = {
    'demo': dict(shape=(8, 8, 1), classes=10, batch=64,
                 model=lambda **kw: models.small_resnet(
                     width=32, weight_decay=1e-4, **kw)),
    'cifar': dict(shape=(32, 32, 3), classes=100, batch=64,
                  model=lambda **kw: models.resnet_cifar(
                      depth=8, width=8, **kw)),
}


def forward_macs(model):
  """Multiply-accumulates of one forward pass per image (convs and dense)."""
  total = 0
  for layer in model.layers:
    if isinstance(layer, layers.Conv2D):
      out = layer.output.shape
      kh, kw, cin, cout = layer.kernel.shape
      total += out[1] * out[2] * kh * kw * cin * cout
    elif isinstance(layer, layers.Dense):
      total += layer.kernel.shape[0] * layer.kernel.shape[1]
  return total


def _time(step, args, seconds):
  step(*args)  # trace
  step(*args)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    step(*args)
    count += 1
  return (time.perf_counter() - start) / count


def copies_rate(setting, k, seconds):
  shape, classes, batch = setting['shape'], setting['classes'], setting['batch']
  copies = [setting['model'](input_shape=shape, num_classes=classes)
            for _ in range(k)]
  variables = [v for m in copies for v in m.trainable_variables]
  optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
  optimizer.build(variables)
  loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
  x = tf.random.normal((k, batch) + shape)
  y = tf.one_hot(tf.random.uniform((k, batch), 0, classes, tf.int32), classes)

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      loss = tf.add_n([loss_fn(y[i], m(x[i], training=True)) + tf.add_n(m.losses)
                       for i, m in enumerate(copies)])
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

  seconds_per_step = _time(step, (x, y), seconds)
  return k * batch / seconds_per_step, forward_macs(copies[0])


def grouped_model(setting, k):
  """small_resnet's / resnet_cifar(8)'s layout with K models fused by groups."""
  width = 32 if setting['shape'][0] == 8 else 8
  stages = (width, 2 * width) if width == 32 else (width, 2 * width, 4 * width)

  def conv(x, filters, strides, size=3):
    return layers.Conv2D(filters * k, size, strides=strides, padding='same',
                         use_bias=False, groups=k)(x)

  def bn_relu(x, relu=True):
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x) if relu else x

  inputs = keras.Input(setting['shape'][:2] + (setting['shape'][2] * k,))
  x = bn_relu(conv(inputs, width, 1))
  for stage, filters in enumerate(stages):
    strides = 1 if stage == 0 else 2
    y = bn_relu(conv(x, filters, strides))
    y = bn_relu(conv(y, filters, 1), relu=False)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters * k:
      shortcut = bn_relu(conv(x, filters, strides, size=1), relu=False)
    x = layers.ReLU()(layers.Add()([y, shortcut]))
  x = layers.Reshape((k, stages[-1]))(layers.GlobalAveragePooling2D()(x))
  outputs = layers.EinsumDense('bkc,kcn->bkn', (k, setting['classes']))(x)
  return keras.Model(inputs, outputs)


def grouped_rate(setting, k, seconds):
  shape, classes, batch = setting['shape'], setting['classes'], setting['batch']
  model = grouped_model(setting, k)
  optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
  optimizer.build(model.trainable_variables)
  loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True)
  x = tf.random.normal((batch,) + shape[:2] + (shape[2] * k,))
  y = tf.one_hot(tf.random.uniform((batch, k), 0, classes, tf.int32), classes)

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True)) * k
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

  return k * batch / _time(step, (x, y), seconds)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--setting', choices=sorted(SETTINGS), default='demo')
  parser.add_argument('--seconds', type=float, default=4.0)
  parser.add_argument('--models', default='1,2,4,8',
                      help='Comma-separated K for the copies.')
  parser.add_argument('--grouped', default='4',
                      help='Comma-separated K for grouped convolutions.')
  args = parser.parse_args()
  setting = SETTINGS[args.setting]
  print(common.machine_line())
  print(f'setting {args.setting}: {setting["shape"]}, batch '
        f'{setting["batch"]} per model; bare train step, images/s over all '
        'K models')
  base, macs = None, None
  for k in (int(v) for v in args.models.split(',')):
    rate, macs = copies_rate(setting, k, args.seconds)
    base = base or rate
    print(f'  {k} cop{"y " if k == 1 else "ies"}   {rate:9,.0f} images/s  '
          f'ratio {rate / base:4.2f}  ({rate * macs * 6 / 1e9:5.1f} GFLOP/s)',
          flush=True)
  for k in (int(v) for v in args.grouped.split(',') if v):
    rate = grouped_rate(setting, k, args.seconds)
    print(f'  {k} grouped  {rate:9,.0f} images/s  ratio {rate / base:4.2f}',
          flush=True)
  print(f'  forward pass: {macs / 1e6:.2f} M multiply-accumulates per image')


if __name__ == '__main__':
  main()

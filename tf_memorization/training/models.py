"""Keras ResNets, gin-configurable.

Bind the architecture in gin with a reference, e.g.

    TrialTrainer.model_fn = @resnet50
    resnet50.weight_decay = 5e-4

Every builder takes `input_shape` and `num_classes` from the dataset and returns
an uncompiled `keras.Model` whose output is float32 logits (also under mixed
precision). Weight decay is an L2 penalty on convolution and dense kernels.

* `resnet_cifar`: He et al.'s CIFAR ResNets with basic blocks, depth 6n+2
  (ResNet-20, -32, -44, -56, -110), stage widths (16, 32, 64) x width.
* `resnet18`: ResNet-18 (basic blocks [2, 2, 2, 2], widths 64..512) with the
  CIFAR stem (3x3 conv, no max-pool) or the ImageNet stem.
* `resnet50`: ResNet-50 (bottleneck blocks [3, 4, 6, 3]), the paper's model for
  CIFAR-100 and ImageNet, with either stem.
* `small_resnet`: two stages of one basic block each; trains in seconds on the
  8x8 digits.
* `mlp`: dense layers, for fixed-size features (tabular data).

A builder of your own takes the same two arguments (a gin configurable in
your package, imported by your gin file). A builder that loads pretrained
weights declares them with `mark_pretrained`: every trial then starts from
them (pretrained.py builds keras.applications backbones this way).

Bindings that pick layers of a model (TrialTrainer.trainable_layers and
pretrained_layers, AblationExperiment.block_layers and head_layer) take a
layer's name or its index among model.layers (`layer_indices`). Keras names
a layer built without a name from a per-process counter (dense, dense_1,
...), so such a name holds for one build only; an index holds for all.
"""

import numbers
import weakref

import gin
import keras
from keras import layers

from tf_memorization.core import errors

# model -> (names of its layers holding pretrained weights, digests of the
# files they came from); see mark_pretrained.
_PRETRAINED = weakref.WeakKeyDictionary()


def mark_pretrained(model, layer_names, digests=()):
  """Declares layers of `model` whose current weights are pretrained.

  A model builder that loads weights (models.pretrained, or a user's own)
  calls this: every trial then starts those layers from the weights they
  hold now, and re-initialises only the others from the trial's seed
  (training.TrialTrainer). `digests` (e.g. the sha256 of the weights file)
  enter the run's config fingerprint, so trials from other weights are not
  mixed with these.

  Args:
    model: the keras.Model the builder returns.
    layer_names: names of its top-level layers (a nested backbone model is
      one layer).
    digests: strings identifying the weights' source.
  """
  known = {layer.name for layer in model.layers}
  unknown = sorted(set(layer_names) - known)
  if unknown:
    raise ValueError(f'mark_pretrained: {unknown} are not layers of '
                     f'{model.name}.')
  _PRETRAINED[model] = (tuple(layer_names), tuple(digests))


def pretrained_layers(model):
  """(layer names, digests) `mark_pretrained` declared for `model`."""
  return _PRETRAINED.get(model, ((), ()))


def layer_reference(name, value):
  """A configured layer of a model (`name` is the binding): its name, or
  its index among model.layers; a ConfigError otherwise."""
  if isinstance(value, numbers.Integral) and not isinstance(value, bool):
    return int(value)
  if isinstance(value, str) and value:
    return value
  raise errors.ConfigError(f'{name} must be a layer\'s name or its index '
                           f'among model.layers, got {value!r}.')


def describe_layers(model):
  """'0 input_layer, 1 flatten, 2 dense': a model's layers by position."""
  return ', '.join(f'{i} {layer.name}' for i, layer in enumerate(model.layers))


def layer_indices(model, references, binding):
  """Positions in model.layers of `references`, in their order.

  A reference is a layer's name or its index among model.layers (negative:
  from the end). Positions, not names, identify a layer across builds of
  one model function: Keras numbers unnamed layers per process (dense,
  dense_1, ...), so each build of a model whose layers have no names has
  other names, and a name holds only for the build it was read from.

  Raises:
    errors.ConfigError: a reference that is no layer of `model`, naming
      `binding` and listing the model's layers.
  """
  top = model.layers
  by_name = {layer.name: i for i, layer in enumerate(top)}
  found, unknown = [], []
  for reference in references:
    if isinstance(reference, str):
      index = by_name.get(reference)
    else:
      index = int(reference) % len(top) if (
          -len(top) <= reference < len(top)) else None
    if index is None:
      unknown.append(reference)
    else:
      found.append(index)
  if unknown:
    raise errors.ConfigError(
        f'{binding} names {unknown}, which are not layers of {model.name} '
        f'(its layers by index: {describe_layers(model)}). Give a layer\'s '
        'name or its index among model.layers.')
  return found


def build(model_fn, input_shape, num_classes, binding='TrialTrainer.model_fn'):
  """model_fn's model, built for `input_shape` if it is not yet.

  A builder of your own may return a keras.Sequential without a
  keras.Input: such a model has no weights until it is called, and a
  trainer collecting them first would find none, so it is built here.
  """
  model = model_fn(input_shape=input_shape, num_classes=num_classes)
  if not isinstance(model, keras.Model):
    raise errors.ConfigError(
        f'{binding} returned a {type(model).__name__}, not a keras.Model: '
        'return the model your function builds.')
  if not model.built:
    model.build((None, *input_shape))
  return model


def _conv(filters, kernel_size, strides, weight_decay, name):
  return layers.Conv2D(
      filters, kernel_size, strides=strides, padding='same', use_bias=False,
      kernel_initializer='he_normal',
      kernel_regularizer=(keras.regularizers.L2(weight_decay)
                          if weight_decay else None),
      name=name)


def _bn(name):
  return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def basic_block(x, filters, strides, weight_decay, name):
  """Two 3x3 convolutions with a projection shortcut when the shape changes."""
  shortcut = x
  y = _conv(filters, 3, strides, weight_decay, f'{name}_conv1')(x)
  y = layers.ReLU(name=f'{name}_relu1')(_bn(f'{name}_bn1')(y))
  y = _conv(filters, 3, 1, weight_decay, f'{name}_conv2')(y)
  y = _bn(f'{name}_bn2')(y)
  if strides != 1 or x.shape[-1] != filters:
    shortcut = _conv(filters, 1, strides, weight_decay, f'{name}_proj')(x)
    shortcut = _bn(f'{name}_proj_bn')(shortcut)
  return layers.ReLU(name=f'{name}_out')(layers.Add(name=f'{name}_add')(
      [y, shortcut]))


def bottleneck_block(x, filters, strides, weight_decay, name, expansion=4):
  """1x1 reduce, 3x3 (strided), 1x1 expand (x4), projection when needed."""
  shortcut = x
  out_filters = filters * expansion
  y = _conv(filters, 1, 1, weight_decay, f'{name}_conv1')(x)
  y = layers.ReLU(name=f'{name}_relu1')(_bn(f'{name}_bn1')(y))
  y = _conv(filters, 3, strides, weight_decay, f'{name}_conv2')(y)
  y = layers.ReLU(name=f'{name}_relu2')(_bn(f'{name}_bn2')(y))
  y = _conv(out_filters, 1, 1, weight_decay, f'{name}_conv3')(y)
  y = _bn(f'{name}_bn3')(y)
  if strides != 1 or x.shape[-1] != out_filters:
    shortcut = _conv(out_filters, 1, strides, weight_decay, f'{name}_proj')(x)
    shortcut = _bn(f'{name}_proj_bn')(shortcut)
  return layers.ReLU(name=f'{name}_out')(layers.Add(name=f'{name}_add')(
      [y, shortcut]))


_BLOCKS = {'basic': basic_block, 'bottleneck': bottleneck_block}


def _check(name, width, weight_decay):
  """The bindings every ResNet builder has, named after the builder."""
  errors.integer(f'{name}.width', width, minimum=1)
  errors.number(f'{name}.weight_decay', weight_decay, minimum=0)
STEMS = ('cifar', 'imagenet')


@gin.configurable
def resnet(input_shape, num_classes, block='basic', stage_blocks=(2, 2, 2, 2),
           stage_widths=(64, 128, 256, 512), stem='cifar', stem_width=None,
           weight_decay=5e-4, name='resnet'):
  """A ResNet: stem, stages of residual blocks, global pooling, linear head.

  Args:
    input_shape: (H, W, C).
    num_classes: number of logits.
    block: 'basic' (two 3x3 convs) or 'bottleneck' (1x1-3x3-1x1, x4 out).
    stage_blocks: blocks per stage; every stage after the first halves H, W.
    stage_widths: base filters per stage.
    stem: 'cifar' (one 3x3 conv, stride 1) or 'imagenet' (7x7/2 + max-pool).
    stem_width: filters of the stem conv (default: the first stage's width).
    weight_decay: L2 coefficient on kernels (the loss adds wd * sum(w^2)).
    name: model name.
  """
  if block not in _BLOCKS:
    raise ValueError(f'resnet.block must be one of {sorted(_BLOCKS)}, got '
                     f'{block!r}.')
  if stem not in STEMS:
    raise ValueError(f'resnet.stem must be one of {STEMS}, got {stem!r}.')
  stage_blocks = errors.sequence('resnet.stage_blocks', stage_blocks,
                                 lambda n, v: errors.integer(n, v, minimum=1),
                                 allow_empty=False)
  stage_widths = errors.sequence('resnet.stage_widths', stage_widths,
                                 lambda n, v: errors.integer(n, v, minimum=1))
  errors.integer('resnet.stem_width', stem_width, minimum=1, allow_none=True)
  errors.number('resnet.weight_decay', weight_decay, minimum=0)
  if len(stage_blocks) != len(stage_widths):
    raise ValueError('resnet.stage_blocks and resnet.stage_widths must have '
                     'the same length.')
  block_fn = _BLOCKS[block]
  stem_width = stem_width or stage_widths[0]
  inputs = keras.Input(shape=tuple(input_shape), name='image')
  if stem == 'cifar':
    x = _conv(stem_width, 3, 1, weight_decay, 'stem_conv')(inputs)
    x = layers.ReLU(name='stem_relu')(_bn('stem_bn')(x))
  else:
    x = _conv(stem_width, 7, 2, weight_decay, 'stem_conv')(inputs)
    x = layers.ReLU(name='stem_relu')(_bn('stem_bn')(x))
    x = layers.MaxPooling2D(3, strides=2, padding='same', name='stem_pool')(x)
  for stage, (num_blocks, width) in enumerate(zip(stage_blocks, stage_widths)):
    for b in range(num_blocks):
      strides = 2 if (stage > 0 and b == 0) else 1
      x = block_fn(x, width, strides, weight_decay, f'stage{stage + 1}_block{b + 1}')
  x = layers.GlobalAveragePooling2D(name='pool')(x)
  logits = layers.Dense(
      num_classes, dtype='float32', name='logits',
      kernel_regularizer=(keras.regularizers.L2(weight_decay)
                          if weight_decay else None))(x)
  return keras.Model(inputs, logits, name=name)


@gin.configurable
def resnet_cifar(input_shape, num_classes, depth=20, width=16,
                 weight_decay=1e-4):
  """CIFAR ResNet-(6n+2) with basic blocks: 20, 32, 44, 56, 110."""
  _check('resnet_cifar', width, weight_decay)
  depth = errors.integer('resnet_cifar.depth', depth, minimum=8)
  if (depth - 2) % 6:
    raise ValueError(f'resnet_cifar.depth must be 6n+2 (20, 32, 56, ...), got '
                     f'{depth}.')
  n = (depth - 2) // 6
  return resnet(input_shape, num_classes, block='basic', stage_blocks=(n,) * 3,
                stage_widths=(width, 2 * width, 4 * width), stem='cifar',
                weight_decay=weight_decay, name=f'resnet{depth}')


@gin.configurable
def resnet18(input_shape, num_classes, width=64, stem='cifar',
             weight_decay=5e-4):
  """ResNet-18: basic blocks [2, 2, 2, 2]."""
  _check('resnet18', width, weight_decay)
  return resnet(input_shape, num_classes, block='basic',
                stage_blocks=(2, 2, 2, 2),
                stage_widths=(width, 2 * width, 4 * width, 8 * width),
                stem=stem, weight_decay=weight_decay, name='resnet18')


@gin.configurable
def resnet50(input_shape, num_classes, width=64, stem='cifar',
             weight_decay=5e-4):
  """ResNet-50: bottleneck blocks [3, 4, 6, 3] (the paper's model)."""
  _check('resnet50', width, weight_decay)
  return resnet(input_shape, num_classes, block='bottleneck',
                stage_blocks=(3, 4, 6, 3),
                stage_widths=(width, 2 * width, 4 * width, 8 * width),
                stem=stem, weight_decay=weight_decay, name='resnet50')


@gin.configurable
def small_resnet(input_shape, num_classes, width=32, weight_decay=1e-4):
  """A two-stage ResNet for 8x8 digits: trains in seconds on a CPU."""
  _check('small_resnet', width, weight_decay)
  return resnet(input_shape, num_classes, block='basic', stage_blocks=(1, 1),
                stage_widths=(width, 2 * width), stem='cifar',
                weight_decay=weight_decay, name='small_resnet')


@gin.configurable
def mlp(input_shape, num_classes, widths=(256, 256), dropout=0.0,
        weight_decay=1e-4):
  """Dense layers with ReLU on flattened inputs (tabular features).

  Layers are named dense1, dense2, ... and `logits`, so the ablation's
  "last N blocks" are the last N dense layers before the head.
  """
  widths = errors.sequence('mlp.widths', widths,
                           lambda n, v: errors.integer(n, v, minimum=1))
  dropout = errors.number('mlp.dropout', dropout, minimum=0, below=1)
  errors.number('mlp.weight_decay', weight_decay, minimum=0)
  regularizer = (keras.regularizers.L2(weight_decay) if weight_decay
                 else None)
  inputs = keras.Input(shape=tuple(input_shape), name='features')
  x = layers.Flatten(name='flatten')(inputs)
  for i, width in enumerate(widths, start=1):
    x = layers.Dense(width, activation='relu', kernel_regularizer=regularizer,
                     name=f'dense{i}')(x)
    if dropout:
      x = layers.Dropout(dropout, name=f'dropout{i}')(x)
  logits = layers.Dense(num_classes, dtype='float32', name='logits',
                        kernel_regularizer=regularizer)(x)
  return keras.Model(inputs, logits, name='mlp')

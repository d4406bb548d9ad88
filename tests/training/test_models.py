"""Tests for tf_memorization.training.models: the ResNet builders."""

import functools

import keras
import numpy as np
import pytest

from tf_memorization.training import models

BUILDERS = {
    'resnet_cifar20': functools.partial(models.resnet_cifar, depth=20, width=4),
    'resnet18': functools.partial(models.resnet18, width=4),
    'resnet18_imagenet': functools.partial(models.resnet18, width=4,
                                           stem='imagenet'),
    'resnet50': functools.partial(models.resnet50, width=4),
    'small_resnet': functools.partial(models.small_resnet, width=4),
    'resnet_imagenet_stem': functools.partial(
        models.resnet, stage_blocks=(1, 1), stage_widths=(4, 8),
        stem='imagenet'),
}


def _layers_of(model, cls):
  return [layer for layer in model.layers if isinstance(layer, cls)]


def _kernels(model):
  return [layer.kernel for layer in model.layers
          if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


def _check_logits(model, input_shape, num_classes, batch=3):
  x = np.random.default_rng(0).normal(size=(batch,) + input_shape)
  logits = model(x.astype(np.float32), training=False)
  assert tuple(logits.shape) == (batch, num_classes)
  assert keras.backend.standardize_dtype(logits.dtype) == 'float32'
  assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))
  return logits


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_builds_for_cifar_shape(name):
  """Every builder maps (B, 32, 32, 3) images to (B, classes) float32 logits."""
  model = BUILDERS[name](input_shape=(32, 32, 3), num_classes=10)
  assert isinstance(model, keras.Model)
  assert tuple(model.input_shape) == (None, 32, 32, 3)
  assert tuple(model.output_shape) == (None, 10)
  _check_logits(model, (32, 32, 3), 10)


def test_small_resnet_on_digits_shape():
  """small_resnet handles 8x8 grey digits with 10 classes."""
  model = models.small_resnet(input_shape=(8, 8, 1), num_classes=10, width=4)
  _check_logits(model, (8, 8, 1), 10, batch=5)
  # stem + 2 blocks x 2 convs + 1 projection into the strided second stage.
  assert len(_layers_of(model, keras.layers.Conv2D)) == 6


def test_resnet_cifar20_layer_counts():
  """ResNet-20 has 19 3x3 convs, 2 1x1 projections and one dense layer.

  depth 20 = 6n + 2 with n = 3 basic blocks per stage, 3 stages:
    1 stem 3x3 conv + 3 stages * 3 blocks * 2 convs = 19 3x3 convs;
    projections only where the shape changes: stage 1 keeps the stem's width
    (4 -> 4, stride 1, none), stages 2 and 3 halve H, W and double the width
    (one 1x1 projection each) = 2; the classifier is 1 Dense layer.
  """
  model = models.resnet_cifar(input_shape=(32, 32, 3), num_classes=10,
                              depth=20, width=4)
  convs = _layers_of(model, keras.layers.Conv2D)
  sizes = sorted(tuple(c.kernel_size) for c in convs)
  assert sizes.count((3, 3)) == 19
  assert sizes.count((1, 1)) == 2
  assert len(convs) == 21
  assert len(_layers_of(model, keras.layers.Dense)) == 1
  # Stage widths (4, 8, 16) x width: the last feature map has 16 channels at
  # 32 / 4 = 8 pixels.
  assert tuple(model.get_layer('stage3_block3_out').output.shape) == (
      None, 8, 8, 16)


def test_resnet18_layer_counts():
  """ResNet-18: 1 stem + 8 blocks * 2 = 17 3x3 convs, 3 projections.

  Stage 1 keeps the stem's width at stride 1 (no projection); stages 2-4
  stride and double the width (one 1x1 projection each).
  """
  model = models.resnet18(input_shape=(32, 32, 3), num_classes=10, width=4)
  sizes = [tuple(c.kernel_size) for c in _layers_of(model, keras.layers.Conv2D)]
  assert sizes.count((3, 3)) == 17
  assert sizes.count((1, 1)) == 3
  assert len(sizes) == 20


def test_resnet50_has_16_bottlenecks():
  """ResNet-50: [3, 4, 6, 3] = 16 bottleneck blocks, each ending in conv3."""
  model = models.resnet50(input_shape=(32, 32, 3), num_classes=10, width=4)
  conv3 = [layer for layer in model.layers if layer.name.endswith('_conv3')]
  assert len(conv3) == 16
  # Blocks expand 4x: the last stage's width is 8 * 4 = 32, so 128 channels.
  assert conv3[-1].filters == 128
  # 1 stem + 16 * 3 block convs + 4 projections (stage 1 expands 4 -> 16
  # channels; stages 2-4 stride) = 53; 3 + 16 + 1 = 50 on the main path.
  convs = _layers_of(model, keras.layers.Conv2D)
  assert len(convs) == 53
  assert len([c for c in convs if c.name.endswith('_proj')]) == 4


def test_imagenet_stem_downsamples_by_four():
  """The ImageNet stem is a 7x7 stride-2 conv then a stride-2 max-pool."""
  model = models.resnet(input_shape=(32, 32, 3), num_classes=7,
                        stage_blocks=(1, 1), stage_widths=(4, 8),
                        stem='imagenet')
  stem = model.get_layer('stem_conv')
  assert tuple(stem.kernel_size) == (7, 7) and tuple(stem.strides) == (2, 2)
  assert tuple(model.get_layer('stem_pool').output.shape) == (None, 8, 8, 4)
  cifar = models.resnet(input_shape=(32, 32, 3), num_classes=7,
                        stage_blocks=(1, 1), stage_widths=(4, 8), stem='cifar')
  assert tuple(cifar.get_layer('stem_conv').kernel_size) == (3, 3)
  assert tuple(cifar.get_layer('stem_bn').output.shape) == (None, 32, 32, 4)


@pytest.mark.parametrize('name', ['resnet_cifar20', 'resnet50',
                                  'small_resnet'])
def test_weight_decay_one_l2_loss_per_kernel(name):
  """weight_decay > 0 adds wd * sum(w^2) for every conv and dense kernel."""
  wd = 1e-3
  model = BUILDERS[name](input_shape=(32, 32, 3), num_classes=10,
                         weight_decay=wd)
  kernels = _kernels(model)
  assert len(model.losses) == len(kernels)
  expected = wd * sum(float(np.sum(np.square(k.numpy())))
                      for k in kernels)
  total = sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)
  np.testing.assert_allclose(total, expected, rtol=1e-4)
  # No penalty on batch-norm parameters or biases.
  for layer in _layers_of(model, keras.layers.BatchNormalization):
    assert layer.gamma_regularizer is None and layer.beta_regularizer is None


@pytest.mark.parametrize('name', ['resnet_cifar20', 'small_resnet'])
def test_no_weight_decay_no_losses(name):
  """weight_decay=0 adds no regularisation losses."""
  model = BUILDERS[name](input_shape=(32, 32, 3), num_classes=10,
                         weight_decay=0.0)
  assert len(model.losses) == 0


@pytest.mark.parametrize('depth', [21, 18, 10])
def test_resnet_cifar_rejects_bad_depth(depth):
  """Depths that are not 6n + 2 are refused."""
  with pytest.raises(ValueError, match='6n\\+2'):
    models.resnet_cifar(input_shape=(32, 32, 3), num_classes=10, depth=depth)


@pytest.mark.parametrize('kwargs, match', [
    (dict(block='dense'), 'block'),
    (dict(stem='mnist'), 'stem'),
    (dict(stage_blocks=(1, 1), stage_widths=(4,)), 'same length'),
])
def test_resnet_rejects_bad_config(kwargs, match):
  """An unknown block or stem, or mismatched stage lists, are refused."""
  with pytest.raises(ValueError, match=match):
    models.resnet(input_shape=(32, 32, 3), num_classes=10, **kwargs)


def test_resnet18_rejects_unknown_stem():
  """The named builders pass their stem through the same check."""
  with pytest.raises(ValueError, match='stem'):
    models.resnet18(input_shape=(32, 32, 3), num_classes=10, width=4,
                    stem='tiny')


def test_mixed_bfloat16_output_is_float32():
  """Under mixed_bfloat16 the convs compute in bfloat16, logits stay float32."""
  try:
    keras.mixed_precision.set_global_policy('mixed_bfloat16')
    model = models.small_resnet(input_shape=(8, 8, 1), num_classes=10, width=4)
    assert model.get_layer('stem_conv').compute_dtype == 'bfloat16'
    assert model.get_layer('stem_conv').kernel.dtype == 'float32'
    _check_logits(model, (8, 8, 1), 10)
  finally:
    keras.mixed_precision.set_global_policy('float32')
  assert keras.mixed_precision.global_policy().name == 'float32'

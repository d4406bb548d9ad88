"""A user's MLPs written the quickest way: no layer is named.

Keras numbers unnamed layers per process (dense, dense_1, dense_2, ...), so
each build of these models has other layer names than the one before.
"""

import gin
import keras
from keras import layers


@gin.configurable
def plain_mlp(input_shape, num_classes, hidden=32):
  """A functional MLP: flatten, two hidden Dense layers, a Dense head."""
  inputs = keras.Input(shape=tuple(input_shape))
  x = layers.Flatten()(inputs)
  x = layers.Dense(hidden, activation='relu')(x)
  x = layers.Dense(hidden, activation='relu')(x)
  return keras.Model(inputs, layers.Dense(num_classes)(x))


@gin.configurable
def plain_sequential(input_shape, num_classes, hidden=32):
  """The same MLP as a keras.Sequential."""
  return keras.Sequential([
      keras.Input(shape=tuple(input_shape)),
      layers.Flatten(),
      layers.Dense(hidden, activation='relu'),
      layers.Dense(hidden, activation='relu'),
      layers.Dense(num_classes),
  ])


@gin.configurable
def sequential_without_input(input_shape, num_classes, hidden=32):
  """The same MLP as a keras.Sequential without a keras.Input: it has no
  weights until it is called (or built)."""
  del input_shape  # known only once data flows through it
  return keras.Sequential([
      layers.Flatten(),
      layers.Dense(hidden, activation='relu'),
      layers.Dense(num_classes),
  ])

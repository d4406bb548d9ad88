"""A user's own Keras model builder, with the documented signature
(input_shape, num_classes, ...). Its head is not named 'logits' and it has
no residual blocks: the ablation's blocks are its weighted layers."""

import gin
import keras
from keras import layers


@gin.configurable
def tiny_cnn(input_shape, num_classes, filters=8, hidden=16):
  inputs = keras.Input(shape=tuple(input_shape))
  x = layers.Conv2D(filters, 3, padding='same', activation='relu',
                    name='conv1')(inputs)
  x = layers.Conv2D(2 * filters, 3, strides=2, padding='same',
                    activation='relu', name='conv2')(x)
  x = layers.Flatten(name='features')(x)
  x = layers.Dense(hidden, activation='relu', name='hidden')(x)
  outputs = layers.Dense(num_classes, name='class_scores')(x)
  return keras.Model(inputs, outputs, name='tiny_cnn')

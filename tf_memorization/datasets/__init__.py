"""tfds builders for offline datasets. Importing this package registers them."""

from tf_memorization.datasets.sklearn_digits import SklearnDigits

"""tfds builders for offline datasets. Importing this package registers them."""

from tf_memorization.data.datasets.sklearn_digits import SklearnDigits

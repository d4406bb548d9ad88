"""tf_memorization: what neural networks memorize, from many trained models.

`TrialWriter` (importing/writer.py) is importable from here; everything else
is reached through its stage's package (docs/architecture.md).
"""


def __getattr__(name):
  # Lazy: `import tf_memorization` stays cheap (no TensorFlow) until used.
  if name == 'TrialWriter':
    from tf_memorization.importing.writer import TrialWriter  # pylint: disable=g-import-not-at-top
    return TrialWriter
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')

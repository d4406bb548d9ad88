"""A user's package: a tfds builder, a model and a builder that downloads."""

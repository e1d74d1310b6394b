"""Training and evaluation of SAM-Path: data sets, transforms, the paper's loss, metrics, trainer, cache."""

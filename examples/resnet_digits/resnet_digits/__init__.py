"""A team's own model for keel: a small residual CNN over scikit-learn's 8x8 digits, with its
own preprocessing and its own Lightning training step. Nothing here is keel's code; keel
finds it by ``[model] target = "resnet_digits:ResNetFamily"``."""

from resnet_digits.family import ResNetFamily, ResNetParams

__all__ = ["ResNetFamily", "ResNetParams"]

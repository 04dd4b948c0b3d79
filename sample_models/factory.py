"""A factory function with arguments, for --model-arg.

Built for 8x8 single-channel images (the built-in `digits` data) and 10 classes.
`vgdiag run --model sample_models/factory.py:make_mlp --model-arg depth=8` converts
"8" to an int because the parameter is annotated `int`.
"""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU, "gelu": nn.GELU}


def make_mlp(
    depth: int = 5,
    width: int = 64,
    activation: str = "tanh",
    in_features: int = 64,
    num_classes: int = 10,
) -> nn.Sequential:
    """Flatten -> depth x [Linear(width) -> activation] -> Linear(num_classes)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
    layers: list[nn.Module] = [nn.Flatten()]
    features = in_features
    for _ in range(depth):
        layers += [nn.Linear(features, width), ACTIVATIONS[activation]()]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)

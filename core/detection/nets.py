"""MTCNN's three networks (PNet, RNet, ONet) in PyTorch, with the weights of the ``mtcnn`` package.

The ``mtcnn`` package (1.0.0) ships its trained weights as lz4-compressed joblib lists of numpy
arrays in Keras order and layout, but it needs TensorFlow to run them (even ``import mtcnn``
fails without it). We locate those files with :mod:`importlib` *without importing the package*,
load them with joblib and copy them into these modules. Layer names follow the original.

Keras -> PyTorch layout notes (checked against ``mtcnn_reference/net_io/*.npz`` in the tests):
- convolution kernels are (kh, kw, in, out) -> (out, in, kh, kw);
- PReLU slopes are (1, 1, C) shared over height and width -> (C,);
- dense kernels are (in, out) -> (out, in);
- in RNet/ONet a ``Permute((2, 1, 3))`` precedes ``Flatten``: the dense layer reads the feature
  map in (width, height, channel) order, so we permute NCHW -> NWHC before flattening;
- TensorFlow's 'same' max-pooling pads only at the end for these sizes, which is exactly
  PyTorch's ``ceil_mode=True`` with no padding.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn


class WeightsNotFound(FileNotFoundError):
    """The ``mtcnn`` package (which carries the weights) is not installed."""


def mtcnn_weights_dir() -> Path:
    """Folder of ``{pnet,rnet,onet}.lz4`` inside the installed ``mtcnn`` package.

    Found through the import system's metadata only: importing ``mtcnn`` would import TensorFlow.
    """
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFound(
            "The MTCNN weights come from the 'mtcnn' package, which is not installed: "
            "pip install mtcnn==1.0.0 joblib lz4 (TensorFlow is not needed)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "assets" / "weights"
    if not folder.is_dir():
        raise WeightsNotFound(f"The 'mtcnn' package has no weights folder at {folder}")
    return folder


def load_keras_weights(name: str) -> list[np.ndarray]:
    """The list of float32 arrays stored in ``mtcnn/assets/weights/<name>.lz4``."""
    import joblib  # imported lazily: only needed when the nets are first built

    path = mtcnn_weights_dir() / f"{name}.lz4"
    if not path.is_file():
        raise WeightsNotFound(f"MTCNN weights file missing: {path}")
    return [np.asarray(array, dtype=np.float32) for array in joblib.load(path)]


class _KerasLoadable(nn.Module):
    """Copies a Keras weight list into the module's layers, in the order Keras built them."""

    # Layer names in Keras build order; each conv/dense layer takes (kernel, bias), PReLU (alpha).
    keras_order: tuple[str, ...] = ()

    def load_keras(self, arrays: list[np.ndarray]) -> None:
        arrays = list(arrays)
        for name in self.keras_order:
            layer = getattr(self, name)
            if isinstance(layer, nn.PReLU):
                alpha = arrays.pop(0).reshape(-1)
                _assign(layer.weight, alpha, name)
            elif isinstance(layer, nn.Conv2d):
                kernel, bias = arrays.pop(0), arrays.pop(0)
                _assign(layer.weight, kernel.transpose(3, 2, 0, 1), name)
                _assign(layer.bias, bias, name)
            elif isinstance(layer, nn.Linear):
                kernel, bias = arrays.pop(0), arrays.pop(0)
                _assign(layer.weight, kernel.T, name)
                _assign(layer.bias, bias, name)
            else:  # pragma: no cover - keras_order lists only weighted layers
                raise TypeError(f"{name} has no Keras weights")
        if arrays:
            raise ValueError(f"{type(self).__name__}: {len(arrays)} unused weight arrays")


def _assign(parameter: torch.Tensor, value: np.ndarray, name: str) -> None:
    if tuple(parameter.shape) != tuple(value.shape):
        raise ValueError(f"{name}: weight shape {value.shape} does not fit {tuple(parameter.shape)}")
    with torch.no_grad():
        parameter.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """Keras' ``Permute((2, 1, 3))`` + ``Flatten`` on NHWC, expressed on NCHW."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(_KerasLoadable):
    """Proposal network: fully convolutional, 12x12 receptive field, stride 2.

    Input: N x 3 x H x W normalised as (pixel - 127.5) / 128. Output: box regression
    (N x 4 x H' x W') and face probability (N x H' x W').
    """

    keras_order = ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4_1", "conv4_2")

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 4, 1)
        self.conv4_2 = nn.Conv2d(32, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x), torch.softmax(self.conv4_2(x), dim=1)[:, 1]


class RNet(_KerasLoadable):
    """Refinement network on 24x24 patches: box regression (N x 4), face probability (N)."""

    keras_order = ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "fc4", "prelu4",
                   "fc5_1", "fc5_2")

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.fc4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.fc5_1 = nn.Linear(128, 4)
        self.fc5_2 = nn.Linear(128, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.fc4(_flatten_whc(x)))
        return self.fc5_1(x), torch.softmax(self.fc5_2(x), dim=1)[:, 1]


class ONet(_KerasLoadable):
    """Output network on 48x48 patches: box regression (N x 4), landmarks (N x 10: five x then
    five y, relative to the box), face probability (N)."""

    keras_order = ("conv1", "prelu1", "conv2", "prelu2", "conv3", "prelu3", "conv4", "prelu4",
                   "fc5", "prelu5", "fc6_1", "fc6_2", "fc6_3")

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.fc5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.fc6_1 = nn.Linear(256, 4)
        self.fc6_2 = nn.Linear(256, 10)
        self.fc6_3 = nn.Linear(256, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.fc5(_flatten_whc(x)))
        return self.fc6_1(x), self.fc6_2(x), torch.softmax(self.fc6_3(x), dim=1)[:, 1]


def load_nets(device: torch.device | str = "cpu") -> tuple[PNet, RNet, ONet]:
    """The three networks with the ``mtcnn`` package's weights, in eval mode on ``device``."""
    nets = []
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        net = cls()
        net.load_keras(load_keras_weights(name))
        # channels-last halves the CPU time of these small convolutions (oneDNN's fast path).
        nets.append(net.eval().requires_grad_(False).to(device, memory_format=torch.channels_last))
    return tuple(nets)  # type: ignore[return-value]

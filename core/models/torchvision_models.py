"""torchvision backbones (ResNet, VGG, DenseNet) as face classifiers: stages -> GAP -> head.

Each backbone is cut into its natural stages (ResNet's stem + layer1..4, VGG's five conv blocks,
DenseNet's stem + four dense blocks) so that ``freeze="last:N"`` can unfreeze whole stages.
VGG's 4096-wide fully connected classifier is dropped for global average pooling, as the source
notebooks' Keras ``include_top=False`` + GAP models did: it is 90% of VGG16's parameters and was
trained for 1000 ImageNet classes at 224 px.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
from torchvision import models as tvm
from torchvision.models import WeightsEnum

from core.models.heads import build_head
from core.models.imagenet import load_imagenet_state_dict, weights_path
from core.models.registry import ModelSpec, parse_freeze, register_model


class FaceClassifier(nn.Module):
    """A backbone split into stages, global average pooling, and a head.

    Attributes:
        stages: ``nn.ModuleList`` of backbone stages, input to output.
        head: the classification head (trainable whatever the freezing preset).
        arch, spec, preprocessing: the registry name, its :class:`ModelSpec` and input dict.
    """

    is_embedding = False

    def __init__(self, stages: Sequence[nn.Module], feature_dim: int, head: nn.Module, *,
                 spec: ModelSpec):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.head = head
        self.feature_dim = feature_dim
        self.arch = spec.name
        self.spec = spec
        self.preprocessing = spec.preprocessing()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (N, feature_dim): what the head sees."""
        for stage in self.stages:
            x = stage(x)
        return self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def set_freeze(self, freeze: str) -> None:
        """Apply a freezing preset: "none", "head" or "last:N" (see ``build_model``)."""
        n_train = parse_freeze(freeze, len(self.stages))
        first = len(self.stages) - n_train
        for i, stage in enumerate(self.stages):
            stage.requires_grad_(i >= first)
        self.head.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> "FaceClassifier":
        # A frozen stage also keeps its BatchNorm statistics: in train mode BN would still update
        # running means from small face batches and drift away from the weights it was frozen with.
        super().train(mode)
        if mode:
            for stage in self.stages:
                if not any(p.requires_grad for p in stage.parameters()):
                    stage.eval()
        return self


def _build(spec: ModelSpec, make: Callable[[], nn.Module],
           split: Callable[[nn.Module], tuple[list[nn.Module], int]], *, num_classes: int,
           pretrained: bool, head: str, freeze: str, dropout: float) -> FaceClassifier:
    """The shared factory: torchvision model -> (ImageNet weights) -> stages + GAP + head."""
    net = make()
    if pretrained:
        state = load_imagenet_state_dict(imagenet_weights(spec.name), arch=spec.name)
        own = net.state_dict()
        # Only what the backbone keeps (VGG's features); a missing key still raises.
        net.load_state_dict({k: v for k, v in state.items() if k in own})
    stages, dim = split(net)
    model = FaceClassifier(stages, dim, build_head(dim, num_classes, head, dropout=dropout),
                           spec=spec)
    model.set_freeze(freeze)
    return model


def _resnet_stages(net: tvm.ResNet) -> tuple[list[nn.Module], int]:
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return [stem, net.layer1, net.layer2, net.layer3, net.layer4], net.fc.in_features


def _vgg16_features() -> nn.Module:
    """VGG-16's conv part only: building the full model would allocate and initialise its
    120M-parameter classifier just to throw it away."""
    net = nn.Module()
    net.features = tvm.vgg.make_layers(tvm.vgg.cfgs["D"], batch_norm=False)
    for m in net.features.modules():
        if isinstance(m, nn.Conv2d):  # torchvision's VGG init (VGG.__init__, init_weights=True)
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
    return net


def _vgg_stages(net: nn.Module) -> tuple[list[nn.Module], int]:
    stages, block = [], []
    for layer in net.features:
        block.append(layer)
        if isinstance(layer, nn.MaxPool2d):  # each of VGG's 5 blocks ends with a max-pool
            stages.append(nn.Sequential(*block))
            block = []
    return stages, 512


def _densenet_stages(net: tvm.DenseNet) -> tuple[list[nn.Module], int]:
    f = net.features
    return [nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0),
            nn.Sequential(f.denseblock1, f.transition1),
            nn.Sequential(f.denseblock2, f.transition2),
            nn.Sequential(f.denseblock3, f.transition3),
            # torchvision applies this ReLU functionally in DenseNet.forward
            nn.Sequential(f.denseblock4, f.norm5, nn.ReLU(inplace=True))], net.classifier.in_features


# The ImageNet weights each builder loads (torchvision's weights API; file names from their URLs).
IMAGENET_WEIGHTS: dict[str, WeightsEnum] = {
    "resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V2,  # torchvision's better recipe (80.9% top-1)
    "vgg16": tvm.VGG16_Weights.IMAGENET1K_V1,
    "densenet121": tvm.DenseNet121_Weights.IMAGENET1K_V1,
}

# Defaults: AdamW + cosine, 112 px crops (the face fills them; 224 costs 4x for little on
# faces), sized for 2 CPU cores. VGG16 has no BatchNorm and diverges at 1e-3.
_RESNET18 = ModelSpec("resnet18", image_size=112, batch_size=64, lr=1e-3, epochs=10, stages=5,
                      paper="Deep Residual Learning for Image Recognition (He et al., 2015)")
_RESNET50 = ModelSpec("resnet50", image_size=112, batch_size=32, lr=5e-4, epochs=8, stages=5,
                      paper="Deep Residual Learning for Image Recognition (He et al., 2015)")
_VGG16 = ModelSpec("vgg16", image_size=112, batch_size=32, lr=1e-4, epochs=8, stages=5,
                   paper="Very Deep Convolutional Networks for Large-Scale Image Recognition "
                         "(Simonyan and Zisserman, 2014)")
_DENSENET121 = ModelSpec("densenet121", image_size=112, batch_size=32, lr=5e-4, epochs=8,
                         stages=5, paper="Densely Connected Convolutional Networks "
                                         "(Huang et al., 2016)")


@register_model("resnet18", spec=_RESNET18)
def resnet18(**kwargs) -> FaceClassifier:
    """ResNet-18 (He et al., 2015); ImageNet weights IMAGENET1K_V1."""
    return _build(_RESNET18, tvm.resnet18, _resnet_stages, **kwargs)


@register_model("resnet50", spec=_RESNET50)
def resnet50(**kwargs) -> FaceClassifier:
    """ResNet-50 (He et al., 2015); ImageNet weights IMAGENET1K_V2."""
    return _build(_RESNET50, tvm.resnet50, _resnet_stages, **kwargs)


@register_model("vgg16", spec=_VGG16)
def vgg16(**kwargs) -> FaceClassifier:
    """VGG-16 conv blocks + GAP (Simonyan and Zisserman, 2014); ImageNet weights IMAGENET1K_V1."""
    return _build(_VGG16, _vgg16_features, _vgg_stages, **kwargs)


@register_model("densenet121", spec=_DENSENET121)
def densenet121(**kwargs) -> FaceClassifier:
    """DenseNet-121 (Huang et al., 2016); ImageNet weights IMAGENET1K_V1."""
    return _build(_DENSENET121, tvm.densenet121, _densenet_stages, **kwargs)


def imagenet_weights(name: str) -> WeightsEnum:
    """The torchvision weights entry a registered torchvision architecture loads."""
    if name not in IMAGENET_WEIGHTS:
        raise ValueError(f"no ImageNet weights for {name!r}; valid: {', '.join(IMAGENET_WEIGHTS)}")
    return IMAGENET_WEIGHTS[name]


def imagenet_available(name: str) -> bool:
    """True when ``name``'s ImageNet weights file is already in the torch hub cache (so a UI can
    offer "pretrained" without risking a WeightsUnavailable on machines with no internet)."""
    return name in IMAGENET_WEIGHTS and weights_path(IMAGENET_WEIGHTS[name]).is_file()

"""The model registry: every architecture, head and freezing preset; ImageNet weights offline."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn
import torchvision.models as tvm

from core import models
from core.models import (ARCH_DEFAULTS, WeightsUnavailable, build_model, freeze_choices,
                         get_penultimate, list_models, register_model, weights_path)
from core.models.registry import ModelSpec

TORCHVISION_ARCHS = [n for n in list_models() if not models.is_embedding(n)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny inputs gain nothing from threads, and on a busy 2-core machine OpenMP threads that
    spin-wait for each other made a DenseNet forward 20x slower (measured: 20 s vs 1 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch, tmp_path):
    """No test may fetch weights: an empty hub cache, offline, and a downloader that fails loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FACELAB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def test_registry_lists_the_expected_architectures():
    assert set(list_models()) >= {"resnet18", "resnet50", "vgg16", "densenet121", "dlib_face"}
    assert list_models() == sorted(list_models())


def _forward_backward(model: nn.Module, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    model.train()
    out = model(x)
    assert out.shape == (x.shape[0], num_classes)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.arange(x.shape[0]) % num_classes).backward()
    return out


def _check_gradients(model: nn.Module) -> None:
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing to train"
    for name, p in model.named_parameters():
        if name in trainable:
            assert p.grad is not None, f"trainable {name} got no gradient"
            assert torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, f"frozen {name} got a gradient"
    assert any(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n in trainable)


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_every_arch_and_head_trains_end_to_end(arch, head):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=3, head=head)
    _forward_backward(model, torch.randn(2, 3, 64, 64), 3)
    _check_gradients(model)
    assert all(p.requires_grad for p in model.parameters())  # freeze="none"
    feats = get_penultimate(model.eval(), torch.randn(2, 3, 64, 64))
    assert feats.shape == (2, model.feature_dim)
    assert model.preprocessing["image_size"] == ARCH_DEFAULTS[arch].image_size
    assert len(model.preprocessing["mean"]) == len(model.preprocessing["std"]) == 3


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
@pytest.mark.parametrize("freeze", ["head", "last:1", "last:2"])
def test_freezing_presets_train_exactly_the_chosen_stages(arch, freeze):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=4, head="mlp", freeze=freeze)
    n_train = 0 if freeze == "head" else int(freeze.split(":")[1])
    n_stages = len(model.stages)
    for i, stage in enumerate(model.stages):
        expected = i >= n_stages - n_train
        assert all(p.requires_grad == expected for p in stage.parameters()), (i, freeze)
    assert all(p.requires_grad for p in model.head.parameters())
    # frozen stages keep their BatchNorm statistics while the rest trains
    frozen_bn = [m for s in model.stages[:n_stages - n_train] for m in s.modules()
                 if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in frozen_bn]
    _forward_backward(model, torch.randn(2, 3, 64, 64), 4)
    _check_gradients(model)
    assert all(not m.training for m in frozen_bn)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, frozen_bn))


def test_every_listed_freeze_choice_builds():
    assert freeze_choices("resnet18") == ["none", "head", "last:1", "last:2", "last:3", "last:4",
                                          "last:5"]
    assert freeze_choices("dlib_face") == ["none", "head"]
    for arch in ("resnet18", "dlib_face"):
        for freeze in freeze_choices(arch):
            build_model(arch, num_classes=2, freeze=freeze)


@pytest.mark.parametrize("kwargs, words", [
    ({"name": "resnet19"}, ["resnet19", "resnet18", "vgg16", "dlib_face"]),
    ({"head": "deep"}, ["deep", "linear", "mlp"]),
    ({"freeze": "all"}, ["all", "none", "head", "last:N"]),
    ({"freeze": "last:0"}, ["last:0", "1..5"]),
    ({"freeze": "last:9"}, ["last:9", "1..5"]),
    ({"freeze": "last:x"}, ["last:x"]),
    ({"num_classes": 1}, ["num_classes", ">= 2"]),
    ({"dropout": 1.0}, ["dropout"]),
])
def test_bad_build_arguments_name_the_valid_choices(kwargs, words):
    args = {"name": "resnet18", "num_classes": 3, **kwargs}
    with pytest.raises(ValueError) as err:
        build_model(args.pop("name"), **args)
    for word in words:
        assert word in str(err.value)


def test_register_model_refuses_a_duplicate_name():
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet18", spec=ARCH_DEFAULTS["resnet18"])(lambda **kw: nn.Identity())


def test_register_model_adds_a_builder_with_generic_defaults():
    from core.models import registry

    @register_model()
    def tiny_test_net(*, num_classes, pretrained, head, freeze, dropout):
        return nn.Linear(4, num_classes)

    try:
        assert "tiny_test_net" in list_models()
        assert ARCH_DEFAULTS["tiny_test_net"].image_size == 112
        assert build_model("tiny_test_net", num_classes=3)(torch.zeros(1, 4)).shape == (1, 3)
    finally:  # keep the registry as the other tests expect it
        registry._BUILDERS.pop("tiny_test_net")
        registry._SPECS.pop("tiny_test_net")


def test_arch_defaults_cover_every_model_with_sane_values():
    assert set(ARCH_DEFAULTS) == set(list_models())
    for name, spec in ARCH_DEFAULTS.items():
        assert isinstance(spec, ModelSpec) and spec.name == name
        assert 32 <= spec.image_size <= 512 and 1 <= spec.batch_size <= 512
        assert 0 < spec.lr < 1 and 1 <= spec.epochs <= 200
        assert spec.head in models.HEADS and spec.freeze in freeze_choices(name)


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=5, head="mlp", freeze="last:2").eval()
    path = tmp_path / "ckpt.pt"
    torch.save({"state": model.state_dict(), "build": model.build_args,
                "preprocessing": model.preprocessing}, path)
    saved = torch.load(path, weights_only=True)
    args = dict(saved["build"])
    again = build_model(args.pop("name"), **args).eval()
    again.load_state_dict(saved["state"])
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(model(x), again(x))


def test_dlib_face_model_trains_only_its_head_on_embeddings():
    model = build_model("dlib_face", num_classes=3, head="mlp")
    assert model.is_embedding and model.embedding_dim == 128 and models.is_embedding("dlib_face")
    assert set(model.state_dict()) == {f"head.{k}" for k in model.head.state_dict()}
    x = nn.functional.normalize(torch.randn(4, 128), dim=1)
    _forward_backward(model, x, 3)
    _check_gradients(model)
    assert torch.equal(get_penultimate(model, x), x)
    with pytest.raises(ValueError, match="embeddings"):
        model(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="none, head"):
        build_model("dlib_face", num_classes=3, freeze="last:1")
    # load_model rebuilds with pretrained=False: the embedder is pretrained regardless
    build_model("dlib_face", num_classes=3, pretrained=False)


# -- ImageNet weights ------------------------------------------------------------------------------

def test_pretrained_weights_load_from_the_torch_hub_cache():
    torch.manual_seed(1)
    reference = tvm.resnet18()
    path = weights_path(tvm.ResNet18_Weights.IMAGENET1K_V1)
    assert path.name == "resnet18-f37072fd.pth"
    assert path.parent == weights_path(tvm.ResNet18_Weights.IMAGENET1K_V1).parent
    assert str(path).startswith(os.environ["TORCH_HOME"])
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    assert models.imagenet_available("resnet18") and not models.imagenet_available("resnet50")
    model = build_model("resnet18", num_classes=3, pretrained=True)
    assert torch.equal(model.stages[0][0].weight, reference.conv1.weight)
    assert torch.equal(model.stages[4][1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(model.stages[0][1].running_var, reference.bn1.running_var)
    fresh = build_model("resnet18", num_classes=3, pretrained=False)
    assert not torch.equal(fresh.stages[0][0].weight, reference.conv1.weight)


def test_densenet_weights_with_legacy_key_names_load():
    # torchvision's densenet121 file uses pre-rename keys ("norm.1"); they must be mapped.
    torch.manual_seed(2)
    reference = tvm.densenet121()
    legacy = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v
              for k, v in reference.state_dict().items()}
    assert any(".norm.1." in k for k in legacy)
    path = weights_path(tvm.DenseNet121_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True)
    torch.save(legacy, path)
    model = build_model("densenet121", num_classes=2, pretrained=True)
    layer = reference.features.denseblock3.denselayer5
    assert torch.equal(model.stages[3][0].denselayer5.norm1.weight, layer.norm1.weight)


def test_vgg_loads_its_conv_weights_and_ignores_the_imagenet_classifier():
    torch.manual_seed(3)
    features = tvm.vgg.make_layers(tvm.vgg.cfgs["D"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.6.weight"] = torch.zeros(1000, 4096)  # the 1000-class top we do not keep
    path = weights_path(tvm.VGG16_Weights.IMAGENET1K_V1)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    model = build_model("vgg16", num_classes=2, pretrained=True)
    assert torch.equal(model.stages[4][0].weight, features[24].weight)  # first conv of block 5
    assert torch.equal(model.stages[4][4].weight, features[28].weight)  # last conv of block 5


def test_missing_weights_offline_say_which_file_to_put_where():
    with pytest.raises(WeightsUnavailable) as err:
        build_model("resnet50", num_classes=3, pretrained=True)
    expected = weights_path(tvm.ResNet50_Weights.IMAGENET1K_V2)
    assert str(expected) in str(err.value) and "resnet50-11ad3fa6.pth" in str(err.value)
    assert isinstance(err.value, RuntimeError)


def test_a_failed_download_becomes_weights_unavailable(monkeypatch):
    monkeypatch.delenv("FACELAB_OFFLINE")
    calls = []

    def no_network(url, **kwargs):
        calls.append((url, kwargs))
        raise OSError("no route to host")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(WeightsUnavailable, match="vgg16-397923af.pth.*no route to host|no route"):
        build_model("vgg16", num_classes=3, pretrained=True)
    assert calls and calls[0][0].endswith("vgg16-397923af.pth")
    assert calls[0][1]["model_dir"] == str(weights_path(tvm.VGG16_Weights.IMAGENET1K_V1).parent)

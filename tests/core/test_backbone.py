"""MobileNetV1 against the paper's Table 1 and timm's model interface."""

import pytest
import timm
import torch

import mnet_tasks  # noqa: F401 - registers the timm models
from mnet_tasks import MobileNetV1, scale_channels


# Channels of the stem and Conv2d_1 .. Conv2d_13 (paper Table 1, times alpha), as TF-slim builds them.
@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        (1.0, [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]),
        (0.75, [24, 48, 96, 96, 192, 192, 384, 384, 384, 384, 384, 384, 768, 768]),
        (0.5, [16, 32, 64, 64, 128, 128, 256, 256, 256, 256, 256, 256, 512, 512]),
        (0.25, [8, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128, 128, 256, 256]),
    ],
)
def test_channels_match_tf_slim_for_the_paper_alphas(alpha, expected):
    model = MobileNetV1(alpha=alpha)
    channels = [model.stem.conv.out_channels] + [block.pw.conv.out_channels for block in model.blocks]
    assert channels == expected
    assert [block.dw.conv.stride[0] for block in model.blocks] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    # TF-slim's own rule (truncate, at least 8) gives the same numbers for the paper's alphas
    assert all(max(int(c * alpha), 8) == scale_channels(c, alpha) for c in (32, 64, 128, 256, 512, 1024))


def test_any_positive_alpha_keeps_at_least_8_channels_and_rejects_nonpositive():
    thin = MobileNetV1(alpha=0.05)
    assert thin.stem.conv.out_channels == 8
    assert thin(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    assert MobileNetV1(alpha=1.3).num_features == scale_channels(1024, 1.3)
    for bad in (0, -0.5):
        with pytest.raises(ValueError, match="alpha"):
            MobileNetV1(alpha=bad)


def test_every_conv_is_followed_by_batchnorm_and_the_chosen_activation():
    for activation, act_type in (("relu", torch.nn.ReLU), ("relu6", torch.nn.ReLU6)):
        model = MobileNetV1(alpha=0.25, activation=activation)
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 1 + 2 * 13
        layers = [m for m in model.modules() if hasattr(m, "conv")]
        assert all(isinstance(m.bn, torch.nn.BatchNorm2d) and type(m.act) is act_type for m in layers)
    with pytest.raises(ValueError, match="activation"):
        MobileNetV1(activation="gelu")


def test_ablations_change_the_blocks():
    full = MobileNetV1(alpha=0.25, separable=False)
    assert all(isinstance(block.conv, torch.nn.Conv2d) and block.conv.kernel_size == (3, 3) for block in full.blocks)
    assert len(MobileNetV1(alpha=0.25, shallow=True).blocks) == 8


@pytest.mark.parametrize("size", [224, 160, 100, 33])
@pytest.mark.parametrize("shallow", [False, True])
def test_feature_maps_agree_with_feature_info(size, shallow):
    model = MobileNetV1(alpha=0.5, shallow=shallow, features_only=True).eval()
    features = model(torch.randn(2, 3, size, size))
    assert [info["reduction"] for info in model.feature_info] == [2, 4, 8, 16, 32]
    assert len(features) == 5
    for info, feature in zip(model.feature_info, features, strict=True):
        expected_side = size
        for _ in range(info["reduction"].bit_length() - 1):
            expected_side = (expected_side + 1) // 2  # a 3x3 stride-2 conv with padding 1 gives ceil(n / 2)
        assert feature.shape == (2, info["num_chs"], expected_side, expected_side)
    assert [info["num_chs"] for info in model.feature_info] == [32, 64, 128, 256, 512]


def test_out_indices_select_maps_and_prune_the_rest():
    model = MobileNetV1(features_only=True, out_indices=(1, 3))
    features = model(torch.randn(1, 3, 128, 128))
    assert [f.shape[1:] for f in features] == [(128, 32, 32), (512, 8, 8)]
    assert len(model.blocks) == 11  # Conv2d_12 and Conv2d_13 are not needed for stride 16
    assert isinstance(model.classifier, torch.nn.Identity)


def test_head_api_like_timm():
    model = MobileNetV1(alpha=0.25, num_classes=7).eval()
    x = torch.randn(2, 3, 96, 96)
    features = model.forward_features(x)
    assert features.shape == (2, 256, 3, 3)
    assert model.forward_head(features, pre_logits=True).shape == (2, 256)
    assert torch.equal(model.forward_head(features), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    model.reset_classifier(0)
    assert model(x).shape == (2, 256)
    assert MobileNetV1(alpha=0.25, num_classes=0)(x).shape == (2, 256)


def test_inputs_below_32_pixels_are_rejected_with_the_size():
    with pytest.raises(ValueError, match="at least 32px"):
        MobileNetV1(alpha=0.25)(torch.randn(1, 3, 31, 64))


def test_registered_in_timm_with_alpha_in_the_name():
    names = timm.list_models("mnet_mobilenet_v1_*")
    assert names == ["mnet_mobilenet_v1_025", "mnet_mobilenet_v1_050", "mnet_mobilenet_v1_075", "mnet_mobilenet_v1_100"]
    model = timm.create_model("mnet_mobilenet_v1_050", num_classes=5)
    assert isinstance(model, MobileNetV1) and model.alpha == 0.5 and model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    features = timm.create_model("mnet_mobilenet_v1_025", features_only=True, out_indices=(3, 4))
    assert features.feature_info.channels() == [128, 256]
    assert features.feature_info.reduction() == [16, 32]
    assert [f.shape[1] for f in features(torch.randn(1, 3, 64, 64))] == [128, 256]


def test_timm_weights_convert_to_identical_logits():
    from mnet_tasks.weights import convert_timm_state_dict

    torch.manual_seed(0)
    reference = timm.create_model("mobilenetv1_100", num_classes=1000)
    for module in reference.modules():  # non-trivial BN statistics, so a mixed-up BN would show
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.running_mean, -0.1, 0.1)
            torch.nn.init.uniform_(module.running_var, 0.5, 1.5)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.1, 0.1)
    reference.eval()
    model = MobileNetV1(alpha=1.0)
    model.load_state_dict(convert_timm_state_dict(reference.state_dict()), strict=True)
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected, actual = reference(x), model(x)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)

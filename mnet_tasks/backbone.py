"""MobileNetV1 (Howard et al., 2017, Table 1) with the width multiplier α and the paper's ablations.

Layer names follow the TF code's numbering: ``stem`` is Conv2d_0 and ``blocks[i]`` is Conv2d_{i+1}. The model
speaks timm's interface (``forward_features``, ``forward_head``, ``reset_classifier``, ``feature_info``,
``forward_intermediates``) so timm and torchvision-style detectors can consume it without adapters.
"""

from __future__ import annotations

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import make_divisible
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

# (pointwise output channels, depthwise stride) of Conv2d_1 .. Conv2d_13. The paper prints stride 2 for the
# last block; the released code and the 7x7 output use 1.
TABLE_1 = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
STEM_CHANNELS = 32
SHALLOW_REMOVED = range(6, 11)  # Conv2d_7 .. Conv2d_11: the five 14x14x512 blocks (Table 5)
MIN_INPUT_SIZE = 32
ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


def scale_channels(channels: int, alpha: float, min_depth: int = 8) -> int:
    """Channels of a layer under width multiplier ``alpha``.

    Rounds to a multiple of 8 (never below ``min_depth``, never more than 10% down), as timm does. TF-slim truncates
    ``int(channels * alpha)`` with a floor of 8 instead; both give the same network for α ∈ {1, 0.75, 0.5, 0.25},
    the paper's four models, and differ only for other α, where multiples of 8 run faster.
    """
    return make_divisible(channels * alpha, divisor=8, min_value=min_depth)


class ConvBnAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + activation: every layer of the paper's network."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, groups: int, act: type, eps: float):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs, eps=eps)
        self.act = act(inplace=True)


class DepthwiseSeparable(nn.Sequential):
    """3x3 depthwise conv (carries the stride) followed by a 1x1 pointwise conv, each with BN and activation."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, act: type, eps: float):
        super().__init__()
        self.dw = ConvBnAct(in_chs, in_chs, 3, stride, groups=in_chs, act=act, eps=eps)
        self.pw = ConvBnAct(in_chs, out_chs, 1, 1, groups=1, act=act, eps=eps)


class MobileNetV1(nn.Module):
    """The paper's MobileNet.

    Args:
        num_classes: classifier outputs; 0 gives a headless backbone whose forward returns pooled features.
        alpha: width multiplier α > 0, applied to every layer (stem included), see :func:`scale_channels`.
        min_depth: no layer gets fewer channels (TF-slim's 8; the TF Object Detection API's SSD uses 16, which
            changes the first two layers at α=0.25).
        activation: ``"relu6"`` (released code, timm weights) or ``"relu"`` (the paper's text).
        separable: False replaces every separable block by a full 3x3 conv (the paper's Table 4 ablation).
        shallow: True removes the five 14x14x512 blocks (the paper's Table 5 ablation).
        drop_rate: dropout before the classifier (the released code keeps 0.999 of activations).
        bn_eps: BatchNorm epsilon; 1e-5 as in timm's weights (the TF release used 1e-3).
        features_only: forward returns the feature maps chosen by ``out_indices`` instead of logits.
        out_indices: indices into ``feature_info`` (strides 2, 4, 8, 16, 32) for ``features_only``.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        alpha: float = 1.0,
        min_depth: int = 8,
        in_chans: int = 3,
        activation: str = "relu6",
        separable: bool = True,
        shallow: bool = False,
        drop_rate: float = 0.001,
        bn_eps: float = 1e-5,
        features_only: bool = False,
        out_indices: tuple[int, ...] = (0, 1, 2, 3, 4),
    ):
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"alpha (width multiplier) must be > 0, got {alpha}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        act = ACTIVATIONS[activation]
        self.alpha, self.min_depth = alpha, min_depth
        self.num_classes = num_classes
        self.drop_rate = drop_rate

        self.stem = ConvBnAct(
            in_chans, scale_channels(STEM_CHANNELS, alpha, min_depth), 3, 2, groups=1, act=act, eps=bn_eps
        )
        layers = [spec for i, spec in enumerate(TABLE_1) if not (shallow and i in SHALLOW_REMOVED)]
        blocks = []
        in_chs, reduction = self.stem.conv.out_channels, 2
        self.feature_info: list[dict] = []
        self.stage_ends: list[int] = []  # index of each feature_info stage's last block
        for i, (channels, stride) in enumerate(layers):
            out_chs = scale_channels(channels, alpha, min_depth)
            if separable:
                blocks.append(DepthwiseSeparable(in_chs, out_chs, stride, act=act, eps=bn_eps))
            else:
                blocks.append(ConvBnAct(in_chs, out_chs, 3, stride, groups=1, act=act, eps=bn_eps))
            in_chs, reduction = out_chs, reduction * stride
            ends_stage = i + 1 == len(layers) or layers[i + 1][1] == 2
            if ends_stage:
                self.feature_info.append(dict(num_chs=out_chs, reduction=reduction, module=f"blocks.{i}"))
                self.stage_ends.append(i)
        self.blocks = nn.Sequential(*blocks)
        self.num_features = self.head_hidden_size = in_chs
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()

        self.features_only = features_only
        self.out_indices = tuple(out_indices)
        if features_only:
            self.prune_intermediate_layers(self.out_indices)
        self._init_weights()

    def _init_weights(self) -> None:
        """He init with the fan-out counted per group, so depthwise convs start at unit gain like the others.

        (PyTorch's kaiming init counts all channels for a depthwise filter, which shrinks its outputs ~C-fold
        and leaves BN's running statistics far from the batch statistics for the first hundreds of steps.)
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
                nn.init.normal_(module.weight, std=(2.0 / fan_out) ** 0.5)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    @staticmethod
    def _check_input(x: torch.Tensor) -> None:
        if min(x.shape[-2:]) < MIN_INPUT_SIZE:
            raise ValueError(f"MobileNetV1 needs inputs of at least {MIN_INPUT_SIZE}px, got {tuple(x.shape[-2:])}")

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (timm's contract); 0 removes it."""
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled last feature map (stride 32)."""
        self._check_input(x)
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x.mean((2, 3)))
        return x if pre_logits else self.classifier(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Feature maps at the ``feature_info`` stages in ``indices`` (timm's contract; ``norm`` is a no-op)."""
        if output_fmt != "NCHW":
            raise ValueError(f"MobileNetV1 only produces NCHW features, got output_fmt={output_fmt!r}")
        self._check_input(x)
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        take_blocks = {self.stage_ends[i] for i in take_indices}
        last_block = self.stage_ends[max_index] if stop_early or intermediates_only else len(self.blocks) - 1
        x = self.stem(x)
        intermediates = []
        for i, block in enumerate(self.blocks[: last_block + 1]):
            x = block(x)
            if i in take_blocks:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self,
        indices: int | list[int] | tuple[int, ...] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the blocks after the last wanted stage (and the classifier) for feature extraction."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        self.blocks = self.blocks[: self.stage_ends[max_index] + 1]
        self.feature_info = self.feature_info[: max_index + 1]
        self.stage_ends = self.stage_ends[: max_index + 1]
        if prune_head:
            self.reset_classifier(0)
        return take_indices

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_intermediates(x, self.out_indices, intermediates_only=True)
        return self.forward_head(self.forward_features(x))


# timm registration: `import mnet_tasks` makes `timm.create_model("mnet_mobilenet_v1_050")` build this network.
def _timm_pretrained_filter(state_dict: dict, model: MobileNetV1) -> dict:
    from mnet_tasks.weights import backbone_state_dict

    return backbone_state_dict(state_dict)


def _cfg(**overrides) -> dict:
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv",
        "classifier": "classifier",
        **overrides,
    }


default_cfgs = generate_default_cfgs(
    {
        # timm's own ImageNet weights, converted on load by _timm_pretrained_filter.
        "mnet_mobilenet_v1_100.ra4_e3600_r224_in1k": _cfg(
            hf_hub_id="timm/mobilenetv1_100.ra4_e3600_r224_in1k",
            interpolation="bicubic",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
        ),
        "mnet_mobilenet_v1_075": _cfg(),
        "mnet_mobilenet_v1_050": _cfg(),
        "mnet_mobilenet_v1_025": _cfg(),
    }
)


def _create_mobilenet_v1(variant: str, variant_alpha: float, pretrained: bool = False, **kwargs) -> MobileNetV1:
    """The variant's width unless ``kwargs`` set another ``alpha``: a model folder of a width without a name of its
    own (``python -m mnet_tasks.export format=hf``) is built by the nearest variant with its ``model_args``."""
    kwargs.setdefault("alpha", variant_alpha)
    return build_model_with_cfg(
        MobileNetV1,
        variant,
        pretrained,
        pretrained_filter_fn=_timm_pretrained_filter,
        feature_cfg=dict(feature_cls="getter"),
        **kwargs,
    )


@register_model
def mnet_mobilenet_v1_100(pretrained: bool = False, **kwargs) -> MobileNetV1:
    """MobileNetV1 α=1.0; pretrained=True loads timm's ``mobilenetv1_100`` ImageNet weights."""
    return _create_mobilenet_v1("mnet_mobilenet_v1_100", 1.0, pretrained, **kwargs)


@register_model
def mnet_mobilenet_v1_075(pretrained: bool = False, **kwargs) -> MobileNetV1:
    return _create_mobilenet_v1("mnet_mobilenet_v1_075", 0.75, pretrained, **kwargs)


@register_model
def mnet_mobilenet_v1_050(pretrained: bool = False, **kwargs) -> MobileNetV1:
    return _create_mobilenet_v1("mnet_mobilenet_v1_050", 0.5, pretrained, **kwargs)


@register_model
def mnet_mobilenet_v1_025(pretrained: bool = False, **kwargs) -> MobileNetV1:
    return _create_mobilenet_v1("mnet_mobilenet_v1_025", 0.25, pretrained, **kwargs)

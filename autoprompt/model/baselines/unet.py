"""The UNet baseline: MONAI's residual UNet, trained from scratch on the prepared images and their masks."""

from __future__ import annotations

from monai.networks.nets import UNet
from torch import Tensor, nn


class SegmentationUNet(nn.Module):
    """Images B x 1 x s x s -> logits B x 1 x s x s; ``s`` must be divisible by the product of ``strides``.

    ``channels`` and ``strides`` set the levels (5 channels, 4 strides of 2 in Ronneberger et al.'s layout);
    ``res_units`` residual units per level (0: plain double convolutions)."""

    def __init__(self, input_size: int, channels: list[int], strides: list[int], res_units: int = 2) -> None:
        super().__init__()
        assert len(channels) == len(strides) + 1, f"{len(channels)} channels need {len(channels) - 1} strides"
        factor = 1
        for stride in strides:
            factor *= int(stride)
        assert input_size % factor == 0, f"input size {input_size} is not divisible by the strides' product {factor}"
        self.input_size = input_size
        self.net = UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            channels=tuple(int(c) for c in channels),
            strides=tuple(int(s) for s in strides),
            num_res_units=int(res_units),
            norm="batch",
        )

    def forward(self, images: Tensor) -> Tensor:
        s = self.input_size
        assert images.shape[1:] == (1, s, s), f"expected B x 1 x {s} x {s} images, got {tuple(images.shape)}"
        return self.net(images)

"""TransUNet (Chen et al. 2021) for binary 2D segmentation, on a timm hybrid ViT.

Images B x 1 x s x s -> logits B x 1 x s x s. The encoder is a timm ``VisionTransformer`` whose patch embedding
is a ``HybridEmbed``: a CNN (``patch_embed.backbone``) gives a feature map that is projected to tokens at the
token stride t (16 or 32 for timm's hybrids). The CNN's feature maps at strides 2, 4, ... below t are kept as
skip connections. The tokens, B x (s/t)^2 x D without class tokens, are reshaped to B x D x s/t x s/t and
decoded by the cascaded upsampler: a 3x3 conv to 512 channels, then log2(t) blocks that each upsample x2,
concatenate the skip of that stride (if any) and apply two 3x3 conv + BN + ReLU, then a 3x3 conv to 1 channel.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.layers import HybridEmbed, resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from autoprompt.errors import InputError
from autoprompt.model.baselines.weights import read_state_dict

HYBRIDS = "timm hybrid ViTs such as vit_base_r50_s16_224 (the paper's R50 + ViT-B/16) or vit_tiny_r_s16_p8_224"
BRIDGE_CHANNELS = 512


class _ConvBNReLU(nn.Sequential):
    """B x in x H x W -> B x out x H x W: 3x3 conv, batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class _DecoderBlock(nn.Module):
    """B x in x H x W (+ skip B x skip x 2H x 2W) -> B x out x 2H x 2W; ``stride`` is that of its output."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.convs = nn.Sequential(
            _ConvBNReLU(in_channels + skip_channels, out_channels), _ConvBNReLU(out_channels, out_channels)
        )

    def forward(self, x: Tensor, skip: Tensor | None) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.convs(x)


class TransUNet(nn.Module):
    """Images B x 1 x s x s (s = ``input_size``) -> logits B x 1 x s x s.

    ``encoder`` names a timm hybrid ViT (always built without downloading); ``weights`` is an optional local
    state dict of that timm model (class-token and position embeddings of another grid are resampled, classifier
    keys ignored). Images are fed to the encoder as they come (repeated to 3 channels), so normalise them as
    the weights expect. Block i of the decoder has ``decoder_channels[i]`` channels, the last entry repeated
    when the token stride needs more blocks.

    Attributes found by a dry forward at construction: ``token_stride`` (t), ``grid`` (s / t) and
    ``skip_channels`` (skip stride -> channels, strides below t); ``pretrained`` says whether weights were loaded.
    """

    def __init__(
        self,
        encoder: str = "vit_base_r50_s16_224",
        input_size: int = 224,
        weights: str | Path | None = None,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 16),
    ) -> None:
        super().__init__()
        assert len(decoder_channels) > 0, "decoder_channels must not be empty"
        self.encoder_name = encoder
        self.input_size = input_size
        self.encoder = _create_encoder(encoder, input_size)
        self.grid, self.token_stride = _token_grid(self.encoder, encoder, input_size)

        skip_modules = self._find_skips()
        self.skip_channels = {stride: channels for stride, (_, channels) in skip_modules.items()}
        self._captured: dict[int, Tensor] = {}
        for stride, (module, _) in skip_modules.items():
            module.register_forward_hook(partial(self._capture, stride))

        self.pretrained = weights is not None
        if weights is not None:
            self._load_encoder_weights(Path(weights))

        self.bridge = _ConvBNReLU(self.encoder.embed_dim, BRIDGE_CHANNELS)
        blocks = []
        in_channels, stride = BRIDGE_CHANNELS, self.token_stride
        for i in range(self.token_stride.bit_length() - 1):
            stride //= 2
            out_channels = decoder_channels[min(i, len(decoder_channels) - 1)]
            blocks.append(_DecoderBlock(in_channels, self.skip_channels.get(stride, 0), out_channels, stride))
            in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(in_channels, 1, kernel_size=3, padding=1)

    @property
    def skip_strides(self) -> tuple[int, ...]:
        """Strides of the CNN feature maps used as skips, ascending (e.g. (2, 4, 8) for R50 + ViT-B/16)."""
        return tuple(sorted(self.skip_channels))

    def forward(self, images: Tensor) -> Tensor:
        """Images B x 1 x s x s -> logits B x 1 x s x s."""
        s = self.input_size
        assert images.ndim == 4 and images.shape[1:] == (1, s, s), (
            f"expected B x 1 x {s} x {s} images, got {tuple(images.shape)}"
        )
        self._captured.clear()
        try:
            tokens = self.encoder.forward_features(images.expand(-1, 3, -1, -1))  # B x (prefix + grid^2) x D
            skips = dict(self._captured)
        finally:
            self._captured.clear()
        tokens = tokens[:, self.encoder.num_prefix_tokens :]
        x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, self.grid, self.grid)  # B x D x grid x grid
        x = self.bridge(x)
        for block in self.blocks:
            x = block(x, skips.get(block.stride))
        return self.head(x)

    def _capture(self, stride: int, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self._captured[stride] = output

    def _find_skips(self) -> dict[int, tuple[nn.Module, int]]:
        """Skip stride -> (CNN module whose output it is, channels), from one forward of a blank image.

        Candidates are the backbone's children and the children of those that are ``nn.Sequential`` (stem
        layers, stages); the last to run at each power-of-2 stride below the token stride gives that skip.
        """
        backbone = self.encoder.patch_embed.backbone
        candidates = []
        for child in backbone.children():
            candidates.extend(child.children() if isinstance(child, nn.Sequential) else [child])
        found: dict[int, tuple[nn.Module, int]] = {}

        def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if not isinstance(output, Tensor) or output.ndim != 4:
                return
            stride = self.input_size // output.shape[-1]
            exact = stride * output.shape[-1] == self.input_size == stride * output.shape[-2]
            if exact and 1 < stride < self.token_stride and stride & (stride - 1) == 0:
                found.pop(stride, None)  # keep execution order
                found[stride] = (module, output.shape[1])

        handles = [module.register_forward_hook(record) for module in candidates]
        was_training = self.encoder.training
        try:
            self.encoder.eval()
            with torch.no_grad():
                self.encoder.forward_features(torch.zeros(1, 3, self.input_size, self.input_size))
        finally:
            self.encoder.train(was_training)
            for handle in handles:
                handle.remove()
        return found

    def _load_encoder_weights(self, path: Path) -> None:
        fix = f"give a state dict saved with torch.save(model.state_dict(), path) from timm model {self.encoder_name}"
        state = read_state_dict(path, "baseline.transunet.weights", fix)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        own = self.encoder.state_dict()
        pos = state.get("pos_embed")
        if pos is not None and pos.ndim == 3 and pos.shape != own["pos_embed"].shape:
            prefix = 0 if self.encoder.no_embed_class else self.encoder.num_prefix_tokens
            state["pos_embed"] = resample_abs_pos_embed(pos, new_size=[self.grid, self.grid], num_prefix_tokens=prefix)
        missing = sorted(own.keys() - state.keys())
        unexpected = sorted(state.keys() - own.keys())
        wrong = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
        if missing or unexpected or wrong:
            detail = "; ".join(
                f"{what} {len(keys)} keys e.g. {keys[0]}"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong))
                if keys
            )
            raise InputError(f"{path}: does not match encoder {self.encoder_name} ({detail}); {fix}")
        self.encoder.load_state_dict(state)


def _create_encoder(name: str, input_size: int) -> VisionTransformer:
    """The timm hybrid ViT ``name`` for input_size x input_size images, randomly initialised, without a head."""
    if not timm.is_model(name):
        raise InputError(f"baseline.transunet.encoder: unknown timm model {name!r}; use one of the {HYBRIDS}")
    try:
        model = timm.create_model(name, pretrained=False, img_size=input_size, num_classes=0)
    except TypeError as err:  # e.g. CNNs have no img_size
        raise InputError(f"baseline.transunet.encoder: {name!r} is not a hybrid ViT; use one of the {HYBRIDS}") from err
    except (AssertionError, RuntimeError, ValueError) as err:
        raise InputError(
            f"baseline.transunet.input_size: {name!r} cannot be built for {input_size} x {input_size} images "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); use a multiple of its token stride"
        ) from err
    if not isinstance(model, VisionTransformer) or not isinstance(model.patch_embed, HybridEmbed):
        raise InputError(
            f"baseline.transunet.encoder: {name!r} is not a hybrid ViT (CNN stem + transformer); use one of the "
            f"{HYBRIDS}"
        )
    return model


def _token_grid(encoder: VisionTransformer, name: str, input_size: int) -> tuple[int, int]:
    """(grid, token stride) with grid * stride == input_size and the stride a power of 2."""
    grid_h, grid_w = encoder.patch_embed.grid_size
    stride = input_size // grid_h
    if grid_h != grid_w or grid_h * stride != input_size or stride & (stride - 1) != 0:
        raise InputError(
            f"baseline.transunet.input_size: {input_size} gives a {grid_h} x {grid_w} token grid for {name!r}; "
            "use a multiple of its token stride (16 or 32 for timm's hybrids)"
        )
    return grid_h, stride

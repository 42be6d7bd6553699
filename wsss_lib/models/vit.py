"""A Vision Transformer image classifier: the teacher of Sub-category Teaching.

The network is torchvision's ``VisionTransformer`` (Dosovitskiy et al. ICLR 2021, "An Image is
Worth 16x16 Words: Transformers for Image Recognition at Scale"): the image is cut into P x P
patches, each linearly projected (a stride-P convolution), a learned class token is prepended,
learned position embeddings are added, and a stack of pre-norm transformer encoder blocks ends with
a LayerNorm. The class token's final state is the image representation.

As the paper does for fine-tuning (Sec. 3.2), the pre-trained prediction head is
removed and a zero-initialised ``hidden_dim -> K`` linear layer is attached; here it produces
multi-label logits trained with the shared loop (``wsss_lib.training``). The class-token embedding
(:meth:`ViTClassifier.embed`) is the feature that Sub-category Teaching clusters.

When the fine-tuning resolution differs from the pre-training one, the paper (Sec. 3.2) keeps the
patch size, so the patch grid changes, and interpolates the pre-trained position embeddings in 2-D
according to their location in the image: :func:`resize_pos_embedding`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ViT_B_16_Weights
from torchvision.models.vision_transformer import VisionTransformer

from wsss_lib.models.backbones import IMAGENET_MEAN, IMAGENET_STD, load_state_file

# Keyword arguments of torchvision's VisionTransformer (besides image_size).
VIT_PRESETS: dict[str, dict] = {
    # From scratch, small enough for CPU tests and the synthetic demo (~0.6M parameters).
    "vit_tiny_scratch": {"patch_size": 16, "num_layers": 4, "num_heads": 4, "hidden_dim": 128, "mlp_dim": 256},
    # ViT-Base/16 of the paper (Table 1), as torchvision's vit_b_16 builds it.
    "vit_b_16": {"patch_size": 16, "num_layers": 12, "num_heads": 12, "hidden_dim": 768, "mlp_dim": 3072},
}
# Presets whose ImageNet weights exist (torchvision's checkpoint, fetched by a workflow rule).
IMAGENET_WEIGHTS: dict[str, ViT_B_16_Weights] = {"vit_b_16": ViT_B_16_Weights.IMAGENET1K_V1}


class ViTClassifier(nn.Module):
    """torchvision ViT with its head replaced by ``nn.Identity`` plus a new linear multi-label classifier.

    Inputs are normalised images of exactly ``image_size`` x ``image_size`` pixels: the position
    embeddings are learned for one patch grid, so callers must resize images (e.g. the whole image
    resized, not a crop, when computing embeddings to cluster) before calling the model.
    """

    # torchvision's ViT_B_16_Weights.IMAGENET1K_V1 expects ImageNet normalisation (0-255 scale here,
    # as the data pipeline works on 0-255 pixels).
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD

    def __init__(self, preset: str, n_classes: int, image_size: int):
        super().__init__()
        if preset not in VIT_PRESETS:
            raise ValueError(f"unknown ViT preset {preset!r}; choose from {', '.join(VIT_PRESETS)}")
        config = VIT_PRESETS[preset]
        patch = config["patch_size"]
        if not isinstance(image_size, int) or image_size <= 0 or image_size % patch:
            raise ValueError(f"ViT preset {preset} needs an image_size that is a positive multiple of "
                             f"its patch size {patch}, not {image_size!r}")
        if n_classes < 1:
            raise ValueError(f"n_classes must be at least 1, not {n_classes}")
        self.preset = preset
        self.n_classes = int(n_classes)
        self.image_size = int(image_size)
        self.hidden_dim = int(config["hidden_dim"])
        self.backbone = VisionTransformer(image_size=image_size, **config)
        # The backbone then returns the class token after the final LayerNorm (the embedding).
        self.backbone.heads = nn.Identity()
        self.classifier = nn.Linear(self.hidden_dim, self.n_classes)
        # Zero-initialised head, as in the paper's fine-tuning: every class starts at p = 0.5 and the
        # random head adds no noise to the pre-trained representation's first gradients.
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Class-token embedding (B, hidden_dim) after the encoder's final LayerNorm.

        ``x`` must be (B, 3, image_size, image_size), normalised with ``input_mean`` / ``input_std``.
        """
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != self.image_size or x.shape[3] != self.image_size:
            # Checked here (torchvision asserts too) to say what to do about it: resize beforehand.
            raise ValueError(
                f"ViT ({self.preset}) expects images of shape (B, 3, {self.image_size}, {self.image_size}), "
                f"got {tuple(x.shape)}; resize inputs to image_size={self.image_size} before calling the model"
            )
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-label logits (B, n_classes)."""
        return self.classifier(self.embed(x))

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, new-layer parameters): the new classifier gets a larger learning rate."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        new = [p for p in self.classifier.parameters() if p.requires_grad]
        return backbone, new


def resize_pos_embedding(pos_embedding: torch.Tensor, grid: int) -> torch.Tensor:
    """Resize (1, 1 + g*g, D) position embeddings to a ``grid`` x ``grid`` patch grid.

    The class-token embedding is kept; the patch embeddings are laid out on their g x g grid and
    resized bicubically (align_corners=True, as torchvision's own ``interpolate_embeddings``, so the
    corner patches keep their embeddings). The same grid returns the input unchanged (exact).
    """
    if pos_embedding.dim() != 3 or pos_embedding.shape[0] != 1:
        raise ValueError(f"position embedding must have shape (1, 1 + g*g, D), got {tuple(pos_embedding.shape)}")
    n_patches, dim = pos_embedding.shape[1] - 1, pos_embedding.shape[2]
    old_grid = math.isqrt(n_patches)
    if n_patches < 1 or old_grid * old_grid != n_patches:
        raise ValueError(f"position embedding has {n_patches} patch positions, not a square grid")
    if grid < 1:
        raise ValueError(f"target grid must be at least 1, not {grid}")
    if grid == old_grid:
        return pos_embedding
    cls_token, patches = pos_embedding[:, :1], pos_embedding[:, 1:]
    # (1, g*g, D) -> (1, D, g, g): positions are stored row-major, as conv_proj's output is flattened.
    patches = patches.transpose(1, 2).reshape(1, dim, old_grid, old_grid)
    # float32 because bicubic interpolation is not implemented for half precision on CPU.
    resized = F.interpolate(patches.float(), size=(grid, grid), mode="bicubic", align_corners=True)
    resized = resized.to(pos_embedding.dtype).reshape(1, dim, grid * grid).transpose(1, 2)
    return torch.cat([cls_token, resized], dim=1)


def _backbone_state(state: Mapping[str, torch.Tensor], source: str, model: ViTClassifier) -> dict[str, torch.Tensor]:
    """Map a torchvision ViT state dict (or a saved ViTClassifier's) onto ``model.backbone``'s keys.

    Drops torchvision's 1000-class ``heads`` and a saved classifier (the new task has its own
    classes), renames the pre-0.13 torchvision MLP keys (``mlp.linear_1`` / ``mlp.linear_2``, the
    names in older checkpoints) and resizes the position embeddings to this model's patch grid.
    """
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("classifier.") or key.startswith("heads.") or key.startswith("backbone.heads."):
            continue
        key = key.removeprefix("backbone.")
        key = key.replace(".mlp.linear_1.", ".mlp.0.").replace(".mlp.linear_2.", ".mlp.3.")
        mapped[key] = value
    pos_key = "encoder.pos_embedding"
    if pos_key not in mapped:
        raise ValueError(f"weights {source} have no {pos_key!r}: not a torchvision ViT state dict")
    grid = model.image_size // model.backbone.patch_size
    try:
        mapped[pos_key] = resize_pos_embedding(mapped[pos_key], grid)
    except ValueError as err:
        raise ValueError(f"weights {source}: {err}") from err
    return mapped


def load_backbone_weights(model: ViTClassifier, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every backbone tensor from ``state`` (strictly: a partial load would silently train from scratch)."""
    mapped = _backbone_state(state, source, model)
    try:
        model.backbone.load_state_dict(mapped, strict=True)
    except RuntimeError as err:  # missing/unexpected keys or shape mismatches (e.g. another preset)
        raise ValueError(f"weights {source} do not fit ViT preset {model.preset}: {err}") from err


def build_vit(preset: str, n_classes: int, image_size: int, pretrained: str = "none",
              weights_file: str | os.PathLike | None = None) -> ViTClassifier:
    """Build a :class:`ViTClassifier`; ``pretrained`` is ``none``, ``imagenet`` or a path to a state dict.

    ``imagenet`` loads torchvision's ViT_B_16_Weights.IMAGENET1K_V1 from ``weights_file`` (fetched
    beforehand by a workflow rule from :func:`vit_weights_url`; nothing is downloaded here). A path
    may hold a torchvision ViT state dict or a ViT file written by
    :func:`~wsss_lib.models.registry.save_network` (its classifier is dropped). In both cases the
    position embeddings are interpolated to ``image_size``.
    """
    # Argument errors are raised before building: ViT-B takes about a second to initialise.
    source: str | os.PathLike | None = None
    if pretrained == "imagenet":
        if preset not in IMAGENET_WEIGHTS:
            raise ValueError(f"ViT preset {preset} has no ImageNet weights; use pretrained: none or a path "
                             f"(ImageNet weights exist for {', '.join(IMAGENET_WEIGHTS)})")
        if weights_file is None:
            raise ValueError(f"ViT preset {preset} with pretrained: imagenet needs the fetched weights file "
                             f"(from {vit_weights_url()})")
        source = weights_file
    elif pretrained != "none":
        source = pretrained
    state = load_state_file(source) if source is not None else None
    model = ViTClassifier(preset, n_classes, image_size)
    if state is not None:
        load_backbone_weights(model, state, str(source))
    return model


def vit_weights_url() -> str:
    """Where the fetch rule downloads ViT-B/16's ImageNet weights (torchvision's IMAGENET1K_V1)."""
    return IMAGENET_WEIGHTS["vit_b_16"].url

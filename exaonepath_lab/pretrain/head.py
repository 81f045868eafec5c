"""DINO projection head (Caron et al. 2021, §3.1 and ``vision_transformer.DINOHead``).

A 3-layer MLP (hidden 2048, GELU) down to a 256-d bottleneck, L2-normalisation,
then a weight-normalised linear layer to ``out_dim`` prototypes (65,536 for ViT-B).
With ``norm_last_layer`` the weight-norm gain is fixed to 1, so logits are cosine
similarities between the normalised bottleneck and each prototype direction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """``(B, in_dim) -> (B, out_dim)`` logits (before temperature)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim)]
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            for _ in range(nlayers - 2):
                layers.append(nn.Linear(hidden_dim, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        # Weight norm written out (v, g) instead of the deprecated nn.utils.weight_norm so
        # that state dicts have stable names and DDP/torch.compile see plain parameters.
        self.last_layer_v = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.last_layer_v, std=0.02)
        self.last_layer_g = nn.Parameter(torch.ones(out_dim, 1))
        # Fixed gain 1 (DINO's norm_last_layer): logits stay in [-1, 1] before temperature.
        self.last_layer_g.requires_grad = not norm_last_layer
        self.norm_last_layer = norm_last_layer

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Parameters frozen during the first epoch(s) (DINO ``cancel_gradients_last_layer``)."""
        return [self.last_layer_v, self.last_layer_g]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1, p=2)
        w = self.last_layer_g * F.normalize(self.last_layer_v, dim=1, p=2)
        return z @ w.t()


class MultiCropWrapper(nn.Module):
    """Backbone + head over a list of crops of different sizes (DINO ``MultiCropWrapper``).

    Crops of equal resolution are concatenated and sent through the backbone in one
    forward, then all features go through the head at once.
    ``forward(list of (B, 3, h_i, w_i)) -> (sum_i B, out_dim)``, in crop order.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        feats = []
        start = 0
        sizes = [c.shape[-1] for c in crops]
        while start < len(crops):
            end = start
            while end < len(crops) and sizes[end] == sizes[start]:
                end += 1
            feats.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        return self.head(torch.cat(feats))

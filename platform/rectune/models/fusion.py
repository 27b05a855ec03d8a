"""Fusion of the modality tokens into one vector (``model.fusion``; plug-ins of ``FUSIONS``).

Every fusion takes the tokens ``[B, T, d]`` and the modality of each token (a list of names such
as ``user``, ``item``, ``behaviour``, ``text``, ``kg``) and returns ``[B, out_dim]``.

- ``concat``: the tokens side by side (the baseline).
- ``gate``: a gate per modality, computed from all tokens (SENet / MaskNet-style), scales that
  modality's tokens before concatenation; ``2·sigmoid`` so a gate can also amplify.
- ``attention``: AutoInt-style multi-head self-attention layers over the tokens, with residuals.
- ``cross``: DCN-V2 low-rank cross layers over the concatenated tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rectune.config import Params, param
from rectune.registry import Registry

FUSIONS: Registry[type["Fusion"]] = Registry("fusion")


class Fusion(nn.Module):
    Params = Params

    def __init__(self, params, n_tokens: int, dim: int, modalities: list[str]):
        super().__init__()
        self.out_dim = n_tokens * dim


@FUSIONS.register("concat")
class Concat(Fusion):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.flatten(1)


@FUSIONS.register("gate")
class Gate(Fusion):
    def __init__(self, params, n_tokens, dim, modalities):
        super().__init__(params, n_tokens, dim, modalities)
        names = sorted(set(modalities))
        self.register_buffer("which", torch.tensor([names.index(m) for m in modalities]))
        self.gate = nn.Sequential(nn.Linear(n_tokens * dim, max(8, n_tokens)), nn.ReLU(),
                                  nn.Linear(max(8, n_tokens), len(names) * dim))
        self.n_mod, self.dim = len(names), dim

    def forward(self, tokens):
        g = 2 * torch.sigmoid(self.gate(tokens.flatten(1))).view(-1, self.n_mod, self.dim)
        return (tokens * g[:, self.which]).flatten(1)


@FUSIONS.register("attention")
class Attention(Fusion):
    @dataclass
    class Params(Params):
        heads: int = param(2, "attention heads (attention fusion)", low=1, high=16)
        layers: int = param(1, "layers (attention and cross fusions)", low=1, high=6)

    def __init__(self, params, n_tokens, dim, modalities):
        super().__init__(params, n_tokens, dim, modalities)
        heads = params.heads if dim % params.heads == 0 else 1
        self.layers = nn.ModuleList(nn.MultiheadAttention(dim, heads, batch_first=True) for _ in range(params.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(params.layers))

    def forward(self, tokens):
        x = tokens
        for att, norm in zip(self.layers, self.norms):
            y, _ = att(x, x, x, need_weights=False)
            x = norm(x + y)
        return torch.relu(x).flatten(1)


@FUSIONS.register("cross")
class Cross(Fusion):
    @dataclass
    class Params(Params):
        layers: int = param(1, "layers (attention and cross fusions)", low=1, high=6)
        rank: int = param(32, "rank of each cross layer's weight (cross fusion)", low=1, high=512)

    def __init__(self, params, n_tokens, dim, modalities):
        super().__init__(params, n_tokens, dim, modalities)
        width = n_tokens * dim
        rank = min(params.rank, width)
        self.v = nn.ModuleList(nn.Linear(width, rank, bias=False) for _ in range(params.layers))
        self.u = nn.ModuleList(nn.Linear(rank, width) for _ in range(params.layers))

    def forward(self, tokens):
        x0 = x = tokens.flatten(1)
        for v, u in zip(self.v, self.u):
            x = x0 * u(v(x)) + x
        return x

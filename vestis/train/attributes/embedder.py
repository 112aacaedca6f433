"""The attribute-conditioned embedding (ASEN style) of a backbone feature map.

An embedding of the attribute ``e_a`` guides

- a **spatial attention** over the backbone's feature map (where on the garment to look):
  ``alpha = softmax_hw(w . (tanh(conv1x1(map)) * tanh(W_s e_a)))`` and the attended feature
  ``l = sum_hw alpha * map``;
- a **channel attention** (which features matter): ``beta = sigmoid(W_2 relu(W_1 [x; e_a]))``
  over ``x = [LN(l); LN(g)]``, the attended feature and, with ``model.global_branch``, the
  backbone's pooled global embedding ``g`` (ASEN v2's global branch: category and colour live there);

then ``beta * x`` is projected to ``dim`` and L2-normalised: one vector per (image, attribute).

**Keeping what the backbone knew** (``head.residual``, as for the global heads): each attribute's
embedding is the backbone's global embedding, centred on the training mean and projected on its
first ``dim`` principal components (fitted on the training items, :meth:`AttributeEmbedder.fit_start`),
plus the learned projection above, which starts at zero; ``head.anchor`` weighs a penalty on the
projection's squared size (L2-SP towards the start, :class:`vestis.train.heads.IdentityAnchor`);
``head.interpolate`` a scales the trained projection in the retrieval embedding (start + a x
projection). Every space starts as the backbone's similarity, which transfers to other photos.

**Which map.** The 14 x 14 map of the stride-16 stage (112 channels for EfficientNet-Lite0,
``feature_map_14``) at the 224-px input: a 16-px cell is about a sleeve's width or a collar, so
attention can single them out, where one cell of the 7 x 7 stride-32 map covers a whole shoulder
with sleeve and collar together; and at 112 x 196 values it is 5.7x smaller than the 1280 x 49
final map, so caching it for a 44k catalogue takes 1.9 GB in float16 rather than 11 GB. What the
mid-level map lacks in semantics the global branch brings back.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from vestis.errors import VestisError
from vestis.train.config import AttributeRunConfig


class AttributeEmbedder(nn.Module):
    """ASEN-style attribute-conditioned embedding of a feature map (see the module docstring)."""

    def __init__(
        self,
        n_attributes: int,
        channels: int,
        global_dim: int,
        dim: int,
        *,
        attribute_dim: int = 64,
        hidden: int = 256,
        dropout: float = 0.0,
        residual: bool = False,
        interpolate: float = 1.0,
    ):
        super().__init__()
        if residual and not 0 < dim <= global_dim:
            raise VestisError(f"a residual attribute model starts from the global embedding: it needs the global "
                              f"branch and head.dim at most its size ({global_dim}), got {dim}")
        self.n_attributes, self.in_dim, self.global_dim, self.dim = n_attributes, channels, global_dim, dim
        self.residual, self.interpolate = residual, interpolate
        self.attribute = nn.Embedding(n_attributes, attribute_dim)
        self.map_key = nn.Conv2d(channels, hidden, 1)
        self.attr_query = nn.Linear(attribute_dim, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)
        self.local_norm = nn.LayerNorm(channels)
        self.global_norm = nn.LayerNorm(global_dim) if global_dim else None
        width = channels + global_dim
        self.channel = nn.Sequential(
            nn.Linear(width + attribute_dim, hidden), nn.ReLU(), nn.Linear(hidden, width), nn.Sigmoid()
        )
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(width, dim)
        if residual:
            nn.init.zeros_(self.project.weight)
            nn.init.zeros_(self.project.bias)
            self.register_buffer("centre", torch.zeros(global_dim))
            self.register_buffer("basis", torch.zeros(dim, global_dim))

    @torch.no_grad()
    def fit_start(self, global_vecs: torch.Tensor) -> None:
        """The residual start: centre on the mean of the (normalised) training embeddings
        ``global_vecs`` and keep their first ``dim`` principal directions."""
        x = F.normalize(global_vecs.float(), dim=1)
        self.centre.copy_(x.mean(dim=0))
        z = F.normalize(x - self.centre, dim=1)
        _, vectors = torch.linalg.eigh(z.T @ z)  # ascending eigenvalues
        self.basis.copy_(vectors[:, -self.dim :].flip(1).T)

    def start(self, global_vec: torch.Tensor) -> torch.Tensor:
        """The residual start of images' global embeddings (N x dim, not normalised): centred and
        projected on the principal directions of :meth:`fit_start`."""
        return F.normalize(F.normalize(global_vec, dim=1) - self.centre, dim=1) @ self.basis.T

    def correction_norm(self) -> torch.Tensor:
        """The squared size of the learned projection, zero at the residual start (for
        :class:`vestis.train.heads.IdentityAnchor`)."""
        return self.project.weight.square().sum() + self.project.bias.square().sum()

    def attention(self, maps: torch.Tensor, attrs: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """Spatial attention weights (N x A' x h x w) of maps (N x C x h x w) for attribute
        indices ``attrs`` (N x A': per image, the attributes to attend for). With ``image`` (N,),
        ``maps`` holds distinct images and row i of the output attends ``maps[image[i]]``: the
        attention keys are computed once per image."""
        keys = torch.tanh(self.map_key(maps))  # N x K x h x w
        if image is not None:
            keys = keys[image]
        queries = torch.tanh(self.attr_query(self.attribute(attrs))) * self.score.weight[0]  # N x A' x K
        logits = torch.einsum("nkhw,nak->nahw", keys, queries)
        n, a, h, w = logits.shape
        return torch.softmax(logits.reshape(n, a, h * w), dim=2).reshape(n, a, h, w)

    def embed(self, maps: torch.Tensor, global_vec: torch.Tensor | None, attrs: torch.Tensor,
              image: torch.Tensor | None = None, correction: float = 1.0) -> torch.Tensor:
        """L2-normalised embeddings N x A' x dim for attribute indices ``attrs`` (N x A'); ``image``
        as in :meth:`attention`; ``correction`` scales a residual model's learned projection."""
        alpha = self.attention(maps, attrs, image)
        start = self.start(global_vec) if self.residual and global_vec is not None else None  # once per image
        if image is not None:
            maps = maps[image]
            global_vec = None if global_vec is None else global_vec[image]
            start = None if start is None else start[image]
        local = self.local_norm(torch.einsum("nahw,nchw->nac", alpha, maps))
        parts = [local]
        if self.global_norm is not None:
            if global_vec is None:
                raise VestisError("this attribute model has a global branch: give the global embedding")
            parts.append(self.global_norm(global_vec)[:, None, :].expand(-1, attrs.shape[1], -1))
        x = torch.cat(parts, dim=2)
        beta = self.channel(torch.cat([x, self.attribute(attrs)], dim=2))
        out = self.project(self.dropout(beta * x))
        if start is not None:
            out = correction * out + start[:, None, :]
        return F.normalize(out, dim=2)

    def forward(self, maps: torch.Tensor, global_vec: torch.Tensor | None, attrs: torch.Tensor,
                image: torch.Tensor | None = None) -> torch.Tensor:
        """One attribute per row: ``attrs`` (N,) -> N x dim; ``image`` as in :meth:`attention`."""
        return self.embed(maps, global_vec, attrs[:, None], image)[:, 0]

    def all_attributes(self, maps: torch.Tensor, global_vec: torch.Tensor | None) -> torch.Tensor:
        """Every attribute for every image, the retrieval embedding: N x A x dim. A residual model's
        learned projection is scaled by ``interpolate`` (``head.interpolate``; training uses all of it)."""
        attrs = torch.arange(self.n_attributes, device=maps.device)[None, :].expand(maps.shape[0], -1)
        return self.embed(maps, global_vec, attrs, correction=self.interpolate)


def make_head(
    cfg: AttributeRunConfig, n_attributes: int, channels: int, global_dim: int
) -> AttributeEmbedder:
    """The configured model (``model`` and ``head`` sections) for these feature sizes."""
    return AttributeEmbedder(
        n_attributes,
        channels,
        global_dim if cfg.model.global_branch else 0,
        cfg.head.dim,
        attribute_dim=cfg.model.attribute_dim,
        hidden=cfg.model.hidden,
        dropout=cfg.model.dropout,
        residual=cfg.head.residual,
        interpolate=cfg.head.interpolate,
    )

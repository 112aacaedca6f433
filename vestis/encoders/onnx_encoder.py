"""ONNX encoders run with onnxruntime on the CPU, and the cache of exported built-in backbones.

Every vestis ONNX model takes ``image`` (N x 3 x H x W float32, preprocessed) and returns
``embedding`` (N x dim, L2-normalised, pooled inside the graph), ``feature_map`` (the final
stride-32 map, N x C x 7 x 7 at 224 px) and ``feature_map_14`` (the stride-16 map, 14 x 14 at
224 px). A model given by path needs only an embedding output (named ``embedding``, or its first
2-D output); its preprocessing comes from an optional sidecar ``<model>.json`` next to it::

    {"name": "shop-arcface", "version": "3", "input_size": 224, "resize": "crop",
     "resample": "bilinear", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

(all keys optional; mean/std on the 0-1 scale; resize is crop, pad or stretch, resample bilinear
or bicubic, as in :class:`~vestis.encoders.preprocess.PreprocessSpec`; defaults: ImageNet mean/std,
crop, bilinear, the model's own input size or 224 when it is dynamic).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from PIL import Image

from vestis.encoders.base import ImageEncoder
from vestis.encoders.cpu import describe_cpu
from vestis.encoders.preprocess import PreprocessSpec
from vestis.errors import VestisError

INPUT = "image"
EMBEDDING = "embedding"
FEATURE_MAPS = {"7x7": "feature_map", "14x14": "feature_map_14"}  # which -> output name
GRAPH_REVISION = 1  # bump when the exported graph changes (outputs, opset): refreshes the cache
OPSET = 17
CHUNK = 8  # images per onnxruntime call: small batches keep activations in cache (measured faster)


def default_cache_dir() -> Path:
    """``$VESTIS_CACHE_DIR/encoders``, else ``$XDG_CACHE_HOME/vestis/encoders`` (``~/.cache/...``)."""
    root = os.environ.get("VESTIS_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "encoders"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "vestis" / "encoders"


def open_session(path: Path, threads: int | None = None, *, reuse_optimized: bool = False) -> ort.InferenceSession:
    """An onnxruntime CPU session with full graph optimisation and ``threads`` (default: every
    core) intra-op threads that sleep rather than spin between operators: the cores are shared
    with the decoding threads (and other processes), and spinning threads took 30-40% more CPU
    per image in our measurements on a busy 2-core machine.

    With ``reuse_optimized`` (for models in vestis's own cache) the optimised graph is saved
    beside the model on first use and loaded as it is afterwards, which makes opening the
    session several times faster. The optimised graph is specific to the CPU and the onnxruntime
    version, so both are in its file name."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    optimized = _optimized_path(path) if reuse_optimized else None
    tmp = None
    if optimized is not None and optimized.exists():
        path = optimized
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif optimized is not None:
        optimized.parent.mkdir(parents=True, exist_ok=True)
        tmp = optimized.with_name(f".{optimized.name}.{os.getpid()}.tmp")
        options.optimized_model_filepath = str(tmp)
        options.log_severity_level = 3  # not the notice that the saved graph is CPU-specific: we know
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        if tmp is not None and tmp.exists():
            os.replace(tmp, optimized)
    except Exception as e:  # onnxruntime raises its own pybind exception types
        raise VestisError(f"cannot load ONNX model {path}: {e}") from e
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return session


def _optimized_path(path: Path) -> Path:
    """Where the optimised graph of cached model ``path`` goes on this CPU and onnxruntime: the
    cache's ``optimized/`` folder. The key holds the extensions this process's kernels use
    (:func:`~vestis.encoders.cpu.describe_cpu`), which differ from ``/proc/cpuinfo``'s under a
    CPUID mask."""
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else platform.processor()
    flags = sorted({line for line in cpu.splitlines() if line.startswith(("model name", "flags"))})
    parts = [ort.__version__, platform.machine(), *flags, describe_cpu()]
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
    return path.parent / "optimized" / f"{path.stem}-{key}.onnx"


class OnnxEncoder(ImageEncoder):
    """An :class:`ImageEncoder` over an onnxruntime session (see :func:`open_session`)."""

    def __init__(self, session: ort.InferenceSession, *, name: str, version: str, preprocess: PreprocessSpec):
        self.name, self.version, self.preprocess_spec = name, version, preprocess
        self.source = name
        self.input_size = (preprocess.size, preprocess.size)
        self._session = session
        inputs = session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 4:
            raise VestisError(f"{name}: an encoder takes one N x 3 x H x W float32 input")
        self._input = inputs[0].name
        outputs = {o.name: o for o in self._session.get_outputs()}
        embedding = outputs.get(EMBEDDING) or next((o for o in outputs.values() if len(o.shape) == 2), None)
        if embedding is None:
            raise VestisError(f"{name}: no N x dim embedding output among {', '.join(outputs)}")
        self._embedding, self.output_names = embedding.name, list(outputs)
        dim = embedding.shape[1]
        self.dim = dim if isinstance(dim, int) else self.infer(np.zeros((0, 3, *self.input_size), np.float32),
                                                               [self._embedding])[self._embedding].shape[1]

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.preprocess_spec(image)

    def infer(self, batch: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model on a preprocessed NCHW batch; returns the named outputs (default: all),
        computed in chunks of ``CHUNK`` images."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (3, *self.input_size):
            raise VestisError(f"{self.name} expects N x 3 x {self.input_size[0]} x {self.input_size[1]} "
                              f"input, got {batch.shape}")
        names = outputs or self.output_names
        run = batch if len(batch) else np.zeros((1, *batch.shape[1:]), np.float32)  # for output shapes
        parts = [self._session.run(names, {self._input: run[i:i + CHUNK]}) for i in range(0, len(run), CHUNK)]
        return {n: np.concatenate([p[j] for p in parts])[:len(batch)] for j, n in enumerate(names)}

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        vectors = self.infer(batch, [self._embedding])[self._embedding].astype(np.float32, copy=False)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def feature_maps(self, batch: np.ndarray, which: Literal["7x7", "14x14"] = "7x7") -> np.ndarray:
        """Spatial maps before pooling: ``"7x7"`` the final stride-32 map (N x 1280 x 7 x 7 for the
        built-ins), ``"14x14"`` the stride-16 map (N x 112 x 14 x 14 for EfficientNet-Lite0,
        N x 96 x 14 x 14 for MobileNetV2); the sizes are for the 224-px input."""
        if which not in FEATURE_MAPS:
            raise VestisError(f"unknown feature map {which!r}; use one of {', '.join(FEATURE_MAPS)}")
        name = FEATURE_MAPS[which]
        if name not in self.output_names:
            raise VestisError(f"{self.name} has no {name!r} output (it has {', '.join(self.output_names)})")
        return self.infer(batch, [name])[name]


class OnnxFileEncoder(OnnxEncoder):
    """Any ONNX model given by path, with the optional sidecar ``<model>.json`` (see module doc).

    Its version is ``<name>[/<sidecar version>]/<preprocessing tag>/sha256:<file hash prefix>``,
    so a changed file or preprocessing never matches a collection built with the old one.
    """

    def __init__(self, path: Path, *, threads: int | None = None):
        path = Path(path)
        if not path.is_file():
            raise VestisError(f"ONNX model {path} does not exist")
        sidecar = path.with_suffix(".json")  # model.onnx -> model.json
        try:
            meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        except (OSError, ValueError) as e:
            raise VestisError(f"cannot read the encoder sidecar {sidecar}: {e}") from e
        if not isinstance(meta, dict):
            raise VestisError(f"the encoder sidecar {sidecar} must hold a JSON object")
        session = open_session(path, threads)
        static = _static_input_size(session, path)
        try:
            size = int(meta.get("input_size", static or 224))
            spec = PreprocessSpec(size=size, resize=meta.get("resize", PreprocessSpec.resize),
                                  resample=meta.get("resample", PreprocessSpec.resample),
                                  mean=tuple(meta.get("mean", PreprocessSpec.mean)),
                                  std=tuple(meta.get("std", PreprocessSpec.std)))
        except (TypeError, ValueError) as e:
            raise VestisError(f"bad preprocessing in {sidecar}: {e}") from e
        if static and size != static:
            raise VestisError(f"{sidecar} says input_size {size} but {path.name} takes {static} x {static}")
        name = str(meta.get("name") or path.stem)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        parts = [name, *([str(meta["version"])] if "version" in meta else []), spec.tag, f"sha256:{digest}"]
        self.path = path
        super().__init__(session, name=name, version="/".join(parts), preprocess=spec)
        self.source = str(path.resolve())


def _static_input_size(session: ort.InferenceSession, path: Path) -> int | None:
    """The model's fixed square input size, or None when height/width are dynamic."""
    shape = session.get_inputs()[0].shape
    h, w = (shape[2], shape[3]) if len(shape) == 4 else (None, None)
    if not (isinstance(h, int) and isinstance(w, int)):
        return None
    if h != w:
        raise VestisError(f"{path.name} takes {h} x {w} input; only square inputs are supported")
    return h


def builtin_model_path(name: str, cache_dir: Path | None = None, *,
                       export: Callable[[str, Path], None] | None = None, revision: str = "") -> Path:
    """The cached ONNX model of built-in model ``name``, building it first when missing.

    ``export(name, path)`` writes the model (default: :func:`export_backbone`, the image
    backbones); ``revision`` names anything else the export depends on (another graph revision,
    the weights' package version). An ``-int8`` (or ``-int8-vnni``) image encoder is the static
    quantization of its backbone's export by its recipe (:mod:`vestis.encoders.quantize`). The
    file name hashes what the model is made from: the model, the graph revision, the torch version
    and ``revision``, plus the recipe and the onnxruntime version for the 8-bit ones. The model is
    written to a temporary file and renamed into place, so concurrent processes never read a
    partial model (at worst two of them build the same file).
    """
    from vestis.encoders.quantize import backbone_of, calibration_batches, quantize_model, recipe_of

    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    recipe = recipe_of(name) if export is None else None
    if recipe is None:
        key = f"{name}|graph{GRAPH_REVISION}|opset{OPSET}|torch{metadata.version('torch')}"
        key += f"|{revision}" if revision else ""
        return _cached(directory, name, key, lambda out: (export or export_backbone)(name, out))
    from vestis.encoders import BUILTIN_PREPROCESSING

    source = builtin_model_path(backbone_of(name), directory)
    recipe_name, options = recipe
    key = f"{source.name}|{recipe_name}|onnxruntime{ort.__version__}"
    return _cached(directory, name, key, lambda out: quantize_model(
        source, out, calibration_batches(BUILTIN_PREPROCESSING[name]), INPUT, **options))


def _cached(directory: Path, name: str, key: str, build: Callable[[Path], None]) -> Path:
    """``directory/<name>-<hash of key>.onnx``, made by ``build(temporary path)`` when missing."""
    path = directory / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}-", suffix=".onnx.tmp")
        os.close(fd)
        try:
            build(Path(tmp))
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return path


def export_backbone(name: str, path: Path, size: int = 224) -> None:
    """Export built-in backbone ``name`` to ``path`` with a dynamic batch axis (about a second)."""
    import torch

    from vestis.encoders.torch_models import BUILDERS

    model = BUILDERS[name]()
    names = [EMBEDDING, *FEATURE_MAPS.values()]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and folding notices
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=names,
                          dynamic_axes={n: {0: "batch"} for n in [INPUT, *names]})

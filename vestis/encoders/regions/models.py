"""MediaPipe's pose models: installed from the mediapipe wheel into vestis's model cache, run
with LiteRT."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vestis.encoders.onnx_encoder import default_cache_dir
from vestis.errors import VestisError

MEDIAPIPE_VERSION = "0.10.21"
# Model file -> (its path inside the mediapipe wheel, its SHA-256): checked when installed.
MODEL_FILES = {
    "pose_detection.tflite": ("mediapipe/modules/pose_detection/pose_detection.tflite",
                              "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    "pose_landmark_full.tflite": ("mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
                                  "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
}


class RegionModelsMissingError(VestisError):
    """The pose models (or LiteRT) that find garment regions are not installed."""



def model_dir() -> Path:
    """Where the models live: ``<model cache>/mediapipe-0.10.21`` (see ``default_cache_dir``)."""
    return default_cache_dir() / f"mediapipe-{MEDIAPIPE_VERSION}"


def models_installed(directory: Path | None = None) -> bool:
    directory = directory or model_dir()
    return all((directory / name).is_file() for name in MODEL_FILES)


def install_models(wheel: Path, directory: Path | None = None) -> Path:
    """Extract the pose models from a downloaded ``mediapipe`` wheel into ``directory`` (default:
    :func:`model_dir`), checking each file's SHA-256; each is renamed into place, so a reader never
    sees a partial file."""
    directory = directory or model_dir()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise RegionModelsMissingError(f"cannot read the mediapipe wheel {wheel}: {e}") from None
    with archive:
        for name, (member, digest) in MODEL_FILES.items():
            try:
                data = archive.read(member)
            except KeyError:
                raise RegionModelsMissingError(
                    f"{wheel} has no {member}: use mediapipe=={MEDIAPIPE_VERSION}") from None
            if hashlib.sha256(data).hexdigest() != digest:
                raise RegionModelsMissingError(f"{member} in {wheel} is not the file vestis was built for "
                                               f"(SHA-256 differs): use mediapipe=={MEDIAPIPE_VERSION}")
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}-", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, directory / name)
    return directory


def missing_message(directory: Path, reason: str) -> str:
    return (f"garment regions need MediaPipe's pose models, which are not installed ({reason}). "
            "Install them with `make install`, or: pip download --no-deps "
            f"mediapipe=={MEDIAPIPE_VERSION} -d WHEELS && python -m vestis.encoders.regions "
            f"WHEELS/mediapipe-{MEDIAPIPE_VERSION}-*.whl (they go to {directory})")



@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to the process's stderr to /dev/null for the block (Python's own
    messages go through sys.stderr, flushed first). Only around a model's creation: it takes
    milliseconds, once per model."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LiteModel:
    """One LiteRT interpreter; a lock makes it safe to call from several threads."""

    def __init__(self, path: Path, threads: int | None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        with native_stderr_silenced():  # LiteRT's C++ prints an INFO line per model on creation
            self._interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count() or 1)
            self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._outputs = [d["index"] for d in self._interpreter.get_output_details()]
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            self._interpreter.set_tensor(self._input, x[None])
            self._interpreter.invoke()
            return [self._interpreter.get_tensor(i)[0].copy() for i in self._outputs]



def main(argv: Sequence[str]) -> int:
    """``python -m vestis.encoders.regions [WHEEL]``: install the models from a downloaded mediapipe
    wheel; without one, exit 0 when they are installed, 1 when not."""
    if not argv:
        return 0 if models_installed() else 1
    try:
        print(f"pose models installed in {install_models(Path(argv[0]))}")
    except VestisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0

"""benchmarks/cpu_mask: a process run under the CPUID mask gets the AVX2 kernels of PyTorch and
onnxruntime on a CPU that has AVX-512 and VNNI, and vestis chooses its 8-bit recipe for AVX2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.cpu_mask.run import build, masked_env, unsupported
from vestis.encoders.cpu import cpu_info

pytestmark = pytest.mark.skipif(unsupported() is not None, reason=unsupported() or "")
HAS_AVX512_VNNI = {"avx512f", "avx512_vnni"} <= cpu_info()[1]


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("mask"))


def run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True,
                          timeout=300)


CAPABILITY = """
import json, torch
from vestis.encoders import default_encoder
from vestis.encoders.cpu import describe_cpu
print(json.dumps([torch.backends.cpu.get_cpu_capability(), describe_cpu(), default_encoder()]))
"""


@pytest.mark.skipif(not HAS_AVX512_VNNI, reason="the CPU has no AVX-512 VNNI to hide")
def test_the_masked_process_sees_an_avx2_cpu(library):
    plain, masked = (run(CAPABILITY, env) for env in (None, masked_env(library)))
    assert plain.returncode == 0 and masked.returncode == 0, plain.stderr + masked.stderr
    assert json.loads(plain.stdout)[0].startswith("AVX512")
    assert json.loads(plain.stdout)[2] == "efficientnet-lite0-int8-vnni"
    capability, described, default = json.loads(masked.stdout)
    assert capability == "AVX2"
    assert described.endswith("(avx2)") and default == "efficientnet-lite0-int8"


def test_real_faults_still_crash_with_faulthandler_on(library):
    code = "import faulthandler, ctypes, torch; faulthandler.enable(); ctypes.string_at(0)"
    done = run(code, masked_env(library))
    assert done.returncode == -11 and "Segmentation fault" in done.stderr  # faulthandler's report


AGREEMENT = """
import json, numpy as np
from vestis.encoders import BUILTIN_PREPROCESSING
from vestis.encoders.onnx_encoder import INPUT, builtin_model_path, open_session
from vestis.encoders.quantize import calibration_image

names = ["efficientnet-lite0", "efficientnet-lite0-int8", "efficientnet-lite0-int8-vnni"]
spec = BUILTIN_PREPROCESSING[names[0]]
rng = np.random.default_rng(7)
batch = np.stack([spec(calibration_image(rng)) for _ in range(8)])
out = [open_session(builtin_model_path(n), 1).run(["embedding"], {INPUT: batch})[0] for n in names]
out = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in out]
print(json.dumps([float((out[0] * v).sum(1).mean()) for v in out[1:]]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not HAS_AVX512_VNNI, reason="the CPU has no AVX-512 VNNI to hide")
def test_onnxruntime_takes_its_avx2_path_under_the_mask(library):
    """Full-range 8-bit weights (the VNNI recipe) overflow MLAS's AVX2 kernel, which adds pairs of
    u8 x s8 products in 16 bits: under the mask its embeddings move away from float32's, while the
    7-bit portable recipe's do not."""
    plain, masked = (run(AGREEMENT, env) for env in (None, masked_env(library)))
    assert plain.returncode == 0 and masked.returncode == 0, plain.stderr + masked.stderr
    (portable, vnni), (portable_masked, vnni_masked) = json.loads(plain.stdout), json.loads(masked.stdout)
    assert vnni > portable  # with VNNI, 8-bit weights agree better (generated images: about 0.97 and 0.92)
    assert abs(portable_masked - portable) < 1e-3  # 7-bit weights: the same sums either way
    assert vnni_masked < vnni - 0.05, (vnni, vnni_masked)  # overflowed: 0.83 here

"""Run a command on this x86 CPU as if it had AVX2 + FMA and no AVX-512, VNNI or AMX: the kernels
that onnxruntime (MLAS), PyTorch and NumPy choose from CPUID are then their AVX2 ones.

    .venv/bin/python benchmarks/cpu_mask/run.py CMD [ARGS...]

``cpuid_mask.c`` (beside this file; how it works is in its header) is compiled with gcc into a
temporary folder and preloaded (``LD_PRELOAD``) into CMD and every process it starts.
``$VESTIS_CPU_FLAGS`` is set to ``avx2`` so that vestis's own choice of 8-bit recipe and its
optimised-graph cache follow the masked CPU. Needs gcc and Linux on a CPU whose ``/proc/cpuinfo``
lists ``cpuid_fault``.

What it measures: the AVX2 code paths on this core, not another CPU (an AVX2-only AMD EPYC has
its own caches, clocks and instruction timings).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("cpuid_mask.c")
MASKED_FLAGS = "avx2"  # $VESTIS_CPU_FLAGS under the mask (vestis.encoders.cpu)


def unsupported() -> str | None:
    """Why the mask cannot run here, or None when it can."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists() or " cpuid_fault" not in cpuinfo.read_text():
        return "this CPU or kernel has no cpuid_fault (see /proc/cpuinfo), so CPUID cannot be trapped"
    if shutil.which("gcc") is None:
        return "gcc is needed to build the CPUID mask"
    return None


def build(directory: Path) -> Path:
    """Compile the mask into ``directory``; returns the shared library's path."""
    reason = unsupported()
    if reason:
        raise SystemExit(f"cpu_mask: {reason}")
    library = directory / "cpuid_mask.so"
    subprocess.run(["gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(library), str(SOURCE), "-ldl"], check=True)
    return library


def masked_env(library: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with the mask preloaded and vestis told of it."""
    env = dict(os.environ if env is None else env)
    env["LD_PRELOAD"] = " ".join(filter(None, [str(library), env.get("LD_PRELOAD")]))
    env["VESTIS_CPU_FLAGS"] = MASKED_FLAGS
    return env


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        raise SystemExit(__doc__)
    with tempfile.TemporaryDirectory(prefix="cpu-mask-") as tmp:
        library = build(Path(tmp))
        sys.exit(subprocess.run(sys.argv[1:], check=False, env=masked_env(library)).returncode)


if __name__ == "__main__":
    main()

"""The CPU this process runs on, as far as inference speed depends on it: its model name and the
vector extensions onnxruntime's and FAISS's kernels choose between (read from ``/proc/cpuinfo``)."""

from __future__ import annotations

import platform
import re
from functools import cache
from pathlib import Path

# AVX2 with FMA is the baseline x86 kernel; VNNI adds the 8-bit dot product (AVX-512 or AVX form).
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, the :data:`VECTOR_FLAGS` it has) from the text of ``/proc/cpuinfo``."""
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    present = set(flags.group(1).split()) if flags else set()
    return (model.group(1).strip() if model else platform.processor() or "unknown CPU",
            frozenset(f for f in VECTOR_FLAGS if f in present))


@cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """The running CPU's :func:`parse_cpuinfo`; an unknown model and no flags off Linux."""
    path = Path("/proc/cpuinfo")
    return parse_cpuinfo(path.read_text() if path.exists() else "")


def has_vnni(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU (``flags``, default the running one's) multiplies 8-bit integers natively
    (AVX-512 VNNI or AVX-VNNI)."""
    return bool((cpu_info()[1] if flags is None else flags) & {"avx512_vnni", "avx_vnni"})


def describe_cpu(info: tuple[str, frozenset[str]] | None = None) -> str:
    """One line for a benchmark record: the model and its vector extensions."""
    model, flags = info or cpu_info()
    return f"{model} ({', '.join(f for f in VECTOR_FLAGS if f in flags) or 'no AVX2'})"

"""The CPU this process runs on, as far as inference speed depends on it: its model name and the
vector extensions onnxruntime's and FAISS's kernels choose between (read from ``/proc/cpuinfo``).

``$VESTIS_CPU_FLAGS`` (space-separated), when set, replaces the flags read there: a process whose
CPUID is masked (``benchmarks/cpu_mask``) gets kernels for fewer extensions than ``/proc/cpuinfo``
lists, and vestis's choice of 8-bit recipe has to follow the kernels, not the kernel's list."""

from __future__ import annotations

import os
import platform
import re
from functools import cache
from pathlib import Path

# AVX2 with FMA is the baseline x86 kernel; VNNI adds the 8-bit dot product (AVX-512 or AVX form).
FLAGS_ENV = "VESTIS_CPU_FLAGS"
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, the :data:`VECTOR_FLAGS` it has) from the text of ``/proc/cpuinfo``."""
    model = re.search(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.MULTILINE)
    present = set(flags.group(1).split()) if flags else set()
    return (model.group(1).strip() if model else platform.processor() or "unknown CPU",
            frozenset(f for f in VECTOR_FLAGS if f in present))


@cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """The running CPU's :func:`parse_cpuinfo` (its flags replaced by ``$VESTIS_CPU_FLAGS`` where
    set); an unknown model and no flags off Linux."""
    path = Path("/proc/cpuinfo")
    model, flags = parse_cpuinfo(path.read_text() if path.exists() else "")
    override = os.environ.get(FLAGS_ENV)
    return model, flags if override is None else frozenset(f for f in VECTOR_FLAGS if f in override.split())


def has_vnni(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU (``flags``, default the running one's) multiplies 8-bit integers natively
    (AVX-512 VNNI or AVX-VNNI)."""
    return bool((cpu_info()[1] if flags is None else flags) & {"avx512_vnni", "avx_vnni"})


def describe_cpu(info: tuple[str, frozenset[str]] | None = None) -> str:
    """One line for a benchmark record: the model and its vector extensions."""
    model, flags = info or cpu_info()
    return f"{model} ({', '.join(f for f in VECTOR_FLAGS if f in flags) or 'no AVX2'})"

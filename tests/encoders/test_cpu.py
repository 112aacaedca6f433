"""The CPU description that benchmarks record and the 8-bit encoder's choice reads."""

from __future__ import annotations

from vestis.encoders.cpu import cpu_info, describe_cpu, has_vnni, parse_cpuinfo

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2
"""
XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx_vnni avx512_bf16 amx_int8
"""


def test_an_avx2_only_cpu_has_no_vnni():
    info = parse_cpuinfo(EPYC)
    assert info == ("AMD EPYC 7B12", frozenset({"avx2"}))
    assert not has_vnni(info[1])
    assert describe_cpu(info) == "AMD EPYC 7B12 (avx2)"


def test_a_vnni_cpu_lists_its_extensions_in_a_fixed_order():
    info = parse_cpuinfo(XEON)
    assert has_vnni(info[1])
    assert describe_cpu(info) == ("Intel(R) Xeon(R) Platinum 8481C "
                                  "(avx2, avx512f, avx512_vnni, avx_vnni, avx512_bf16, amx_int8)")


def test_the_running_cpu_is_described():
    model, flags = cpu_info()
    assert model and describe_cpu().startswith(model)
    assert has_vnni() == bool(flags & {"avx512_vnni", "avx_vnni"})


def test_vestis_cpu_flags_replace_the_flags_and_key_the_optimised_graphs(monkeypatch):
    """Under a CPUID mask (benchmarks/cpu_mask) /proc/cpuinfo still lists what the kernels no longer
    use: $VESTIS_CPU_FLAGS says what they do, and the optimised-graph cache follows it."""
    from pathlib import Path

    from vestis.encoders.cpu import FLAGS_ENV
    from vestis.encoders.onnx_encoder import _optimized_path

    model = Path("/cache/m.onnx")
    keys = []
    try:
        for flags in ("avx2 avx512f avx512_vnni", "avx2 not-a-flag"):
            monkeypatch.setenv(FLAGS_ENV, flags)
            cpu_info.cache_clear()
            keys.append(_optimized_path(model))
        assert cpu_info()[1] == frozenset({"avx2"}) and not has_vnni()
        assert describe_cpu().endswith("(avx2)")
        assert keys[0] != keys[1]
    finally:
        cpu_info.cache_clear()

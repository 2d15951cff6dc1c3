"""The CPU kernels a stage's kernel is pinned to, decided without importing torch.

The stage runner (:mod:`lib.stage`) sets this environment for the notebook's
kernel before the kernel starts; it reads only ``/proc/cpuinfo``, so the
runner itself never imports torch.
"""

from __future__ import annotations

import os

__all__ = ["PORTABLE_X86_KERNELS", "portable_cpu_kernels"]

#: Instruction sets pinned for a stage's kernel on x86-64 CPUs with AVX2: numpy, OpenBLAS,
#: PyTorch's ATen and oneDNN pick their kernels by the CPU they find, and AVX-512 kernels round
#: differently in the last bit from AVX2 ones, so the same stage on two x86 machine
#: generations wrote datasets that differed by a few bytes (and DVC reran everything
#: downstream). Pinned to AVX2, both run the same kernels. A value already in the environment wins.
PORTABLE_X86_KERNELS = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Haswell",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}


def portable_cpu_kernels(cpuinfo: str | None = None, machine: str | None = None) -> dict[str, str]:
    """The environment that pins a stage's CPU kernels to AVX2 (:data:`PORTABLE_X86_KERNELS`),
    on x86-64 CPUs that have AVX2; empty elsewhere (ARM, or an x86 CPU without AVX2),
    where no such choice is made. ``cpuinfo`` and ``machine`` default to this machine's."""
    import platform

    machine = machine or platform.machine()
    if cpuinfo is None:
        try:
            cpuinfo = open("/proc/cpuinfo", encoding="utf-8").read()
        except OSError:
            cpuinfo = ""
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    if machine.lower() not in ("x86_64", "amd64") or "avx2" not in flags:
        return {}
    return {key: os.environ.get(key, value) for key, value in PORTABLE_X86_KERNELS.items()}

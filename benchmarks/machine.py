"""What the benchmarks measure about the machine itself: its convolution limit, the AVX2 emulation, memory.

Shared by ``benchmarks/infer.py`` and ``benchmarks/train.py`` (run as scripts, they import it from
their own folder).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

#: The environment that makes this process behave as on a CPU without AVX-512 and native bf16:
#: ATen's kernels (``ATEN_CPU_CAPABILITY``) and oneDNN's convolutions (``ONEDNN_MAX_CPU_ISA``) both
#: limited to AVX2. (ONNX Runtime's own kernels are not limited by either.)
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def avx2_env() -> dict[str, str]:
    """``os.environ`` plus :data:`AVX2_ENV`, for a child process."""
    return dict(os.environ, **AVX2_ENV)


def emulating_avx2() -> bool:
    """Whether this process runs under :data:`AVX2_ENV` (or on a CPU that only has AVX2)."""
    return str(torch.backends.cpu.get_cpu_capability()).upper() == "AVX2"


def describe() -> dict[str, str]:
    """The machine in a few fields for a report."""
    return {
        "processor": platform.processor() or platform.machine(),
        "threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "(unset: all the CPU has)"),
    }


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def conv_limit_gflops(dtype: torch.dtype = torch.float32, seconds: float = 2.0, backward: bool = False) -> float:
    """This machine's throughput on a large 3 x 3 convolution (64 -> 64 channels, 8 x 128 x 128,
    channels_last), in GFLOP/s: fp32 as is, bf16 under CPU autocast (emulated where not native).
    ``backward`` times forward + backward (3x the forward FLOPs), the limit a training step meets."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    x = torch.rand(8, 64, 128, 128).contiguous(memory_format=torch.channels_last)
    flops = 2 * 64 * 64 * 9 * 8 * 128 * 128 * (3 if backward else 1)
    if backward:
        x.requires_grad_(True)

    def run() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            if backward:
                conv(x).sum().backward()
            else:
                with torch.inference_mode():
                    conv(x)

    run()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        run()
        n += 1
    return flops * n / (time.perf_counter() - t0) / 1e9

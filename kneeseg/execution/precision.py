"""Automatic mixed precision policy for CUDA and CPU.

MONAI's ``SupervisedTrainer(amp=True)`` hard-codes ``torch.autocast("cuda")`` and a CUDA
``GradScaler``: on a CPU it runs in fp32. kneeseg resolves one policy from the config's
``amp`` value (``"auto"``, ``True``/``"true"``, ``False``/``"false"``) and the device:

- CUDA: fp16 autocast with a ``GradScaler`` (MONAI's own ``amp=True`` path supplies the scaler);
- CPU with native bf16 (AVX512-BF16 / AMX): bf16 autocast, no scaler (bf16 has fp32's range);
- otherwise, or ``amp`` false: fp32.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["AmpPolicy", "cpu_supports_bf16", "resolve_amp"]


def cpu_supports_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX) *and* PyTorch's kernels may
    use it, so bf16 autocast pays off.

    Both are decided at run time: the instruction sets from the CPU, the kernels from
    ``torch.backends.cpu.get_cpu_capability()`` (``ATEN_CPU_CAPABILITY=avx2`` lowers it to AVX2,
    which makes an AVX-512 machine behave like one without native bf16).
    """
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    if not capability.startswith("AVX512"):
        return False
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe is not None and probe()) or (amx is not None and amx()))


@dataclass(frozen=True)
class AmpPolicy:
    """A resolved precision policy.

    Attributes:
        device_type: ``"cuda"`` or ``"cpu"`` (the autocast device type).
        dtype: the autocast dtype, or ``None`` for fp32.
        grad_scaler: whether training needs a ``GradScaler`` (fp16 on CUDA).
    """

    device_type: str
    dtype: torch.dtype | None

    @property
    def enabled(self) -> bool:
        """Whether autocast is on."""
        return self.dtype is not None

    @property
    def grad_scaler(self) -> bool:
        """fp16 needs loss scaling; bf16 and fp32 do not."""
        return self.dtype == torch.float16

    @property
    def monai_amp(self) -> bool:
        """The value to pass as MONAI's ``amp=`` flag: True only where MONAI's CUDA path applies."""
        return self.device_type == "cuda" and self.grad_scaler

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Context manager: autocast with this policy, or nothing for fp32."""
        if self.dtype is None:
            yield
        else:
            with torch.autocast(self.device_type, dtype=self.dtype):
                yield

    def describe(self) -> str:
        """A short human-readable form, e.g. ``"cpu bf16 autocast"``."""
        if self.dtype is None:
            return f"{self.device_type} fp32"
        scaler = " + GradScaler" if self.grad_scaler else ""
        return f"{self.device_type} {str(self.dtype).replace('torch.', '')} autocast{scaler}"

    @classmethod
    def resolve(cls, amp: str | bool | None = "auto", device: str | torch.device | None = None) -> AmpPolicy:
        """Alias of :py:func:`resolve_amp` for bundle configs (``"_target_": "kneeseg.execution.AmpPolicy.resolve"``)."""
        return resolve_amp(amp, device)


def _parse(amp: str | bool | None) -> str:
    if amp is None:
        return "auto"
    if isinstance(amp, bool):
        return "true" if amp else "false"
    value = str(amp).strip().lower()
    aliases = {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false"}
    value = aliases.get(value, value)
    if value not in ("auto", "true", "false"):
        raise ValueError(f"amp must be 'auto', true or false, got {amp!r}.")
    return value


def resolve_amp(amp: str | bool | None = "auto", device: str | torch.device | None = None) -> AmpPolicy:
    """Resolve the config's ``amp`` value for ``device`` into an :py:class:`AmpPolicy`.

    Args:
        amp: ``"auto"`` (mixed precision where the hardware supports it), ``True`` or ``False``.
        device: the training/inference device; defaults to CUDA when available, else CPU.

    Raises:
        ValueError: for an unrecognised ``amp`` value.
    """
    mode = _parse(amp)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if mode == "false":
        return AmpPolicy(dev.type, None)
    if dev.type == "cuda":
        return AmpPolicy("cuda", torch.float16)
    if dev.type == "cpu":
        if cpu_supports_bf16():
            return AmpPolicy("cpu", torch.bfloat16)
        if mode == "true":
            # honoured on request, though without native bf16 it is emulated and slow
            warnings.warn("amp=true on a CPU without native bf16: bf16 autocast will be emulated and may be slow.")
            return AmpPolicy("cpu", torch.bfloat16)
        return AmpPolicy("cpu", None)
    if mode == "true":
        warnings.warn(f"amp=true is not supported on device type {dev.type!r}; running in fp32.")
    return AmpPolicy(dev.type, None)

"""Network runtimes for inference, and the automatic choice between them.

Three ways to run a trained 2D network on batches of slices, all returning fp32 logits:

- ``eager``: fp32 PyTorch (the reference);
- ``bf16``: bfloat16 autocast with ``channels_last`` tensors -- fast only where the hardware
  computes bf16 natively (CPUs with AVX512-BF16 or AMX, CUDA GPUs); elsewhere PyTorch emulates
  it and it is slower than ``eager``;
- ``onnx``: the network exported once to ONNX and run by ONNX Runtime (CPU provider, or the
  CUDA provider on a CUDA device when ONNX Runtime has it).

``auto`` (:func:`choose_runtime`) decides at run time from what this process can do, never from
the CPU's name: on CUDA ``eager`` or ``bf16``, whichever a short measurement on the real network
finds faster (``bf16`` unmeasured); on a CPU whose ATen capability
(``torch.backends.cpu.get_cpu_capability()``, which ``ATEN_CPU_CAPABILITY`` lowers) includes
native bf16, ``bf16`` or ``onnx``, whichever a short measurement on the real network finds faster;
on any other CPU ``onnx`` when ONNX Runtime is installed (``eager`` otherwise). The choice and the
reason are one line for logs, manifests and records (:class:`RuntimeChoice`).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kneeseg.execution.precision import cpu_supports_bf16
from kneeseg.execution.choices import RUNTIMES
from kneeseg.files import PathLike
from kneeseg.atomic import atomic_write_bytes

__all__ = [
    "RUNTIMES",
    "RuntimeChoice",
    "NetworkRunner",
    "choose_runtime",
    "ensemble_runners",
    "export_onnx",
    "onnx_session",
    "onnxruntime_version",
]

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class RuntimeChoice:
    """A resolved runtime (``eager``, ``bf16`` or ``onnx``) and why it was chosen."""

    name: str
    reason: str

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"


def onnxruntime_version() -> str | None:
    """The installed ONNX Runtime's version, or ``None`` when it cannot be imported."""
    try:
        import onnxruntime
    except Exception:
        return None
    return str(onnxruntime.__version__)


def _cpu_note() -> str:
    capability = torch.backends.cpu.get_cpu_capability()
    return f"ATen CPU capability {capability}, native bf16 {'yes' if cpu_supports_bf16() else 'no'}"


def choose_runtime(
    requested: str = "auto",
    device: str | torch.device = "cpu",
    measure: Callable[[str], float] | None = None,
) -> RuntimeChoice:
    """Resolve ``requested`` (one of :data:`RUNTIMES`) for ``device``.

    Args:
        requested: ``auto`` or a runtime name (kept as asked, with a warning in the reason when
            ``bf16`` would be emulated).
        device: the inference device.
        measure: ``measure(name) -> seconds per batch`` on the real network; used by ``auto``
            where two runtimes are both plausible (native bf16 and ONNX Runtime). Without it,
            ``bf16`` is taken there.

    Raises:
        ValueError: an unknown runtime name, or ``onnx`` without ONNX Runtime installed.
    """
    if requested not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {requested!r}")
    dev = torch.device(device)
    ort = onnxruntime_version()
    if requested != "auto":
        if requested == "onnx" and ort is None:
            raise ValueError("runtime 'onnx' needs ONNX Runtime: pip install onnxruntime")
        note = "requested"
        if requested == "bf16" and dev.type == "cpu" and not cpu_supports_bf16():
            note += f"; emulated on this CPU ({_cpu_note()}), slower than eager"
        return RuntimeChoice(requested, note)
    if dev.type == "cuda":
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            return RuntimeChoice("eager", "CUDA device without bf16 support")
        if measure is None:
            return RuntimeChoice("bf16", "CUDA device: bf16 autocast; not measured")
        # small networks can be faster in fp32 (TF32) than under autocast: time both (docs/gpu.md)
        seconds = {name: measure(name) for name in ("eager", "bf16")}
        best = min(seconds, key=seconds.get)
        timing = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in seconds.items())
        return RuntimeChoice(best, f"CUDA device; measured per batch: {timing}")
    if dev.type != "cpu":
        return RuntimeChoice("eager", f"device type {dev.type}")
    if cpu_supports_bf16():
        if ort is None or measure is None:
            missing = "ONNX Runtime not installed" if ort is None else "not measured"
            return RuntimeChoice("bf16", f"{_cpu_note()}; {missing}")
        seconds = {name: measure(name) for name in ("bf16", "onnx")}
        best = min(seconds, key=seconds.get)
        timing = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in seconds.items())
        return RuntimeChoice(best, f"{_cpu_note()}; measured per batch: {timing}")
    if ort is not None:
        return RuntimeChoice("onnx", f"{_cpu_note()}; ONNX Runtime {ort}")
    return RuntimeChoice("eager", f"{_cpu_note()}; ONNX Runtime not installed (pip install onnxruntime)")


def export_onnx(network: torch.nn.Module, spatial_size: int, opset: int = 17) -> bytes:
    """ONNX bytes of a 2D network with a dynamic batch axis (legacy TorchScript-based exporter)."""
    net = network.eval()
    params = list(net.parameters())
    device = params[0].device if params else torch.device("cpu")
    was_cl = bool(params) and params[0].dim() == 4 and params[0].is_contiguous(memory_format=torch.channels_last)
    net.to(memory_format=torch.contiguous_format)
    example = torch.zeros(2, 1, spatial_size, spatial_size, device=device)
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            net, example, buf, input_names=["image"], output_names=["logits"], opset_version=opset,
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )  # fmt: skip
    if was_cl:
        net.to(memory_format=torch.channels_last)
    return buf.getvalue()


def onnx_session(model: bytes, device: str | torch.device = "cpu", threads: int | None = None) -> Any:
    """An ONNX Runtime session for ``model``: all graph optimisations, ``threads`` intra-op threads
    (default ``torch.get_num_threads()``), one inter-op thread, the CUDA provider first on a CUDA
    device when available."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # idle worker threads sleep instead of spinning: on a few cores the spinning would take the
    # CPU from the thread that reads and preprocesses the next series
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(model, options, providers=providers)


class NetworkRunner:
    """A network under one runtime: ``runner(batch) -> fp32 logits`` on the batch's device.

    Args:
        network: the 2D network with its weights (put in eval mode; forward passes run under
            ``torch.no_grad``).
        spatial_size: input side ``N`` (for the ONNX export).
        runtime: ``auto`` or a runtime name (see :func:`choose_runtime`).
        device: the device of ``eager``/``bf16`` (``onnx`` picks its provider from it).
        onnx_model: ONNX bytes to use instead of exporting (e.g. from a cache).
        on_export: called with the ONNX bytes after an export (to cache them).
        threads: intra-op threads of ONNX Runtime.
        probe_batch: slices per batch when ``auto`` times the runtimes against each other.
        concurrent: for ``onnx``, the number of batches the caller will run at the same time
            (from several threads); each run then gets one intra-op thread (``threads`` is
            ignored). On a few cores, separate batches in parallel do more work per core than
            one batch split across threads. Read it back from :attr:`concurrent` (1 for the
            other runtimes).

    Attributes:
        choice: the resolved :class:`RuntimeChoice`.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        spatial_size: int,
        runtime: str = "auto",
        device: str | torch.device = "cpu",
        *,
        onnx_model: bytes | None = None,
        on_export: Callable[[bytes], None] | None = None,
        threads: int | None = None,
        probe_batch: int = 8,
        concurrent: int = 1,
    ) -> None:
        self.device = torch.device(device)
        self.spatial_size = int(spatial_size)
        self.network = network.eval().to(self.device)
        self._onnx_model = onnx_model
        self._on_export = on_export
        self._threads = threads
        self._sessions: dict[str, Any] = {}
        self._probe_batch = int(probe_batch)
        self._concurrent = max(1, int(concurrent))
        self.choice = choose_runtime(runtime, self.device, measure=self._measure)
        self._prepare(self.choice.name)

    @property
    def concurrent(self) -> int:
        """How many batches the caller should run at once (>1 only for ``onnx`` on the CPU)."""
        return self._concurrent if self.name == "onnx" and self.device.type == "cpu" else 1

    @property
    def name(self) -> str:
        return self.choice.name

    # ------------------------------------------------------------------ set-up
    def _prepare(self, name: str) -> None:
        if name == "bf16":
            self.network.to(memory_format=torch.channels_last)
        else:
            self.network.to(memory_format=torch.contiguous_format)
        if name == "onnx" and "onnx" not in self._sessions:
            model = self._onnx_model
            if model is None:
                model = export_onnx(self.network, self.spatial_size)
                self._onnx_model = model
                if self._on_export is not None:
                    self._on_export(model)
            threads = 1 if self._concurrent > 1 and self.device.type == "cpu" else self._threads
            self._sessions["onnx"] = onnx_session(model, self.device, threads)

    def _measure(self, name: str) -> float:
        """Seconds per batch of ``probe_batch`` slices under runtime ``name`` (best of 3, after a warm-up)."""
        self._prepare(name)
        x = torch.rand(self._probe_batch, 1, self.spatial_size, self.spatial_size)
        parallel = self._concurrent if name == "onnx" and self.device.type == "cpu" else 1
        if self.device.type == "cuda":
            x = x.to(self.device)
        self._run(name, x)
        self._sync()
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            if parallel > 1:  # as the caller will run it: several batches at once
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(parallel) as pool:
                    list(pool.map(lambda _: self._run(name, x), range(parallel)))
            else:
                self._run(name, x)
            self._sync()
            best = min(best, (time.perf_counter() - t0) / parallel)
        return best

    def _sync(self) -> None:
        """Wait for the GPU's queued work (CUDA runs asynchronously; a timing needs the end)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ running
    def _run(self, name: str, batch: torch.Tensor) -> torch.Tensor:
        if name == "onnx":
            (out,) = self._sessions["onnx"].run(None, {"image": batch.detach().cpu().float().numpy()})
            return torch.from_numpy(out).to(batch.device)
        x = batch.to(self.device, non_blocking=True)
        # no_grad, not inference_mode: callers such as MONAI's sliding window update the
        # outputs in place outside inference mode
        with torch.no_grad():
            if name == "bf16":
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    out = self.network(x)
            else:
                out = self.network(x)
        return out.float()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """fp32 logits ``(B, K, N, N)`` for a ``(B, 1, N, N)`` batch, on the batch's device."""
        return self._run(self.choice.name, batch)


def ensemble_runners(
    networks: torch.nn.Module | Sequence[torch.nn.Module],
    spatial_size: int,
    runtime: str,
    device: torch.device,
    *,
    threads: int,
    probe_batch: int,
    onnx_path: PathLike | None = None,
) -> list[NetworkRunner]:
    """One :class:`NetworkRunner` per network of a fold ensemble (or for the one network), all
    under one runtime: the first member resolves ``runtime`` (``auto`` measures on it), the
    others take its choice.

    Args:
        networks: a network or a list of them (the ensemble's members).
        runtime: ``auto`` or a runtime name (see :func:`choose_runtime`).
        spatial_size, device: input side ``N`` and device of every runner.
        threads: intra-op threads, and the batches the caller runs at once (``concurrent``).
        probe_batch: slices per batch when ``auto`` times the runtimes against each other.
        onnx_path: where to cache the ONNX exports, one file per member: ``<name>.onnx``,
            ``<name>.1.onnx``, ...; an existing file is used instead of exporting, a new export is
            written there (atomically). ``None``: exports stay in memory.

    Raises:
        ValueError: no network given.
    """
    members = list(networks) if isinstance(networks, (list, tuple)) else [networks]
    if not members:
        raise ValueError("no network given")
    cached = Path(onnx_path) if onnx_path is not None else None

    def keep(model: bytes, path: Path | None) -> None:
        if path is not None:
            atomic_write_bytes(path, model)

    paths: list[Path | None] = [None] * len(members)
    if cached is not None:  # one cached export per member: <name>.onnx, <name>.1.onnx, ...
        paths = [cached if i == 0 else cached.with_suffix(f".{i}.onnx") for i in range(len(members))]
    runners: list[NetworkRunner] = []
    for i, (net, path) in enumerate(zip(members, paths)):
        runners.append(NetworkRunner(
            net, spatial_size, runtime if i == 0 else runners[0].name, device, threads=threads,
            probe_batch=probe_batch, concurrent=threads,
            onnx_model=path.read_bytes() if path is not None and path.is_file() else None,
            on_export=(lambda model, path=path: keep(model, path)),
        ))  # fmt: skip
    return runners

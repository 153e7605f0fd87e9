"""The inference runtimes and ``auto``'s choice between them (kneeseg.execution.runtimes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from kneeseg.execution import RuntimeInferer, SliceOrSimpleInferer, cpu_supports_bf16
from kneeseg.execution import runtimes as rt
from kneeseg.networks import build_network

pytest.importorskip("onnxruntime")


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network("csam_unet", spatial_dims=2, in_channels=1, out_channels=2, width=4).eval()


def test_auto_on_a_cpu_without_native_bf16_is_onnx():
    """``ATEN_CPU_CAPABILITY=avx2`` makes any x86 CPU one without native bf16: auto takes ONNX Runtime."""
    code = ("import json; from kneeseg.execution.runtimes import choose_runtime; "
            "c = choose_runtime('auto', 'cpu'); print(json.dumps([c.name, c.reason]))")  # fmt: skip
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    name, reason = json.loads(out.stdout.strip().splitlines()[-1])
    assert name == "onnx"
    assert "ATen CPU capability AVX2" in reason and "native bf16 no" in reason


def test_auto_in_this_process_follows_the_cpu():
    runner = rt.NetworkRunner(_net(), 32, "auto")
    if cpu_supports_bf16():
        assert runner.name in ("bf16", "onnx") and "measured per batch" in runner.choice.reason
    else:
        assert runner.name == "onnx"


def test_measured_choice_takes_the_faster_runtime(monkeypatch):
    """Where bf16 is native, auto measures bf16 and onnx on the real network and keeps the faster
    (forced here on any CPU: the measurement itself is real)."""
    monkeypatch.setattr(rt, "cpu_supports_bf16", lambda: True)
    runner = rt.NetworkRunner(_net(), 32, "auto", probe_batch=2)
    reason = runner.choice.reason
    assert "measured per batch" in reason
    times = dict(part.rsplit(" ", 2)[:2] for part in reason.split("measured per batch: ")[1].split(", "))
    assert set(times) == {"bf16", "onnx"}
    assert runner.name == min(times, key=lambda k: float(times[k]))


def test_requested_runtimes_and_errors(monkeypatch):
    assert rt.choose_runtime("eager").describe() == "eager (requested)"
    bf16 = rt.choose_runtime("bf16", "cpu")
    assert bf16.name == "bf16"
    assert ("emulated" in bf16.reason) == (not cpu_supports_bf16())
    assert rt.choose_runtime("auto", "cuda").name == "bf16"  # unmeasured
    for eager_s, expected in ((0.010, "eager"), (0.030, "bf16")):  # the rule; tests/test_cuda.py times a real GPU
        choice = rt.choose_runtime("auto", "cuda", measure=lambda name, e=eager_s: e if name == "eager" else 0.020)
        assert choice.name == expected and "measured per batch" in choice.reason
    with pytest.raises(ValueError, match="runtime must be one of"):
        rt.choose_runtime("tensorrt")
    monkeypatch.setattr(rt, "onnxruntime_version", lambda: None)
    with pytest.raises(ValueError, match="pip install onnxruntime"):
        rt.choose_runtime("onnx")
    if not cpu_supports_bf16():
        assert rt.choose_runtime("auto", "cpu").name == "eager"  # no ONNX Runtime: eager, said why


@pytest.mark.parametrize("runtime", ["auto", "bf16", "onnx"])
def test_runners_agree_with_eager(runtime):
    net = _net()
    x = torch.rand(3, 1, 32, 32)
    ref = rt.NetworkRunner(net, 32, "eager")(x)
    out = rt.NetworkRunner(net, 32, runtime)(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    tol = 0.15 if rt.NetworkRunner(net, 32, runtime).name == "bf16" else 1e-4
    assert float((out - ref).abs().max()) < tol
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.99


def test_bundle_inferer_runs_the_runtime_and_follows_new_weights():
    """The bundle's RuntimeInferer (slice by slice over a volume) equals eager, and exports again
    when the weights change (as when a checkpoint is loaded after the first call)."""
    net = _net(0)
    volume = torch.rand(1, 1, 32, 32, 5)
    slicer = SliceOrSimpleInferer(roi_size=[32, 32], spatial_dim=2, sw_batch_size=2)
    with torch.inference_mode():
        ref = slicer(volume, net)
    inferer = RuntimeInferer(slicer, runtime="onnx", spatial_size=32)
    out = inferer(volume, net)
    assert inferer.runner is not None and inferer.runner.name == "onnx"
    assert float((out - ref).abs().max()) < 1e-4
    with torch.no_grad():
        net.load_state_dict(_net(1).state_dict())
        ref2 = slicer(volume, net)
    out2 = inferer(volume, net)
    assert float((ref2 - ref).abs().max()) > 1e-3  # the weights did change
    assert float((out2 - ref2).abs().max()) < 1e-4


def test_the_earlier_package_name_still_serves_older_bundle_configs():
    """Bundle configs of 0.4.2 and before write ``kneeseg.engines.RuntimeInferer`` and the like."""
    import kneeseg.engines
    import kneeseg.execution

    for name in ("RuntimeInferer", "SliceOrSimpleInferer", "AutocastInferer", "resolve_amp", "loader_workers", "lr_scheduler"):
        assert getattr(kneeseg.engines, name) is getattr(kneeseg.execution, name), name

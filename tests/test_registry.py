"""The model zoo: every registered network builds, runs, exports, and is a bundle `_target_`."""

import io
import warnings

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from kneeseg.networks import CSAMUNet, FRUNet, build_network, list_networks, network_spec

EXPECTED = {
    "csam_unet", "paper_literal", "unet", "res_unet", "att_unet", "unetpp", "fr_unet",
    "monai_attention_unet", "monai_unet", "basic_unet",
}  # fmt: skip


def test_registry_has_the_paper_methods_and_peers():
    assert EXPECTED <= set(list_networks())
    assert all(network_spec(n).description for n in list_networks())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_network_builds_with_defaults_and_runs_on_64x64(name):
    torch.manual_seed(0)
    net = build_network(name).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 2, 64, 64)
    assert torch.isfinite(out).all()


def test_ablations_are_the_right_switches():
    assert isinstance(build_network("fr_unet"), FRUNet)
    for name, residual, attention in [
        ("unet", False, "none"), ("res_unet", True, "none"), ("att_unet", False, "skip"), ("csam_unet", True, "skip"),
    ]:  # fmt: skip
        net = build_network(name, width=4)
        assert isinstance(net, CSAMUNet) and net.attention == attention
        assert any(n.endswith("shortcut.conv.weight") for n, _ in net.named_parameters()) == residual


def test_overrides_pass_through():
    net = build_network("csam_unet", width=8, out_channels=5, spatial_dims=3, channels=(4, 8, 16))
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 8, 8, 8)).shape == (1, 5, 8, 8, 8)
    with pytest.raises(KeyError, match="known networks: csam_unet"):
        build_network("segformer")
    with pytest.raises(TypeError):
        build_network("res_unet", not_an_argument=1)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_usable_as_bundle_target(name):
    direct = {"network_def": {"_target_": f"kneeseg.networks.registry.{name}", "width": 4, "out_channels": 3}}
    by_name = {"network_def": {"_target_": "kneeseg.networks.build_network", "name": name, "width": 4, "out_channels": 3}}
    for config in (direct, by_name):
        parser = ConfigParser(config)
        net = parser.get_parsed_content("network_def")
        with torch.no_grad():
            assert net.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_trace_and_onnx_reproduce_eager(name):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = build_network(name, width=4).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, x, check_trace=False)
        buf = io.BytesIO()
        with torch.no_grad():
            torch.onnx.export(net, (x,), buf, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    with torch.no_grad():
        torch.testing.assert_close(traced(x), ref, atol=1e-4, rtol=0)
    got = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-4, rtol=0)

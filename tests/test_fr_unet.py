"""Tests for kneeseg.networks.fr_unet.FRUNet (tiny widths, small inputs: the file runs in seconds)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from kneeseg.networks.fr_unet import FRUNet

TINY = {"features": 4, "levels": 3}


def _tiny(spatial_dims: int = 2, **kwargs) -> FRUNet:
    torch.manual_seed(0)
    return FRUNet(spatial_dims, 1, 2, **{**TINY, **kwargs})


@pytest.mark.parametrize("shape", [(2, 1, 64, 64), (1, 1, 61, 75)])
def test_output_shape_2d(shape: tuple[int, ...]) -> None:
    net = _tiny(2)
    out = net(torch.randn(shape))
    assert out.shape == (shape[0], 2, *shape[2:])
    assert torch.isfinite(out).all()


def test_default_network_odd_size() -> None:
    """The paper-width default (4 levels, pads to multiples of 8) keeps odd sizes."""
    net = FRUNet(2, 1, 2).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 37, 29)).shape == (1, 2, 37, 29)


def test_output_shape_3d() -> None:
    net = _tiny(3)
    out = net(torch.randn(1, 1, 24, 32, 20))
    assert out.shape == (1, 2, 24, 32, 20)


@pytest.mark.parametrize("mode", ["replicate", "constant"])
def test_pads_at_the_end_and_crops_back(mode: str) -> None:
    """A 13x14 input is padded at the end of each axis to 16x16 (multiple of 2**(levels-1) = 4)
    and the output cropped back: it equals running on the explicitly padded image and cropping."""
    net = _tiny(2, padding_mode=mode, dropout=0.0).eval()
    x = torch.randn(1, 1, 13, 14)
    padded = torch.nn.functional.pad(x, [0, 2, 0, 3], mode=mode)
    with torch.no_grad():
        out = net(x)
        ref = net(padded)[..., :13, :14]
        other = _tiny(2, padding_mode="constant" if mode == "replicate" else "replicate", dropout=0.0).eval()(x)
    assert out.shape == (1, 2, 13, 14)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert (out - other).abs().max() > 1e-6, "padding mode has no effect"


def test_every_parameter_gets_a_gradient() -> None:
    net = _tiny(2).train()
    x = torch.randn(2, 1, 20, 28)
    target = torch.randint(0, 2, (2, 20, 28))
    loss = torch.nn.functional.cross_entropy(net(x), target)
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"parameters without gradient: {missing}"


def test_grid_shape_and_heads() -> None:
    """Row l exists in columns l..C-1-l (diamond); heads sit on the last columns' top nodes."""
    net = FRUNet(2, 1, 3, features=4, levels=3, columns=6, supervision_heads=3)
    depths = [len(col.nodes) for col in net.columns]
    assert depths == [1, 2, 3, 3, 2, 1]
    assert [col.is_head for col in net.columns] == [False, False, False, True, True, True]
    # full-resolution branch keeps `features` channels; level l has features * 2**l
    x = torch.randn(1, 1, 16, 16)
    feats = [x]
    for col in net.columns:
        feats = col(feats)
        assert feats[0].shape == (1, 4, 16, 16)
        for lvl, f in enumerate(feats):
            assert f.shape == (1, 4 * 2**lvl, 16 // 2**lvl, 16 // 2**lvl)


def test_output_is_mean_of_heads() -> None:
    net = _tiny(2, supervision_heads=3).eval()
    x = torch.randn(1, 1, 30, 22)
    with torch.no_grad():
        heads = net.forward_heads(x)
        out = net(x)
    assert len(heads) == 3
    assert all(h.shape == out.shape for h in heads)
    torch.testing.assert_close(out, torch.stack(heads).mean(0), atol=1e-6, rtol=0)
    # the heads are genuinely different, so the mean is not any single head
    assert (heads[0] - heads[-1]).abs().max() > 1e-4
    assert (out - heads[-1]).abs().max() > 1e-5


def test_torchscript_matches_eager() -> None:
    net = _tiny(2).eval()
    scripted = torch.jit.script(net)
    x = torch.randn(1, 1, 29, 35)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), atol=1e-4, rtol=0)
        for a, b in zip(scripted.forward_heads(x), net.forward_heads(x)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_onnx_export_matches_eager() -> None:
    """Legacy exporter with dynamic batch and spatial axes: the internal pad/crop follow the size."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    net = _tiny(2).eval()
    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        net, (torch.randn(1, 1, 29, 35),), buffer, input_names=["image"], output_names=["logits"],
        opset_version=17, dynamo=False, dynamic_axes={"image": axes, "logits": axes},
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(1, 1, 29, 35), (2, 1, 40, 37)]:
        x = torch.randn(shape)
        (onnx_out,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            expected = net(x).numpy()
        assert onnx_out.shape == expected.shape == (shape[0], 2, *shape[2:])
        np.testing.assert_allclose(onnx_out, expected, atol=1e-4, rtol=0)


def test_same_seed_same_weights() -> None:
    a, b = _tiny(2).state_dict(), _tiny(2).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(1)
    c = FRUNet(2, 1, 2, **TINY).state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_dropout_active_in_train_only() -> None:
    x = torch.randn(1, 1, 24, 24)
    net = _tiny(2, dropout=0.5)
    net.train()
    assert (net(x) - net(x)).abs().max() > 1e-4, "dropout did not change train-mode outputs"
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x), atol=0, rtol=0)
    # control: without dropout, train mode (batch-norm batch statistics) is deterministic too
    net0 = _tiny(2, dropout=0.0).train()
    torch.testing.assert_close(net0(x), net0(x), atol=0, rtol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"levels": 3, "columns": 4}, "columns"),
        ({"supervision_heads": 0}, "supervision_heads"),
        ({"padding_mode": "reflect"}, "padding_mode"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FRUNet(**kwargs)

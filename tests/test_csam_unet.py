"""CSAMUNet: shapes, gradients, parameter counts, export, determinism."""

import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from kneeseg.networks import ATTENTION_PLACEMENTS, CSAMUNet, ResidualConvBlock, csam_unet_preset

SMALL = (8, 16, 32, 64, 128)


@pytest.mark.parametrize("attention", ATTENTION_PLACEMENTS)
@pytest.mark.parametrize("size", [(64, 64), (61, 75), (17, 16)])
def test_2d_shapes_including_odd_sizes(attention, size):
    net = CSAMUNet(2, 1, 3, channels=SMALL, attention=attention).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, *size))
    assert out.shape == (2, 3) + size


@pytest.mark.parametrize("size", [(16, 16, 16), (13, 18, 9)])
def test_3d_shapes(size):
    net = CSAMUNet(3, 2, 2, channels=(4, 8, 16), attention="both").eval()
    with torch.no_grad():
        out = net(torch.randn(1, 2, *size))
    assert out.shape == (1, 2) + size


def test_odd_input_is_padded_then_cropped_consistently():
    """The crop keeps the top-left of the padded output: a divisible input's result is unchanged by padding."""
    torch.manual_seed(0)
    net = CSAMUNet(2, 1, 2, channels=(4, 8, 16), norm=None, pad_mode="constant").eval()
    x = torch.randn(1, 1, 30, 29)
    padded = torch.nn.functional.pad(x, (0, 3, 0, 2))  # to 32 x 32, as the network does
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(padded)[..., :30, :29])


@pytest.mark.parametrize("attention", ["skip", "both"])
def test_gradient_reaches_every_parameter(attention):
    torch.manual_seed(0)
    net = CSAMUNet(2, 1, 2, channels=(4, 8, 16), attention=attention, reduction=1, dropout=0.1)
    out = net(torch.randn(2, 1, 32, 32))
    torch.nn.functional.cross_entropy(out, torch.randint(0, 2, (2, 32, 32))).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_attention_none_means_no_attention_modules():
    net = CSAMUNet(2, 1, 2, channels=SMALL, attention="none")
    assert not any("attention" in n for n, _ in net.named_parameters())
    assert sum("attention" in n for n, _ in CSAMUNet(2, 1, 2, channels=SMALL, attention="both").named_parameters()) > 0


class _ReferencePlainUNet(nn.Module):
    """Ronneberger's U-Net written out plainly, to check the ablation's parameter count against."""

    def __init__(self, ch=(64, 128, 256, 512, 1024), cin=1, cout=2):
        super().__init__()

        def double(a, b):
            return nn.Sequential(
                nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(),
                nn.Conv2d(b, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(),
            )  # fmt: skip

        self.down = nn.ModuleList([double(cin, ch[0])] + [double(ch[i - 1], ch[i]) for i in range(1, len(ch))])
        self.up = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i], 2, 2) for i in range(len(ch) - 1)])
        self.dec = nn.ModuleList([double(2 * ch[i], ch[i]) for i in range(len(ch) - 1)])
        self.head = nn.Conv2d(ch[0], cout, 1)


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_plain_ablation_has_exactly_the_plain_unet_parameter_count():
    net = CSAMUNet(2, 1, 2, residual=False, attention="none")
    assert _count(net) == _count(_ReferencePlainUNet()) == 31_042_434  # the well-known 31.04 M of U-Net with batch norm


def test_small_config_parameter_count_matches_hand_derivation():
    net = CSAMUNet(2, 1, 2, channels=(4, 8), residual=True, attention="skip", reduction=2, norm=None)
    # encoder 0, block 1->4: conv 1*4*9+4, conv 4*4*9+4, 1x1 projection 1*4+4      = 196
    # encoder 1, block 4->8: conv 4*8*9+8, conv 8*8*9+8, projection 4*8+8           = 920
    # decoder: transposed conv 8->4 (2x2) 8*4*4+4                                   = 132
    #          CSAM(4, r=2): MLP 4->2->4 (4*2+2)+(2*4+4), spatial conv 2*49+1       = 121
    #          block 8->4: conv 8*4*9+4, conv 4*4*9+4, projection 8*4+4            = 476
    # head 1x1 4->2: 4*2+2                                                          = 10
    assert _count(net) == 196 + 920 + 132 + 121 + 476 + 10 == 1855


def test_residual_adds_only_projections():
    plain = _count(CSAMUNet(2, 1, 2, channels=SMALL, residual=False, attention="none"))
    res = _count(CSAMUNet(2, 1, 2, channels=SMALL, residual=True, attention="none"))
    # 1x1 projections: encoder stages change channels (1->8, 8->16, ...), decoder blocks 2c->c
    enc = sum(cin * c + c for cin, c in zip((1,) + SMALL[:-1], SMALL))
    dec = sum(2 * c * c + c for c in SMALL[:-1])
    assert res - plain == enc + dec


def test_residual_block_identity_and_projection():
    torch.manual_seed(0)
    same = ResidualConvBlock(2, 4, 4, norm=None)
    assert isinstance(same.shortcut, nn.Identity)
    x = torch.randn(1, 4, 8, 8)
    torch.testing.assert_close(same(x), torch.relu(same.convs(x) + x))
    proj = ResidualConvBlock(2, 3, 5, norm=None)
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(proj(x), torch.relu(proj.convs(x) + proj.shortcut(x)))
    plain = ResidualConvBlock(2, 3, 5, residual=False)
    assert isinstance(plain.shortcut, nn.Identity) and plain(x).min() >= 0


def test_paper_literal_uses_1x1_encoder():
    net = csam_unet_preset("paper_literal", channels=SMALL)
    enc_kernels = {m.kernel_size for n, m in net.named_modules() if n.startswith("encoder") and isinstance(m, nn.Conv2d)}
    dec_kernels = {m.kernel_size for n, m in net.named_modules() if ".block." in n and isinstance(m, nn.Conv2d)}
    assert enc_kernels == {(1, 1)} and (3, 3) in dec_kernels
    assert {m.kernel_size for n, m in csam_unet_preset("paper", channels=SMALL).named_modules() if n.startswith("encoder.1") and isinstance(m, nn.Conv2d)} >= {(3, 3)}
    with pytest.raises(KeyError, match="known presets"):
        csam_unet_preset("nope")


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="attention must be one of"):
        CSAMUNet(2, 1, 2, channels=SMALL, attention="everywhere")
    with pytest.raises(ValueError, match="spatial_dims"):
        CSAMUNet(1, 1, 2, channels=SMALL)


def test_torchscript_and_trace_reproduce_eager():
    torch.manual_seed(0)
    net = CSAMUNet(2, 1, 2, channels=SMALL, attention="both").eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        ref = net(x)
        scripted = torch.jit.script(net)
        torch.testing.assert_close(scripted(x), ref, atol=1e-4, rtol=0)
        odd = torch.randn(1, 1, 45, 52)
        torch.testing.assert_close(scripted(odd), net(odd), atol=1e-4, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, x)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), ref, atol=1e-4, rtol=0)


def test_onnx_export_reproduces_eager_with_dynamic_shapes():
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = CSAMUNet(2, 1, 2, channels=SMALL, attention="skip").eval()
    x = torch.randn(2, 1, 64, 64)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (x,), buf, dynamo=False, opset_version=17, input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "b", 2: "h", 3: "w"}, "logits": {0: "b", 2: "h", 3: "w"}},
        )  # fmt: skip
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for inp in (x, torch.randn(1, 1, 61, 75)):
        with torch.no_grad():
            ref = net(inp).numpy()
        got = session.run(None, {"image": inp.numpy()})[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_same_seed_same_weights_and_outputs():
    x = torch.randn(1, 1, 32, 32)
    torch.manual_seed(42)
    a = CSAMUNet(2, 1, 2, channels=(4, 8, 16)).eval()
    torch.manual_seed(42)
    b = CSAMUNet(2, 1, 2, channels=(4, 8, 16)).eval()
    torch.manual_seed(7)
    c = CSAMUNet(2, 1, 2, channels=(4, 8, 16)).eval()
    for (n, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), n
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))

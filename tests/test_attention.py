"""Attention blocks: outputs are input x weights, weights in (0, 1), 2D and 3D."""

import pytest
import torch

from kneeseg.networks import CSAM, AttentionConcat, ChannelAttention, Concat, SpatialAttention


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 8, 13, 11)), (3, (2, 8, 7, 6, 5))])
def test_channel_attention_scales_channels(spatial_dims, shape):
    torch.manual_seed(0)
    att = ChannelAttention(spatial_dims, 8, reduction=2)
    x = torch.randn(shape)
    w = att.weights(x)
    assert w.shape == (shape[0], shape[1]) + (1,) * spatial_dims
    assert torch.all(w > 0) and torch.all(w < 1)
    torch.testing.assert_close(att(x), x * w)


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 8, 13, 11)), (3, (2, 8, 7, 6, 5))])
def test_spatial_attention_scales_positions(spatial_dims, shape):
    torch.manual_seed(0)
    att = SpatialAttention(spatial_dims, kernel_size=7)
    x = torch.randn(shape)
    w = att.weights(x)
    assert w.shape == (shape[0], 1) + shape[2:]
    assert torch.all(w > 0) and torch.all(w < 1)
    torch.testing.assert_close(att(x), x * w)


def test_channel_attention_matches_its_definition():
    """sigmoid(MLP(avg) + MLP(max)) with one shared MLP, computed by hand."""
    torch.manual_seed(1)
    att = ChannelAttention(2, 6, reduction=3)
    x = torch.randn(3, 6, 9, 10)
    fc1, act, fc2 = att.mlp
    avg = x.mean(dim=(2, 3))
    mx = x.amax(dim=(2, 3))
    expected = torch.sigmoid(fc2(act(fc1(avg))) + fc2(act(fc1(mx))))
    torch.testing.assert_close(att.weights(x).flatten(1), expected)
    assert fc1.out_features == 2  # 6 // 3 hidden units


def test_spatial_attention_matches_its_definition():
    torch.manual_seed(2)
    att = SpatialAttention(2, kernel_size=5)
    x = torch.randn(2, 4, 12, 9)
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    expected = torch.sigmoid(torch.nn.functional.conv2d(pooled, att.conv.weight, att.conv.bias, padding=2))
    torch.testing.assert_close(att.weights(x), expected)


def test_channel_weights_invariant_to_pixel_permutation():
    torch.manual_seed(3)
    att = ChannelAttention(2, 16, reduction=4)
    x = torch.randn(2, 16, 12, 10)
    perm = torch.randperm(12 * 10)
    xp = x.flatten(2)[:, :, perm].reshape(x.shape)
    torch.testing.assert_close(att.weights(xp), att.weights(x))
    # a non-trivial check: spatial weights do move with the pixels
    sp = SpatialAttention(2)
    assert not torch.allclose(sp.weights(xp), sp.weights(x))


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 8, 16, 12)), (3, (1, 8, 6, 8, 7))])
def test_csam_is_channel_then_spatial(spatial_dims, shape):
    torch.manual_seed(4)
    m = CSAM(spatial_dims, 8, reduction=4)
    x = torch.randn(shape)
    y = x * m.channel.weights(x)
    expected = y * m.spatial.weights(y)
    torch.testing.assert_close(m(x), expected)
    with torch.no_grad():  # the in-place inference path computes the same
        torch.testing.assert_close(m(x), expected)


@pytest.mark.parametrize("channels_last", [False, True])
def test_attention_concat_inference_path_equals_autograd_path(channels_last):
    torch.manual_seed(5)
    merge = AttentionConcat(CSAM(2, 8, reduction=4))
    skip, up = torch.randn(2, 8, 20, 18), torch.randn(2, 8, 20, 18)
    if channels_last:
        skip, up = skip.to(memory_format=torch.channels_last), up.to(memory_format=torch.channels_last)
    ref = torch.cat([merge.attention(skip), up], 1)
    torch.testing.assert_close(merge(skip, up), ref)
    with torch.inference_mode():
        torch.testing.assert_close(merge(skip, up), ref)
    torch.testing.assert_close(Concat()(skip, up), torch.cat([skip, up], 1))


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(2, kernel_size=4)
    with pytest.raises(ValueError, match="reduction"):
        ChannelAttention(2, 8, reduction=0)


def test_channel_weights_equal_in_channels_last_and_contiguous_memory():
    """The channels_last path reduces a positions x channels view: same weights and gradients."""
    torch.manual_seed(0)
    att = ChannelAttention(2, 12, reduction=4)
    x = torch.randn(3, 12, 9, 7)
    xs = [x.clone().requires_grad_(True), x.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)]
    outs = [att.weights(v) for v in xs]
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    for o in outs:
        (o * torch.arange(12.0).reshape(1, 12, 1, 1)).sum().backward()
    assert torch.allclose(xs[0].grad, xs[1].grad, atol=1e-6)

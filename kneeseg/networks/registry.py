"""The model zoo: every network kneeseg trains, by name.

Each entry is a plain module-level function, so a MONAI bundle config can name it either
directly (``{"_target_": "kneeseg.networks.registry.res_unet", "width": 32}``) or through
the registry (``{"_target_": "kneeseg.networks.build_network", "name": "res_unet"}``).
Every builder takes ``spatial_dims``, ``in_channels``, ``out_channels`` and ``width`` (the
first stage's channel count; deeper stages double it), plus the network's own keyword
arguments, which are passed through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from monai.networks.nets import AttentionUnet, BasicUNet, BasicUNetPlusPlus, UNet

from kneeseg.networks.csam_unet import CSAMUNet
from kneeseg.networks.fr_unet import FRUNet

__all__ = [
    "NetworkSpec",
    "build_network",
    "list_networks",
    "network_spec",
    "csam_unet",
    "paper_literal",
    "unet",
    "res_unet",
    "att_unet",
    "unetpp",
    "fr_unet",
    "monai_attention_unet",
    "monai_unet",
    "basic_unet",
]


@dataclass(frozen=True)
class NetworkSpec:
    """A registry entry: the builder and a one-line description (paper name in brackets)."""

    name: str
    builder: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, NetworkSpec] = {}


def _register(name: str, description: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = NetworkSpec(name, fn, description)
        return fn

    return wrap


def _widths(width: int, levels: int = 5) -> tuple[int, ...]:
    return tuple(int(width) * 2**i for i in range(levels))


#: Lower bound on CSAM's channel-MLP hidden width in the registry's attention networks. With the
#: paper's r = 16 the narrowest hidden layer has 64 // 16 = 4 units at the paper's width; at the
#: CPU preset's width 16 it would have 1 (a single scalar gating all channels). 4 keeps the
#: paper's smallest MLP at every width and changes nothing at width >= 64.
CSAM_MIN_HIDDEN = 4


def _csam_family(
    spatial_dims: int, in_channels: int, out_channels: int, width: int, defaults: dict[str, Any], overrides: dict[str, Any]
) -> CSAMUNet:
    kwargs: dict[str, Any] = {"channels": _widths(width)}
    if defaults.get("attention", "none") != "none":
        kwargs["min_hidden"] = CSAM_MIN_HIDDEN
    kwargs.update(defaults)
    kwargs.update(overrides)
    return CSAMUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs)


@_register("csam_unet", "the paper's model: residual U-Net with CSAM on the skips, 3x3 encoder [proposed]")
def csam_unet(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, width: int = 64, **kwargs: Any) -> CSAMUNet:
    """The paper's network (``paper`` preset of :py:class:`CSAMUNet`)."""
    return _csam_family(spatial_dims, in_channels, out_channels, width, {"residual": True, "attention": "skip"}, kwargs)


@_register("paper_literal", "csam_unet with the paper's literal 1x1 encoder convolutions")
def paper_literal(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, width: int = 64, **kwargs: Any) -> CSAMUNet:
    """The ``paper_literal`` preset of :py:class:`CSAMUNet` (1x1 encoder convs)."""
    defaults = {"residual": True, "attention": "skip", "encoder_kernel_size": 1}
    return _csam_family(spatial_dims, in_channels, out_channels, width, defaults, kwargs)


@_register("unet", "ablation: same skeleton, no residual, no attention [U-Net]")
def unet(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, width: int = 64, **kwargs: Any) -> CSAMUNet:
    """Plain U-Net: :py:class:`CSAMUNet` with ``residual=False, attention="none"``."""
    return _csam_family(spatial_dims, in_channels, out_channels, width, {"residual": False, "attention": "none"}, kwargs)


@_register("res_unet", "ablation: residual blocks, no attention [Res-Net]")
def res_unet(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, width: int = 64, **kwargs: Any) -> CSAMUNet:
    """Residual U-Net: :py:class:`CSAMUNet` with ``residual=True, attention="none"``."""
    return _csam_family(spatial_dims, in_channels, out_channels, width, {"residual": True, "attention": "none"}, kwargs)


@_register("att_unet", "ablation: CSAM on the skips, no residual")
def att_unet(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, width: int = 64, **kwargs: Any) -> CSAMUNet:
    """Attention-only U-Net: :py:class:`CSAMUNet` with ``residual=False, attention="skip"``."""
    return _csam_family(spatial_dims, in_channels, out_channels, width, {"residual": False, "attention": "skip"}, kwargs)


@_register("unetpp", "MONAI BasicUNetPlusPlus [U-Net++]")
def unetpp(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, width: int = 64, **kwargs: Any) -> nn.Module:
    """U-Net++ (MONAI :py:class:`~monai.networks.nets.BasicUNetPlusPlus`), returning one logits tensor.

    MONAI's implementation returns a list of outputs; :py:class:`_FirstOutput` keeps the
    final (fused) one so the network drops into trainers and inferers like the others.
    """
    kwargs.setdefault("features", _widths(width) + (int(width),))
    return _FirstOutput(BasicUNetPlusPlus(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs))


@_register("fr_unet", "FR-UNet, full-resolution network (Liu et al., IEEE JBHI 2022) [FR-UNet]")
def fr_unet(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, width: int = 32, **kwargs: Any) -> FRUNet:
    """FR-UNet (:py:class:`kneeseg.networks.FRUNet`); ``width`` is its base feature count (32 in its paper)."""
    kwargs.setdefault("features", int(width))
    return FRUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs)


@_register("monai_attention_unet", "MONAI AttentionUnet (additive attention gates, Oktay et al.)")
def monai_attention_unet(
    spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, width: int = 64, **kwargs: Any
) -> AttentionUnet:
    """MONAI :py:class:`~monai.networks.nets.AttentionUnet` with five stages of ``width * 2**i`` channels."""
    kwargs.setdefault("channels", _widths(width))
    kwargs.setdefault("strides", (2, 2, 2, 2))
    return AttentionUnet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs)


@_register("monai_unet", "MONAI UNet with residual units (strided convs, 2 units per stage)")
def monai_unet(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, width: int = 64, **kwargs: Any) -> UNet:
    """MONAI :py:class:`~monai.networks.nets.UNet` with ``num_res_units=2`` and batch norm."""
    kwargs.setdefault("channels", _widths(width))
    kwargs.setdefault("strides", (2, 2, 2, 2))
    kwargs.setdefault("num_res_units", 2)
    kwargs.setdefault("norm", "batch")
    return UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs)


@_register("basic_unet", "MONAI BasicUNet (two-conv stages, deconv up-sampling)")
def basic_unet(spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2, width: int = 64, **kwargs: Any) -> BasicUNet:
    """MONAI :py:class:`~monai.networks.nets.BasicUNet` with features ``(w, 2w, 4w, 8w, 16w, w)``."""
    kwargs.setdefault("features", _widths(width) + (int(width),))
    return BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs)


class _FirstOutput(nn.Module):
    """Wraps a network that returns a list of outputs and returns the first one."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(B, C_in, *spatial)``. Returns the wrapped network's first output."""
        return self.net(x)[0]


def list_networks() -> list[str]:
    """Names accepted by :py:func:`build_network`, in registry order."""
    return list(_REGISTRY)


def network_spec(name: str) -> NetworkSpec:
    """The registry entry of ``name``.

    Raises:
        KeyError: for an unknown name; the message lists the known ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown network {name!r}; known networks: {', '.join(_REGISTRY)}") from None


def build_network(name: str, **overrides: Any) -> nn.Module:
    """Build a registered network: ``build_network("csam_unet", width=16, out_channels=3)``.

    Args:
        name: one of :py:func:`list_networks`.
        overrides: keyword arguments for the builder (``spatial_dims``, ``in_channels``,
            ``out_channels``, ``width``, or any argument of the underlying network class).

    Raises:
        KeyError: for an unknown name.
    """
    return network_spec(name).builder(**overrides)

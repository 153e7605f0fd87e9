"""kneeseg's model zoo: the paper's CSAM U-Net, its blocks, and the comparison networks.

Build any of them by name with :py:func:`build_network`; :py:func:`list_networks` lists
the names. The blocks follow MONAI's conventions (``spatial_dims`` first, 2D and 3D).
"""

from kneeseg.networks.attention import (
    CSAM,
    AttentionConcat,
    ChannelAttention,
    Concat,
    SpatialAttention,
)
from kneeseg.networks.csam_unet import (
    ATTENTION_PLACEMENTS,
    CSAM_UNET_PRESETS,
    CSAMUNet,
    csam_unet_preset,
)
from kneeseg.networks.checkpoints import fold_checkpoints, load_weights
from kneeseg.networks.ensemble import SoftmaxEnsemble, load_fold_ensemble, mean_softmax, trained_network
from kneeseg.networks.fr_unet import FRUNet
from kneeseg.networks.registry import (
    NetworkSpec,
    build_network,
    list_networks,
    network_spec,
)
from kneeseg.networks.residual import ResidualConvBlock

__all__ = [
    "ATTENTION_PLACEMENTS",
    "CSAM",
    "CSAM_UNET_PRESETS",
    "AttentionConcat",
    "CSAMUNet",
    "ChannelAttention",
    "Concat",
    "FRUNet",
    "NetworkSpec",
    "ResidualConvBlock",
    "SoftmaxEnsemble",
    "SpatialAttention",
    "build_network",
    "csam_unet_preset",
    "fold_checkpoints",
    "list_networks",
    "load_fold_ensemble",
    "load_weights",
    "mean_softmax",
    "trained_network",
    "network_spec",
]

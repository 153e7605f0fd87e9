"""What Table 1 runs: the protocol (``table1_protocol.json`` beside this module), the run settings and the run folders.

The JSON holds the methods, the reference method, the bundle overrides every run gets, the
per-method memory layout, the datalist keys per data set and the ablation variants, each with a
note in its ``notes``. :class:`Table1Config` says what one invocation runs;
:func:`bundle_parser` is the bundle's training config as every run sees it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ABLATIONS",
    "ABLATION_VARIANTS",
    "CONVERGENCE_RULE",
    "EXTRA_PEERS",
    "METHOD_LAYOUT",
    "PAPER_METHODS",
    "PROTOCOL",
    "PROTOCOL_FILE",
    "REFERENCE",
    "SPLITS",
    "Table1Config",
    "bundle_parser",
    "effective_protocol",
    "run_dirs",
    "split_overrides",
    "training_parser",
]

#: the protocol as data (see its ``notes``)
PROTOCOL_FILE = Path(__file__).with_name("table1_protocol.json")
_SPEC: dict[str, Any] = json.loads(PROTOCOL_FILE.read_text(encoding="utf-8"))

#: The paper's Table 1 methods (U-Net, U-Net++, residual U-Net, FR-UNet, the proposed model).
PAPER_METHODS: list[str] = _SPEC["paper_methods"]
#: Ablations: attention without residuals; the paper's literal 1x1 encoder.
ABLATIONS: list[str] = _SPEC["ablations"]
#: MONAI's attention U-Net as an extra peer.
EXTRA_PEERS: list[str] = _SPEC["extra_peers"]
REFERENCE: str = _SPEC["reference"]
#: The bundle overrides of the protocol on top of the ``cpu`` preset (why: ``notes`` in the JSON).
PROTOCOL: dict[str, Any] = _SPEC["overrides"]
#: Memory layout only (identical arithmetic), per method.
METHOD_LAYOUT: dict[str, dict[str, Any]] = _SPEC["method_layout"]
#: What was tried to make csam_unet as good as it can be (seed 0; the protocol plus the override).
ABLATION_VARIANTS: dict[str, dict[str, Any]] = _SPEC["ablation_variants"]
#: The cross-validation's convergence rule (bundle overrides; why: ``notes`` in the JSON).
CONVERGENCE_RULE: dict[str, Any] = _SPEC["convergence_rule"]
#: data name -> (train, validation, test) datalist keys used by the protocol
SPLITS: dict[str, list[str]] = _SPEC["splits"]


@dataclass
class Table1Config:
    """What to run. ``overrides`` go to every run (e.g. ``max_epochs``, ``spatial_size``)."""

    out: Path
    methods: list[str] = field(default_factory=lambda: PAPER_METHODS + ABLATIONS + EXTRA_PEERS)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    preset: str = "cpu"
    data: str = "knee_acl"
    dataset_dir: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    #: JSON with the paper's own Table 1, shown beside ours for reference:
    #: ``{"source": "...", "methods": {"U-Net": {"loss_rate": .., "mae": .., "f1": ..}, ...}}``
    paper_table: Path | None = None


def run_dirs(out: Path, method: str, seed: int) -> dict[str, Path]:
    """The folders of one run: ``base`` (``run.json``), ``models``, ``train`` and ``eval``."""
    base = out / "runs" / method / f"seed{seed}"
    return {"base": base, "models": base / "models", "train": base / "train", "eval": base / "eval"}


def split_overrides(data: str) -> dict[str, str]:
    """The datalist keys of ``data``'s train, validation and test parts, as bundle overrides."""
    train, val, test = SPLITS.get(data, ("training", "validation", "test"))
    return {"train_list_key": train, "val_list_key": val, "test_list_key": test}


def bundle_parser(cfg: Table1Config) -> Any:
    """The bundle's training config as every run sees it (preset + data + overrides)."""
    return training_parser(cfg.preset, cfg.data, cfg.overrides, cfg.dataset_dir)


def training_parser(preset: str, data: str, overrides: Mapping[str, Any], dataset_dir: str | None = None) -> Any:
    """The bundle's training config (``train.json`` + preset + data config) with ``overrides``
    and, when given, ``dataset_dir`` set; also what a cross-validation run reads its datalist from."""
    from monai.bundle import ConfigParser

    from kneeseg.workflows import default_bundle_dir, workflow_config_files

    parser = ConfigParser()
    parser.read_config(workflow_config_files("train", default_bundle_dir(), preset, data))
    parser["bundle_root"] = str(default_bundle_dir())
    for k, v in overrides.items():
        parser[k] = v
    if dataset_dir:
        parser["dataset_dir"] = dataset_dir
    return parser


def effective_protocol(cfg: Table1Config) -> dict[str, Any]:
    """The effective bundle settings of the protocol (preset + data + overrides)."""
    parser = bundle_parser(cfg)
    keys = ["spatial_size", "width", "max_epochs", "learning_rate", "lr_drop_epoch", "batch_size", "dice_loss_weight", "val_interval"]
    return {k: parser.get(k) for k in keys}

"""kneeseg.metrics: hand-computed values, conventions, and the handlers inside a real MONAI evaluator."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from monai.losses import DiceCELoss

import kneeseg.handlers as KH
import kneeseg.metrics as KM


def _logits_from_ids(ids: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, 1, H, W) class ids -> (B, C, H, W) logits whose argmax is ``ids``."""
    return F.one_hot(ids[:, 0].long(), num_classes).permute(0, 3, 1, 2).float() * 4.0 - 2.0


def _mask(shape, *slices) -> torch.Tensor:
    m = torch.zeros((1, 1, *shape), dtype=torch.long)
    for s in slices:
        m[(0, 0, *s)] = 1
    return m


# ----------------------------------------------------------------------------- counts and scores
def test_counts_and_scores_hand_computed():
    # label: 5 pixels in row 0 (cols 0..4); prediction: cols 2..5 in row 0 -> TP 3, FP 1, FN 2
    y = _mask((4, 6), (0, slice(0, 5)))
    pred = _mask((4, 6), (0, slice(2, 6)))
    tp, fp, fn, tn = KM.segmentation_counts(pred, y, num_classes=2)
    assert (tp.item(), fp.item(), fn.item(), tn.item()) == (3, 1, 2, 18)
    assert KM.precision_from_counts(tp, fp, fn).item() == pytest.approx(3 / 4)
    assert KM.recall_from_counts(tp, fp, fn).item() == pytest.approx(3 / 5)
    assert KM.f1_from_counts(tp, fp, fn).item() == pytest.approx(2 / 3)  # 2*.75*.6/1.35
    assert KM.dice_from_counts(tp, fp, fn).item() == pytest.approx(6 / 9)
    assert KM.iou_from_counts(tp, fp, fn).item() == pytest.approx(3 / 6)

    # the same through the cumulative metric, from logits
    logits = _logits_from_ids(pred, 2)
    for name, want in {"f1": 2 / 3, "dice": 2 / 3, "iou": 0.5, "precision": 0.75, "recall": 0.6}.items():
        m = KM.OverlapMetric(name)
        m(logits, y)
        assert m.aggregate().item() == pytest.approx(want), name


def test_counts_multiclass_onehot_equals_class_ids():
    y = torch.tensor([[[[0, 1, 1], [2, 2, 0]]]])  # (1, 1, 2, 3)
    pred = torch.tensor([[[[0, 1, 2], [2, 0, 0]]]])
    tp, fp, fn, _ = KM.segmentation_counts(pred, y, num_classes=3)
    # class 1: TP 1 (0,1), FP 0, FN 1 (0,2); class 2: TP 1 (1,0), FP 1 (0,2), FN 1 (1,1)
    assert tp.tolist() == [[1, 1]] and fp.tolist() == [[0, 1]] and fn.tolist() == [[1, 1]]
    counts_onehot = KM.segmentation_counts(KM.to_onehot(pred, 3), KM.to_onehot(y, 3), 3)
    for a, b in zip((tp, fp, fn), counts_onehot):
        assert torch.equal(a, b)
    m = KM.OverlapMetric("dice")
    m(_logits_from_ids(pred, 3), KM.to_onehot(y, 3))
    assert m.aggregate().item() == pytest.approx((2 / 3 + 2 / 4) / 2)  # 2TP/(2TP+FP+FN) per class


def test_count_ratios_through_monai_equal_the_hand_formulas():
    """Precision, recall, Dice and IoU via MONAI's compute_confusion_matrix_metric (plus kneeseg's
    empty-mask values) equal the hand formulas bit for bit, dtype and shape included."""
    g = torch.Generator().manual_seed(0)
    tp, fp, fn = torch.randint(0, 4, (3, 500, 3), generator=g).double()
    tp[0, 0], fp[0, 0], fn[0, 0] = 50_000_000, 3_000_001, 123_457  # volume-sized counts

    def hand(num, den, if_zero):
        return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), if_zero)

    ones = torch.ones_like(tp)
    for got, want in ((KM.precision_from_counts(tp, fp, fn), hand(tp, tp + fp, (fn == 0).double())),
                      (KM.recall_from_counts(tp, fp, fn), hand(tp, tp + fn, (fp == 0).double())),
                      (KM.dice_from_counts(tp, fp, fn), hand(2 * tp, 2 * tp + fp + fn, ones)),
                      (KM.iou_from_counts(tp, fp, fn), hand(tp, tp + fp + fn, ones))):  # fmt: skip
        assert got.dtype == torch.float64 and torch.equal(got, want)
    for f in (KM.precision_from_counts, KM.recall_from_counts, KM.dice_from_counts, KM.iou_from_counts):
        assert f(0, 0, 0).shape == () and f(0, 0, 0).item() == 1.0 and f(3, 1, 2).shape == ()


def test_empty_label_and_prediction_conventions():
    z = _mask((5, 5))
    obj = _mask((5, 5), (slice(1, 3), slice(1, 3)))
    both_empty = KM.segmentation_counts(z, z, 2)[:3]
    only_pred = KM.segmentation_counts(obj, z, 2)[:3]
    only_label = KM.segmentation_counts(z, obj, 2)[:3]
    for f in (KM.f1_from_counts, KM.dice_from_counts, KM.iou_from_counts,
              KM.precision_from_counts, KM.recall_from_counts):
        assert f(*both_empty).item() == 1.0
        assert f(*only_pred).item() == 0.0
        assert f(*only_label).item() == 0.0
    assert KM.hausdorff_distance(z, z, 2).item() == 0.0
    assert math.isnan(KM.hausdorff_distance(obj, z, 2).item())
    assert math.isnan(KM.hausdorff_distance(z, obj, 2).item())

    # aggregation skips the NaN (counted) but keeps the 0 of "both empty": images give 4, NaN, 0
    line_y = _mask((12, 12), (slice(2, 9), 3))
    line_p = _mask((12, 12), (slice(2, 9), 7))
    hd = KM.HD95Metric()
    hd(_logits_from_ids(torch.cat([line_p, obj.new_zeros(1, 1, 12, 12), z.new_zeros(1, 1, 12, 12)]), 2),
       torch.cat([line_y, line_y, z.new_zeros(1, 1, 12, 12)]))
    assert hd.aggregate().item() == pytest.approx(2.0)
    assert hd.skipped() == 1 and hd.unit() == "pixel"


# ----------------------------------------------------------------------------- MAE
def test_mae_binary_and_multiclass_hand_computed():
    p_fg = torch.tensor([[0.9, 0.2], [0.4, 0.7]])
    probs = torch.stack([1 - p_fg, p_fg])[None]  # (1, 2, 2, 2)
    y = torch.tensor([[[[1, 0], [0, 1]]]])
    # |1-.9| + |0-.2| + |0-.4| + |1-.7| = .1 + .2 + .4 + .3 -> mean .25
    assert KM.mae_foreground(probs, KM.to_onehot(y, 2)).item() == pytest.approx(0.25)
    m = KM.MAEMetric(activation=None)
    m(probs, y)
    assert m.aggregate().item() == pytest.approx(0.25)
    m = KM.MAEMetric()  # logits whose softmax is probs
    m(torch.log(probs), y)
    assert m.aggregate().item() == pytest.approx(0.25, abs=1e-6)

    probs3 = torch.tensor([[0.2, 0.6], [0.5, 0.1], [0.3, 0.3]])[None, :, None, :]  # (1, 3, 1, 2)
    y3 = torch.tensor([[[[1, 2]]]])
    # class 1: (|1-.5| + |0-.1|)/2 = .3; class 2: (|0-.3| + |1-.3|)/2 = .5 -> .4
    assert KM.mae_per_class(probs3, KM.to_onehot(y3, 3)).tolist()[0] == pytest.approx([0.3, 0.5])
    assert KM.mae_foreground(probs3, KM.to_onehot(y3, 3)).item() == pytest.approx(0.4)


# ----------------------------------------------------------------------------- loss rate
def test_loss_rate_equals_torch_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, 8, 8, generator=g)
    labels = torch.randint(0, 3, (5, 1, 8, 8), generator=g)
    want = F.cross_entropy(logits, labels[:, 0]).item()
    m = KM.LossRateMetric()
    m(logits[:2], labels[:2])  # uneven batches: the mean is over samples, not batches
    m(logits[2:], labels[2:])
    assert m.aggregate().item() == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert KM.loss_rate(KM.cross_entropy_per_sample(logits, labels)) == pytest.approx(want, rel=1e-6)
    # the bundle's training loss with lambda_dice=0 is the same cross-entropy
    m = KM.LossRateMetric(DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.0, lambda_ce=1.0))
    m([x for x in logits], [x for x in labels])  # decollated lists
    assert m.aggregate().item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError):
        KM.loss_rate([])


# ----------------------------------------------------------------------------- HD95
def test_hd95_pixels_and_anisotropic_mm():
    # two parallel 7-pixel vertical lines 4 columns apart: every edge point is 4 px from the other line
    y = _mask((12, 12), (slice(2, 9), 3))
    p = _mask((12, 12), (slice(2, 9), 7))
    assert KM.hausdorff_distance(p, y, 2).item() == pytest.approx(4.0)
    # spacing (rows 0.5 mm, cols 2.0 mm): the 4-column offset is 8 mm
    assert KM.hausdorff_distance(p, y, 2, spacing=[0.5, 2.0]).item() == pytest.approx(8.0)
    # lines offset along rows: 4 rows x 0.5 mm = 2 mm
    yr = _mask((12, 12), (3, slice(2, 9)))
    pr = _mask((12, 12), (7, slice(2, 9)))
    assert KM.hausdorff_distance(pr, yr, 2, spacing=[0.5, 2.0]).item() == pytest.approx(2.0)

    # spacing from a MetaTensor affine, through the cumulative metric
    affine = torch.diag(torch.tensor([0.5, 2.0, 1.0, 1.0], dtype=torch.float64))
    y_meta = MetaTensor(y.float(), affine=affine)
    assert KM.spacing_from_meta(y_meta) == [[0.5, 2.0]]
    m = KM.HD95Metric()
    m(_logits_from_ids(p, 2), y_meta)
    assert m.aggregate().item() == pytest.approx(8.0) and m.unit() == "mm"
    m = KM.HD95Metric(spacing=(0.5, 2.0))
    m(_logits_from_ids(p, 2), y)
    assert m.aggregate().item() == pytest.approx(8.0)


# ----------------------------------------------------------------------------- aggregation
def test_per_image_mean_vs_pooled():
    big = _mask((10, 10), (slice(1, 9), slice(1, 9)))  # 64 px, predicted perfectly: Dice 1
    dot_y = _mask((10, 10), (0, 0))
    dot_p = _mask((10, 10), (9, 9))  # 1 px missed, 1 px false: Dice 0
    pred, y = torch.cat([big, dot_p]), torch.cat([big, dot_y])
    logits = _logits_from_ids(pred, 2)
    per_image = KM.OverlapMetric("dice", aggregation="image")
    pooled = KM.OverlapMetric("dice", aggregation="pooled")
    per_image(logits, y)
    pooled(logits, y)
    assert per_image.aggregate().item() == pytest.approx(0.5)
    assert pooled.aggregate().item() == pytest.approx(128 / 130)  # TP 64, FP 1, FN 1
    assert pooled.aggregate() > per_image.aggregate()  # large structures dominate the pooled score

    seg = KM.SegmentationMetrics(compute_hd95=False)
    seg(logits, y)
    s = seg.aggregate()
    assert s["per_image_mean"]["f1"] == pytest.approx(0.5)
    assert s["pooled"]["f1"] == pytest.approx(128 / 130)
    assert s["per_class"]["1"]["pooled"]["tp"] == 64


# ----------------------------------------------------------------------------- real engine
def _dataset(n=5, size=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    affine = torch.diag(torch.tensor([0.5, 2.0, 1.0, 1.0], dtype=torch.float64))
    items = []
    for i in range(n):
        y = torch.zeros(1, size, size)
        r, c = 2 + i % 3, 3 + i % 4
        y[0, r : r + 5, c : c + 4] = 1
        logits = torch.randn(2, size, size, generator=g) + torch.cat([1 - y, y]) * 2.5
        if i == 4:
            logits[1] = -5.0  # empty prediction: HD95 NaN for this case
        label = MetaTensor(y, affine=affine, meta={"filename_or_obj": f"/data/case{i}.nii.gz"})
        items.append({"image": logits, "label": label})
    return items


def test_handlers_in_real_supervised_evaluator(tmp_path):
    items = _dataset()
    loader = DataLoader(items, batch_size=2, shuffle=False, num_workers=0)  # 2 + 2 + 1: uneven batches
    ot = from_engine(["pred", "label"])
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    report = KH.MetricsReportHandler(tmp_path / "eval", loss_fn=None, method="identity", print_table=False)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=torch.nn.Identity(),  # the "image" already holds the logits
        key_val_metric={"val_f1": KH.F1Handler(num_classes=2, output_transform=ot)},
        additional_metrics={
            "val_dice": KH.DiceHandler(output_transform=ot),
            "val_iou": KH.metric_handler("iou", output_transform=ot),
            "val_precision": KH.PrecisionHandler(output_transform=ot),
            "val_recall": KH.RecallHandler(output_transform=ot),
            "val_f1_pooled": KH.F1Handler(aggregation="pooled", output_transform=ot),
            "val_mae": KH.MAEHandler(num_classes=2, output_transform=ot),
            "val_loss_rate": KH.LossRateHandler(output_transform=ot),
            "val_dicece": KH.LossRateHandler(loss_fn=dice_ce, output_transform=ot),
            "val_hd95": KH.HD95Handler(output_transform=ot),
        },
        val_handlers=[report],
    )
    evaluator.run()
    got = evaluator.state.metrics

    logits = torch.stack([it["image"] for it in items])
    labels = torch.stack([it["label"].as_tensor() for it in items])
    tp, fp, fn, _ = KM.segmentation_counts(KM.pred_to_class_ids(logits), labels, 2)
    want = {
        "val_f1": KM.f1_from_counts(tp, fp, fn).mean().item(),
        "val_dice": KM.dice_from_counts(tp, fp, fn).mean().item(),
        "val_iou": KM.iou_from_counts(tp, fp, fn).mean().item(),
        "val_precision": KM.precision_from_counts(tp, fp, fn).mean().item(),
        "val_recall": KM.recall_from_counts(tp, fp, fn).mean().item(),
        "val_f1_pooled": KM.f1_from_counts(tp.sum(), fp.sum(), fn.sum()).item(),
        "val_mae": KM.mae_foreground(torch.softmax(logits, 1), KM.to_onehot(labels, 2)).mean().item(),
        "val_loss_rate": F.cross_entropy(logits, labels[:, 0].long()).item(),
        "val_dicece": float(np.mean([dice_ce(logits[i : i + 1], labels[i : i + 1]).item() for i in range(5)])),
    }
    hd = KM.hausdorff_distance(KM.pred_to_class_ids(logits), labels, 2, spacing=[0.5, 2.0])
    assert torch.isnan(hd).sum() == 1
    want["val_hd95"] = torch.nanmean(hd).item()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    assert 0.0 < got["val_f1"] < 1.0

    # the report: CSV columns and rows, strict JSON summary agreeing with the handlers
    with open(tmp_path / "eval" / "metrics_per_case.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["case_id"] for r in rows] == [f"/data/case{i}.nii.gz" for i in range(5)]
    for col in ("case_id", "loss", "mae", "f1", "dice", "iou", "precision", "recall", "hd95", "hd95_unit",
                "tp_1", "fp_1", "fn_1", "tn_1", "f1_1", "hd95_1"):
        assert col in rows[0], col
    assert rows[0]["hd95_unit"] == "mm" and rows[4]["hd95"] == "nan"
    assert [int(r["tp_1"]) for r in rows] == tp[:, 0].long().tolist()
    text = (tmp_path / "eval" / "metrics_summary.json").read_text()
    assert "NaN" not in text
    summary = json.loads(text)
    assert summary["method"] == "identity" and summary["num_cases"] == 5
    assert summary["table_shows"] == "per_image_mean" and summary["hd95_unit"] == "mm"
    assert summary["hd95_skipped"] == 1 and summary["pooled"]["hd95"] is None
    for key, name in (("f1", "val_f1"), ("mae", "val_mae"), ("loss_rate", "val_loss_rate"), ("hd95", "val_hd95")):
        assert summary["per_image_mean"][key] == pytest.approx(got[name], rel=1e-5), key
    assert summary["pooled"]["f1"] == pytest.approx(got["val_f1_pooled"], rel=1e-6)
    assert evaluator.state.metrics_summary["num_cases"] == 5
    assert not [p for p in (tmp_path / "eval").iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- reports and config
def test_format_table1_and_atomic_files(tmp_path):
    a = {"num_cases": 3, "hd95_unit": "mm",
         "per_image_mean": {"loss_rate": 0.1234567, "mae": 0.02, "f1": 0.9, "dice": 0.9, "iou": 0.81,
                            "precision": 0.95, "recall": 0.86, "hd95": 3.14159},
         "pooled": {"loss_rate": 0.12, "mae": 0.02, "f1": 0.95, "dice": 0.95, "iou": 0.9,
                    "precision": 0.96, "recall": 0.94, "hd95": None}}
    b = {**a, "per_image_mean": {**a["per_image_mean"], "hd95": float("nan")}}
    table = KM.format_table1({"U-Net": b, "CSAM U-Net": a})
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("Method"))
    assert header.split() == ["Method", "Loss", "rate", "MAE", "F1", "Dice", "IoU", "Precision", "Recall",
                              "HD95", "(mm)"]
    assert "mean over images" in lines[0] and "n=3" in lines[0]
    row = next(line for line in lines if line.startswith("CSAM U-Net"))
    assert row.split()[2:] == ["0.1235", "0.0200", "0.9000", "0.9000", "0.8100", "0.9500", "0.8600", "3.14"]
    assert "pooled" in KM.format_table1({"m": a}, aggregation="pooled").splitlines()[0]

    path = KM.write_summary_json(b, tmp_path / "s.json")
    assert json.loads(path.read_text())["per_image_mean"]["hd95"] is None
    assert math.isnan(KM.read_summary_json(path)["per_image_mean"]["hd95"])
    KM.write_case_csv([{"case_id": "x", "f1": 0.5}, {"case_id": "y", "f1": float("nan"), "extra": 1}],
                      tmp_path / "c.csv")
    assert (tmp_path / "c.csv").read_text().splitlines() == ["case_id,f1,extra", "x,0.5,", "y,nan,1"]


def test_bundle_config_snippets_instantiate():
    from monai.bundle import ConfigParser

    parser = ConfigParser({
        "imports": ["$import monai", "$import kneeseg.handlers"],
        "loss": {"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True},
        "f1": {"_target_": "kneeseg.handlers.F1Handler", "num_classes": 2,
               "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"},
        "loss_rate": {"_target_": "kneeseg.handlers.LossRateHandler", "loss_fn": "@loss",
                      "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"},
        "report": {"_target_": "kneeseg.handlers.MetricsReportHandler", "output_dir": "/tmp/unused",
                   "loss_fn": "@loss", "method": "csam_unet"},
    })
    assert isinstance(parser.get_parsed_content("f1"), KH.F1Handler)
    assert isinstance(parser.get_parsed_content("loss_rate"), KH.LossRateHandler)
    assert isinstance(parser.get_parsed_content("report"), KH.MetricsReportHandler)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="one channel per class"):
        KM.pred_to_class_ids(torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 1\]"):
        KM.to_onehot(torch.full((1, 1, 2, 2), 3), 2)
    with pytest.raises(ValueError, match="num_classes=3"):
        KM.OverlapMetric(num_classes=3)(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="unknown metric"):
        KH.metric_handler("accuracy")


# ----------------------------------------------------------------------------- labels of the numbers
def test_hd95_unit_is_pixels_for_2d_files_and_mm_for_volumes(tmp_path, shared_data):
    """A PNG carries no spacing: its HD95 is in pixels, even though MONAI gives it an affine."""
    import nibabel as nib

    from kneeseg.transforms.loading import load_image

    case = sorted((shared_data / "knee-acl" / "cases").iterdir())[0]
    png = load_image("image")({"image": str(case / "img.png")})["image"][None]
    assert KM.spacing_from_meta(png) is None
    nii = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), np.float32), np.diag([0.5, 0.5, 2.0, 1.0])), nii)
    vol = load_image("image")({"image": str(nii)})["image"][None]
    assert KM.spacing_from_meta(vol) == [[0.5, 0.5, 2.0]]
    m = KM.SegmentationMetrics(num_classes=2)
    y = MetaTensor(_mask((8, 8), (slice(2, 5), slice(2, 5))).float(), meta=dict(png.meta))
    m(_logits_from_ids(_mask((8, 8), (slice(3, 6), slice(2, 5))), 2), y)
    summary = m.aggregate()
    assert summary["hd95_unit"] == "pixel"
    assert "HD95 (px)" in KM.format_table1({"m": summary})


def test_loss_rate_is_cross_entropy_and_the_training_loss_has_its_own_column():
    ids = _mask((6, 6), (slice(1, 4), slice(1, 4)))
    logits = _logits_from_ids(_mask((6, 6), (slice(2, 5), slice(1, 4))), 2) * 0.3
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    m = KM.SegmentationMetrics(num_classes=2, train_loss_fn=dice_ce)
    m(logits, ids)
    summary = m.aggregate()
    ce = float(F.cross_entropy(logits, ids[:, 0]))
    assert summary["per_image_mean"]["loss_rate"] == pytest.approx(ce, rel=1e-6)
    assert summary["per_image_mean"]["train_loss"] == pytest.approx(float(dice_ce(logits, ids)), rel=1e-5)
    assert m.rows()[0]["train_loss"] != pytest.approx(m.rows()[0]["loss"])
    table = KM.format_table1({"m": summary})
    assert "Loss rate" in table and "Train loss" in table


def test_structure_free_images_are_reported_apart():
    """An image without the structure and an empty prediction scores F1 = 1; the summary and the
    table also give the means over the images that hold the structure."""
    truth = torch.cat([_mask((6, 6), (slice(1, 4), slice(1, 4))), _mask((6, 6))])
    pred = torch.cat([_mask((6, 6), (slice(1, 4), slice(2, 5))), _mask((6, 6))])
    m = KM.SegmentationMetrics(num_classes=2)
    m(_logits_from_ids(pred, 2), truth)
    s = m.aggregate()
    f1_first = 2 * 6 / (9 + 9)
    assert s["per_image_mean"]["f1"] == pytest.approx((f1_first + 1.0) / 2)
    assert s["num_cases_with_structure"] == 1
    assert s["per_image_mean_with_structure"]["f1"] == pytest.approx(f1_first)
    table = KM.format_table1({"m": s})
    assert "m (all 2 images)" in table and "m (1 images with the structure)" in table

"""Segmentation metrics on hand-made label images with known answers; CLI stages."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fewlabel.io import write_ome_zarr
from fewlabel.metrics import matching, tables
from fewlabel.metrics import segmentation as M

# gt: 1 (6 vox), 2 (4 vox), 3 (2 vox);  pred: 5 (5 vox, all in gt 1), 7 (2 vox, in gt 2), 9 (2 vox)
GT = np.array(
    [[[1, 1, 1, 0, 2, 2], [1, 1, 1, 0, 2, 2], [0, 0, 0, 0, 0, 0], [3, 3, 0, 0, 0, 0]]],
    dtype=np.uint32,
)
PRED = np.array(
    [[[5, 5, 5, 0, 0, 7], [5, 5, 0, 0, 0, 7], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 9, 9]]],
    dtype=np.uint16,
)


def test_overlap_table_and_iou_matrix():
    ov = matching.overlap(GT, PRED)
    assert ov.gt_ids.tolist() == [1, 2, 3] and ov.pred_ids.tolist() == [5, 7, 9]
    assert ov.gt_sizes.tolist() == [6, 4, 2] and ov.pred_sizes.tolist() == [5, 2, 2]
    expected = np.array([[5 / 6, 0, 0], [0, 0.5, 0], [0, 0, 0]])
    np.testing.assert_allclose(ov.iou_matrix(), expected)
    np.testing.assert_allclose(ov.gt_centroids[0], [0, 0.5, 1.0])
    np.testing.assert_allclose(ov.pred_centroids[2], [0, 3, 4.5])
    assert (ov.fg_inter, ov.fg_union) == (7, 14)


def test_instance_scores_known_values():
    ov = matching.overlap(GT, PRED)
    s = matching.instance_scores(ov)
    # t = 0.5: pairs (1,5) IoU 5/6 and (2,7) IoU 0.5 → TP 2, FP 1, FN 1
    assert (s["tp_50"], s["fp_50"], s["fn_50"]) == (2, 1, 1)
    assert s["ap_50"] == pytest.approx(2 / 4)
    for tag in ("55", "60", "65", "70", "75", "80"):  # only (1,5) left
        assert s[f"ap_{tag}"] == pytest.approx(1 / 5)
    for tag in ("85", "90", "95"):
        assert s[f"ap_{tag}"] == 0.0
    assert s["ap_mean"] == pytest.approx((0.5 + 6 * 0.2) / 10)
    assert s["f1_50"] == pytest.approx(4 / 6)
    assert s["precision_50"] == pytest.approx(2 / 3) and s["recall_50"] == pytest.approx(2 / 3)


def test_seg_and_mucov_known_values():
    ov = matching.overlap(GT, PRED)
    # gt1: pred 5 covers 5/6 > 50% → 5/6; gt2: pred 7 covers exactly 50% → 0; gt3 → 0
    assert matching.seg_score(ov) == pytest.approx((5 / 6) / 3)
    assert matching.mucov(ov) == pytest.approx((5 / 6 + 0.5 + 0) / 3)


def test_evaluate_segmentation_row():
    row = M.evaluate_segmentation(GT, PRED, voxel_size=(1.0, 1.0, 1.0), centre_gate_um=1.0)
    assert row["n_gt"] == 3 and row["n_pred"] == 3 and row["count_error"] == 0
    assert row["fg_iou"] == pytest.approx(0.5)
    assert row["seg"] == pytest.approx(5 / 18)
    # centroids: gt1 (0, .5, 1) ↔ pred5 (0, .4, .8): 0.22 apart; gt2 (0,.5,4.5) ↔ pred7 (0,.5,5)
    assert (row["centre_tp"], row["centre_fp"], row["centre_fn"]) == (2, 1, 1)
    assert row["centre_rmse_um"] == pytest.approx(np.sqrt((0.1**2 + 0.2**2 + 0.5**2) / 2))
    assert list(row)[:4] == ["n_gt", "n_pred", "count_error", "fg_iou"]


def test_perfect_and_relabelled_prediction_scores_one():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (3, 10, 10)).astype(np.uint32)
    perm = np.array([0, 40, 7, 4_000_000_000, 3, 9], dtype=np.uint64)
    row = M.evaluate_segmentation(labels, perm[labels], voxel_size=(2.0, 0.5, 0.5))
    for key in ("fg_iou", "ap_mean", "f1_50", "seg", "mucov", "centre_f1"):
        assert row[key] == pytest.approx(1.0), key


def test_empty_images_conventions():
    empty = np.zeros((1, 4, 4), np.uint8)
    row = M.evaluate_segmentation(empty, empty, voxel_size=(1, 1, 1))
    assert row["ap_mean"] == 1.0 and row["f1_50"] == 1.0 and row["fg_iou"] == 1.0
    assert np.isnan(row["seg"]) and np.isnan(row["mucov"])
    one = empty.copy()
    one[0, 1, 1] = 1
    row = M.evaluate_segmentation(empty, one, voxel_size=(1, 1, 1))
    assert row["ap_mean"] == 0.0 and row["f1_50"] == 0.0 and row["centre_fp"] == 1


def test_iou_half_tie_matches_one_to_one():
    gt = np.array([[[1, 1]]], np.uint8)
    pred = np.array([[[4, 5]]], np.uint8)
    s = matching.instance_scores(matching.overlap(gt, pred), thresholds=(0.5,))
    assert (s["tp_50"], s["fp_50"], s["fn_50"]) == (1, 1, 0)


def test_hungarian_maximises_pairs_below_half():
    # IoU(A,X)=0.6, IoU(B,X)=0.4, IoU(A,Y)=0.4: greedy (A,X) gives 1 pair; optimum (A,Y),(B,X) = 2
    def inter(iou):  # sizes 10 and 10: iou = i / (20 − i)
        return 20 * iou / (1 + iou)

    ov = matching.Overlap(
        gt_ids=np.array([1, 2]),
        pred_ids=np.array([1, 2]),
        gt_sizes=np.array([10, 10]),
        pred_sizes=np.array([10, 10]),
        gt_centroids=np.zeros((2, 3)),
        pred_centroids=np.zeros((2, 3)),
        pair_gt=np.array([0, 1, 0]),
        pair_pred=np.array([0, 0, 1]),
        pair_inter=np.array([inter(0.6), inter(0.4), inter(0.4)]),
    )
    g, p, iou = matching.match_instances(ov, 0.3)
    assert g.tolist() == [0, 1] and p.tolist() == [1, 0]
    np.testing.assert_allclose(iou, [0.4, 0.4])
    g, p, _ = matching.match_instances(ov, 0.5)
    assert g.tolist() == [0] and p.tolist() == [0]


def test_overlap_slabs_equal_whole():
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 20, (7, 12, 12)).astype(np.uint32)
    pred = rng.integers(0, 25, (7, 12, 12)).astype(np.uint32)
    a, b = matching.overlap(gt, pred, slab=100), matching.overlap(gt, pred, slab=2)
    np.testing.assert_allclose(a.iou_matrix(), b.iou_matrix())
    np.testing.assert_allclose(a.gt_centroids, b.gt_centroids)
    assert a.gt_sizes.tolist() == b.gt_sizes.tolist()


def test_pcc_and_jaccard():
    assert M.pcc(np.array([1.0, 2, 3]), np.array([1.0, 3, 2])) == pytest.approx(0.5)
    x = np.arange(24, dtype=float).reshape(2, 3, 4)
    assert M.pcc(x, 2 * x + 1) == pytest.approx(1.0)
    assert M.pcc(x, -x) == pytest.approx(-1.0)
    assert np.isnan(M.pcc(x, np.ones_like(x)))
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(9, 8, 8)) * 100 + 1e4, rng.normal(size=(9, 8, 8))
    b = b + 0.01 * a
    assert M.pcc(a, b, slab=2) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-10)
    mask = a > 1e4
    assert M.pcc(a, b, mask, slab=4) == pytest.approx(
        np.corrcoef(a[mask], b[mask])[0, 1], abs=1e-10
    )
    assert matching.jaccard([[1, 1, 0]], [[0, 1, 1]]) == pytest.approx(1 / 3)
    assert matching.jaccard([[0, 0]], [[0, 0]]) == 1.0


def test_counting_errors():
    e = M.counting_errors([10, 20, 0], [12, 15, 3])
    assert e["mae"] == pytest.approx(10 / 3)
    assert e["median_ae"] == pytest.approx(3)
    assert e["mean_error"] == pytest.approx(0)
    assert e["mpe_percent"] == pytest.approx(100 * (0.2 - 0.25) / 2)


def test_auto_centre_gate_is_half_median_diameter():
    labels = np.zeros((1, 20, 20), np.uint16)
    labels[0, 2:6, 2:6] = 1  # area 16 px at 0.5 µm → 4 µm²
    row = M.evaluate_segmentation(labels, labels, voxel_size=(1.0, 0.5, 0.5))
    assert row["centre_gate_um"] == pytest.approx(0.5 * 2 * np.sqrt(4 / np.pi))


def _write_labels(path, data, voxel=(1.0, 1.0, 1.0)):
    write_ome_zarr(path, data, voxel, chunks=(1, 4, 6))


def test_cli_evaluate_and_aggregate(tmp_path):
    from fewlabel.cli import main

    _write_labels(tmp_path / "gt.ome.zarr", GT)
    _write_labels(tmp_path / "pred.ome.zarr", PRED.astype(np.uint32))
    fluo = np.arange(24, dtype=np.float32).reshape(1, 4, 6)
    write_ome_zarr(tmp_path / "pf.ome.zarr", fluo, (1, 1, 1), chunks=(1, 4, 6))
    write_ome_zarr(tmp_path / "tf.ome.zarr", 3 * fluo + 2, (1, 1, 1), chunks=(1, 4, 6))
    out_a = tmp_path / "a.tsv"
    rc = main(
        [
            "evaluate_segmentation",
            "--sample",
            "a",
            "--gt",
            str(tmp_path / "gt.ome.zarr"),
            "--pred",
            str(tmp_path / "pred.ome.zarr"),
            "--pred-fluo",
            str(tmp_path / "pf.ome.zarr"),
            "--target-fluo",
            str(tmp_path / "tf.ome.zarr"),
            "--output",
            str(out_a),
            "--params",
            json.dumps({"centre_gate_um": 1.0}),
        ]
    )
    assert rc == 0
    a = pd.read_csv(out_a, sep="\t")
    assert len(a) == 1 and a.loc[0, "sample"] == "a"
    assert a.loc[0, "ap_50"] == pytest.approx(0.5) and a.loc[0, "pcc"] == pytest.approx(1.0)
    assert a.loc[0, "seg"] == pytest.approx(5 / 18, rel=1e-5)
    out_b = tmp_path / "b.tsv"
    rc = main(
        [
            "evaluate_segmentation",
            "--sample",
            "b",
            "--gt",
            str(tmp_path / "gt.ome.zarr"),
            "--pred",
            str(tmp_path / "gt.ome.zarr"),
            "--output",
            str(out_b),
        ]
    )
    assert rc == 0
    summary = tmp_path / "summary.tsv"
    rc = main(
        ["aggregate_segmentation", "--inputs", str(out_a), str(out_b), "--output", str(summary)]
    )
    assert rc == 0
    table = pd.read_csv(summary, sep="\t").set_index("sample")
    assert list(table.index) == ["a", "b", "ALL", "MEAN"]
    assert table.loc["MEAN", "ap_50"] == pytest.approx((0.5 + 1.0) / 2)
    # pooled at 0.5: TP 2+3, FP 1+0, FN 1+0 → 5/7
    assert table.loc["ALL", "ap_50"] == pytest.approx(5 / 7)
    assert table.loc["MEAN", "count_mae"] == pytest.approx(0.0)
    assert np.isnan(table.loc["b", "pcc"])
    # errors: shape mismatch is a user error; nothing is written
    _write_labels(tmp_path / "small.ome.zarr", GT[:, :2])
    rc = main(
        [
            "evaluate_segmentation",
            "--sample",
            "c",
            "--gt",
            str(tmp_path / "gt.ome.zarr"),
            "--pred",
            str(tmp_path / "small.ome.zarr"),
            "--output",
            str(tmp_path / "c.tsv"),
        ]
    )
    assert rc == 2 and not (tmp_path / "c.tsv").exists()
    rc = main(
        [
            "evaluate_segmentation",
            "--sample",
            "c",
            "--gt",
            str(tmp_path / "gt.ome.zarr"),
            "--pred",
            str(tmp_path / "gt.ome.zarr"),
            "--params",
            '{"centre_gate_um": 0}',
            "--output",
            str(tmp_path / "c.tsv"),
            "--log",
            str(tmp_path / "c.log"),
        ]
    )
    assert rc == 2 and not (tmp_path / "c.tsv").exists()
    assert "config key 'evaluation.segmentation.centre_gate_um'" in (tmp_path / "c.log").read_text()
    rc = main(
        [
            "aggregate_segmentation",
            "--inputs",
            str(out_a),
            str(out_a),
            "--output",
            str(tmp_path / "dup.tsv"),
        ]
    )
    assert rc == 2


def test_pooled_row_has_iou_seg_mucov_from_per_sample_sums(tmp_path):
    """ALL: fg_iou = Σ intersection / Σ union, SEG/MUCov = mean over all GT objects pooled
    (not NaN); undefined values are written as 'n/a', not NaN."""
    a = M.evaluate_segmentation(GT, PRED, voxel_size=(1.0, 1.0, 1.0), centre_gate_um=1.0)
    b = M.evaluate_segmentation(GT, GT, voxel_size=(1.0, 1.0, 1.0), centre_gate_um=1.0)
    assert (a["fg_intersection"], a["fg_union"]) == (7, 14)
    assert a["seg_sum"] == pytest.approx(5 / 6) and b["seg_sum"] == pytest.approx(3.0)
    rows = [pd.DataFrame([{"sample": "a", **a}]), pd.DataFrame([{"sample": "b", **b}])]
    table = tables.aggregate_segmentation(rows).set_index("sample")
    pooled = table.loc["ALL"]
    assert pooled["fg_iou"] == pytest.approx((7 + 12) / (14 + 12))  # not the mean of 0.5 and 1
    assert pooled["seg"] == pytest.approx((5 / 6 + 3) / 6)
    assert pooled["mucov"] == pytest.approx((5 / 6 + 0.5 + 3) / 6)
    assert pooled["centre_rmse_um"] == pytest.approx(
        np.sqrt((a["centre_tp"] * a["centre_rmse_um"] ** 2) / (a["centre_tp"] + b["centre_tp"]))
    )
    # no GT object anywhere: pooled SEG is undefined and says so in the TSV
    empty = np.zeros_like(GT)
    c = M.evaluate_segmentation(empty, empty, voxel_size=(1.0, 1.0, 1.0), centre_gate_um=1.0)
    only_empty = tables.aggregate_segmentation([pd.DataFrame([{"sample": "c", **c}])])
    tables.write_metrics_tsv(only_empty, tmp_path / "s.tsv")
    lines = [line.split("\t") for line in (tmp_path / "s.tsv").read_text().splitlines()]
    header, pooled_line = lines[0], next(line for line in lines if line[0] == "ALL")
    assert pooled_line[header.index("seg")] == "n/a"
    assert pooled_line[header.index("fg_iou")] == "1"  # no foreground anywhere: agreement
    assert pooled_line[header.index("centre_gate_um")] == "n/a"
    assert "NaN" not in (tmp_path / "s.tsv").read_text()
    back = pd.read_csv(tmp_path / "s.tsv", sep="\t")
    assert pd.api.types.is_numeric_dtype(back["seg"])  # 'n/a' reads back as a missing number

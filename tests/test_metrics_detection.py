"""Detection metrics: Hungarian matching with a gate, empty cases, µm gates, aggregation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fewlabel.metrics.detection import (
    evaluate_sample,
    match_points,
    prf,
    sweep_thresholds,
)
from fewlabel.metrics.tables import aggregate_metrics


def _pts(*xs):
    return np.array([[0.0, 0.0, x] for x in xs])


def test_hungarian_beats_greedy():
    # greedy (closest pair first) would pair gt x=2 with pred x=1.1 (0.9) and then fail on x=0;
    # the optimal one-to-one matching pairs 0↔1.1 and 2↔3.2 (both within the gate of 1.5)
    res = match_points(_pts(0, 2), _pts(1.1, 3.2), max_distance=1.5)
    assert (res.tp, res.fp, res.fn) == (2, 0, 0)
    assert res.pairs[:, :2].tolist() == [[0, 0], [1, 1]]
    assert math.isclose(res.rmse, math.sqrt((1.1**2 + 1.2**2) / 2))
    assert res.f1 == 1.0


def test_minimum_total_distance_among_maximal_matchings():
    gt = _pts(0, 1)
    pred = _pts(0.1, 0.9)
    res = match_points(gt, pred, max_distance=2.0)
    assert res.pairs[:, :2].tolist() == [[0, 0], [1, 1]]
    np.testing.assert_allclose(res.pairs[:, 2], [0.1, 0.1])


def test_gate_excludes_far_pairs_and_counts():
    gt = _pts(0, 10, 20, 30)
    pred = _pts(0.5, 10.0, 23.5, 50, 51)
    res = match_points(gt, pred, max_distance=3.0)
    assert (res.tp, res.fp, res.fn) == (2, 3, 2)
    assert res.unmatched_gt.tolist() == [2, 3]
    assert res.unmatched_pred.tolist() == [2, 3, 4]
    assert math.isclose(res.precision, 2 / 5) and math.isclose(res.recall, 0.5)
    assert math.isclose(res.f1, 2 * 0.4 * 0.5 / 0.9)
    # a pair exactly at the gate counts, and coincident points (distance 0) match
    res = match_points(_pts(0, 5), _pts(3, 5), max_distance=3.0)
    assert res.tp == 2 and res.pairs[1, 2] == 0.0


def test_gate_in_um_vs_voxels():
    gt = np.array([[0.0, 0.0, 0.0]])
    pred = np.array([[2.0, 0.0, 0.0]])  # 2 voxels in z = 4 µm with a 2 µm z spacing
    assert match_points(gt, pred, max_distance=3.0).tp == 1
    res = match_points(gt, pred, max_distance=3.0, scale=(2.0, 0.5, 0.5))
    assert res.tp == 0 and res.fn == 1 and res.fp == 1
    res = match_points(gt, pred, max_distance=4.0, scale=(2.0, 0.5, 0.5))
    assert res.tp == 1 and math.isclose(res.rmse, 4.0)


def test_empty_cases():
    none = np.zeros((0, 3))
    both = match_points(none, none, max_distance=1.0)
    assert (both.precision, both.recall, both.f1) == (1.0, 1.0, 1.0) and math.isnan(both.rmse)
    no_pred = match_points(_pts(1, 2), none, max_distance=1.0)
    assert (no_pred.tp, no_pred.fn, no_pred.precision, no_pred.recall, no_pred.f1) == (
        0,
        2,
        1.0,
        0.0,
        0.0,
    )
    no_gt = match_points(none, _pts(1), max_distance=1.0)
    assert (no_gt.fp, no_gt.precision, no_gt.recall, no_gt.f1) == (1, 0.0, 1.0, 0.0)
    far = match_points(_pts(0), _pts(9), max_distance=1.0)
    assert far.f1 == 0.0 and far.pairs.shape == (0, 3)
    assert prf(0, 0, 0) == (1.0, 1.0, 1.0)


def test_large_random_sets_match_dense_hungarian():
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(3)
    gt = rng.uniform(0, 40, (300, 3))
    pred = np.concatenate([gt[:250] + rng.normal(0, 1.0, (250, 3)), rng.uniform(0, 40, (60, 3))])
    gate = 2.5
    res = match_points(gt, pred, max_distance=gate)
    dense = cdist(gt, pred)
    big = gate * 400 + 1
    cost = np.where(dense <= gate, dense, big)
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] < big
    assert res.tp == int(ok.sum())
    assert math.isclose(res.pairs[:, 2].sum(), dense[r[ok], c[ok]].sum(), rel_tol=1e-9)


def _write_points(path, pts):
    table = pd.DataFrame(np.asarray(pts, float).reshape(-1, 3), columns=["z", "y", "x"])
    table.to_csv(path, index=False)


def test_evaluate_sample_writes_tsv_and_matches(tmp_path):
    _write_points(tmp_path / "gt.csv", [[1, 1, 1], [5, 5, 5], [9, 9, 9]])
    _write_points(tmp_path / "pred.csv", [[1, 1, 2], [5, 6, 5], [20, 20, 20]])
    row = evaluate_sample(
        tmp_path / "gt.csv",
        tmp_path / "pred.csv",
        sample="s1",
        gate=1.5,
        gate_unit="um",
        voxel_size=(1.0, 1.0, 1.0),
        output=tmp_path / "m.tsv",
        matches=tmp_path / "matches.csv",
    )
    assert (row["tp"], row["fp"], row["fn"]) == (2, 1, 1)
    table = pd.read_csv(tmp_path / "m.tsv", sep="\t")
    assert table["sample"].tolist() == ["s1"] and table["gate_unit"].iloc[0] == "um"
    matches = pd.read_csv(tmp_path / "matches.csv")
    assert sorted(matches["status"]) == ["fn", "fp", "tp", "tp"]
    assert matches.loc[matches["status"] == "fn", "pred_index"].tolist() == [-1]
    assert matches.loc[matches["status"] == "fp", "gt_index"].tolist() == [-1]
    # the same gate in voxels with a coarse z spacing in µm loses nothing here (shifts are in y/x)
    row_um = evaluate_sample(
        tmp_path / "gt.csv",
        tmp_path / "pred.csv",
        sample="s1",
        gate=0.9,
        gate_unit="um",
        voxel_size=(3.0, 0.5, 0.5),
    )
    assert row_um["tp"] == 2 and math.isclose(row_um["rmse"], 0.5)


def test_evaluate_sample_empty_prediction_file(tmp_path):
    _write_points(tmp_path / "gt.csv", [[1, 1, 1]])
    (tmp_path / "pred.csv").write_text("z,y,x,score\n")
    row = evaluate_sample(tmp_path / "gt.csv", tmp_path / "pred.csv", sample="s", gate=2.0)
    assert (row["n_pred"], row["tp"], row["fn"], row["f1"]) == (0, 0, 1, 0.0)


def test_aggregate_pooled_and_macro_by_hand(tmp_path):
    rows = [
        {
            "sample": "a",
            "n_gt": 10,
            "n_pred": 8,
            "tp": 6,
            "fp": 2,
            "fn": 4,
            "precision": 0.75,
            "recall": 0.6,
            "f1": 2 * 0.75 * 0.6 / 1.35,
            "rmse": 1.0,
            "gate": 3.0,
            "gate_unit": "voxel",
        },
        {
            "sample": "b",
            "n_gt": 5,
            "n_pred": 7,
            "tp": 4,
            "fp": 3,
            "fn": 1,
            "precision": 4 / 7,
            "recall": 0.8,
            "f1": 2 * (4 / 7) * 0.8 / (4 / 7 + 0.8),
            "rmse": 2.0,
            "gate": 3.0,
            "gate_unit": "voxel",
        },
    ]
    paths = []
    for row in rows:
        path = tmp_path / f"{row['sample']}.tsv"
        pd.DataFrame([row]).to_csv(path, sep="\t", index=False)
        paths.append(path)
    out = aggregate_metrics(paths).set_index("sample")
    pooled = out.loc["ALL"]
    assert (pooled["tp"], pooled["fp"], pooled["fn"], pooled["n_gt"]) == (10, 5, 5, 15)
    assert math.isclose(pooled["precision"], 10 / 15) and math.isclose(pooled["recall"], 10 / 15)
    assert math.isclose(pooled["rmse"], math.sqrt((6 * 1.0 + 4 * 4.0) / 10))
    macro = out.loc["MEAN"]
    assert math.isclose(macro["f1"], (rows[0]["f1"] + rows[1]["f1"]) / 2)
    assert math.isclose(macro["rmse"], 1.5)
    assert list(out.index) == ["a", "b", "ALL", "MEAN"]


def test_partially_annotated_test_volume_scores_precision_inside_its_region(tmp_path):
    """Clicks complete only in the left half (x < 10): every click counts for recall, a
    prediction with no click counts as false only inside that region; the matches CSV calls
    the others unscored, and the pooled row takes precision from the scored predictions."""
    from fewlabel.cli import main

    _write_points(tmp_path / "gt.csv", [[1, 1, 1], [1, 5, 5], [1, 5, 15], [1, 9, 15]])
    # 2 hits on the left, 1 false on the left, 1 hit and 2 unclicked spots on the right
    pred = [[1, 1, 1], [1, 5, 6], [1, 9, 2], [1, 5, 15], [1, 2, 17], [1, 12, 12]]
    _write_points(tmp_path / "pred.csv", pred)
    region = np.zeros((3, 20, 20), dtype=bool)
    region[:, :, :10] = True
    row = evaluate_sample(
        tmp_path / "gt.csv", tmp_path / "pred.csv", sample="s", gate=1.5,
        output=tmp_path / "s.tsv", matches=tmp_path / "m.csv", region=region,
    )  # fmt: skip
    assert (row["tp"], row["fn"], row["fp"]) == (3, 1, 1)
    assert (row["pred_scored"], row["tp_scored"], row["scored_in"]) == (3, 2, "annotated_region")
    assert math.isclose(row["precision"], 2 / 3) and math.isclose(row["recall"], 3 / 4)
    status = pd.read_csv(tmp_path / "m.csv")["status"].value_counts().to_dict()
    assert status == {"tp": 3, "fn": 1, "fp": 1, "unscored": 2}
    full = evaluate_sample(tmp_path / "gt.csv", tmp_path / "pred.csv", sample="f", gate=1.5)
    assert (full["fp"], full["pred_scored"], full["scored_in"]) == (3, 6, "volume")
    assert math.isclose(full["precision"], 3 / 6)
    evaluate_sample(
        tmp_path / "gt.csv", tmp_path / "pred.csv", sample="f", gate=1.5, output=tmp_path / "f.tsv"
    )
    pooled = aggregate_metrics([tmp_path / "s.tsv", tmp_path / "f.tsv"]).set_index("sample")
    pooled = pooled.loc["ALL"]
    assert math.isclose(pooled["precision"], (2 + 3) / (3 + 6))
    assert math.isclose(pooled["recall"], 6 / 8) and pooled["scored_in"] == "mixed"
    # the stage reads a box CSV on the ingested volume's grid
    from fewlabel.io import write_ome_zarr

    write_ome_zarr(
        tmp_path / "v.ome.zarr",
        np.zeros((3, 20, 20), np.uint16),
        (1.0, 1.0, 1.0),
        chunks=(3, 20, 20),
    )
    (tmp_path / "box.csv").write_text("z0,y0,x0,z1,y1,x1\n0,0,0,3,20,10\n")
    args = ["evaluate_detection", "--sample", "s", "--gt", str(tmp_path / "gt.csv"), "--pred",
            str(tmp_path / "pred.csv"), "--volume", str(tmp_path / "v.ome.zarr"), "--params",
            '{"gate": 1.5, "gate_unit": "voxel"}', "--output", str(tmp_path / "cli.tsv"),
            f"--annotated-region={tmp_path / 'box.csv'}"]  # fmt: skip
    assert main(args) == 0
    cli = pd.read_csv(tmp_path / "cli.tsv", sep="\t").iloc[0]
    assert (cli["fp"], cli["pred_scored"], cli["tp_scored"]) == (1, 3, 2)


def test_sweep_thresholds_picks_the_separating_score():
    gt = _pts(0, 10, 20)
    preds = pd.DataFrame(
        {"z": 0.0, "y": 0.0, "x": [0.2, 10.1, 19.8, 5.0, 15.0], "score": [0.9, 0.8, 0.7, 0.3, 0.2]}
    )
    best, table = sweep_thresholds([preds], [gt], gate=1.0)
    assert 0.3 <= best < 0.7
    assert table["f1"].max() == 1.0


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_invalid_gate(bad):
    with pytest.raises(ValueError):
        match_points(_pts(0), _pts(0), max_distance=bad)


def test_threshold_ties_within_one_detection_go_to_the_higher_precision() -> None:
    from fewlabel.metrics.thresholds import choose_threshold_row

    # a validation sweep whose F1 is flat from 0.45 to 0.6 (80 points; P rises, R falls)
    rows = [  # threshold, true detections, detections, matched points
        (0.40, 73, 102, 73),
        (0.45, 72, 87, 72),
        (0.50, 70, 83, 70),
        (0.55, 66, 75, 66),
        (0.60, 65, 71, 65),
        (0.65, 60, 65, 60),
    ]
    table = pd.DataFrame(rows, columns=["threshold", "tp", "det", "matched"])
    table["precision"] = table["tp"] / table["det"]
    table["recall"] = table["matched"] / 80
    p, r = table["precision"], table["recall"]
    table["f1"] = 2 * p * r / (p + r)
    n_points = pd.Series([80] * len(table))
    best = int(table["f1"].idxmax())
    assert table["threshold"][best] == 0.45
    row = choose_threshold_row(table, table["tp"], table["det"], table["matched"], n_points)
    # 0.6 is within one detection of the best F1 and has the highest precision of the ties;
    # 0.65 is further than one detection below
    assert table["f1"][best] - table["f1"][4] < table["f1"][best] - table["f1"][5]
    assert table["threshold"][row] == 0.60
    # equal precision everywhere: nothing to gain, the best F1 stays (no drift upwards)
    flat = table.assign(tp=table["det"], precision=1.0)
    flat["f1"] = 2 * flat["recall"] / (1 + flat["recall"])
    row = choose_threshold_row(flat, flat["tp"], flat["det"], flat["matched"], n_points)
    assert row == int(flat["f1"].idxmax()) == 0
    # rows with equal counts (an exact plateau): the middle one, as before the tie rule
    same = flat.assign(det=60, tp=60, matched=60, recall=0.75, f1=2 * 0.75 / 1.75)
    row = choose_threshold_row(same, same["tp"], same["det"], same["matched"], n_points)
    assert row == 2

"""The HTML run report: sections, embedded PNGs, self-containment, chunked projections, CLI."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fewlabel.errors import ConfigError, InputDataError
from fewlabel.io import write_ome_zarr
from fewlabel.report import (
    ReportInputs,
    build_report,
    max_projection,
    pooling_factors,
    read_matches,
)

IMG_RE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = Path("/usr/bin/chromium")


# --------------------------------------------------------------------------- fixtures
def _spots(shape, centres, rng, sigma=1.5):
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    image = rng.normal(100, 5, shape).astype(np.float32)
    for z, y, x in centres:
        image += 800 * np.exp(-((zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    return np.clip(image, 0, 65535).astype(np.uint16)


def _write_csv(path: Path, points, score: bool = False) -> Path:
    table = pd.DataFrame(np.asarray(points, float).reshape(-1, 3), columns=["z", "y", "x"])
    if score:
        table["score"] = np.linspace(0.9, 0.5, len(table))
    table.to_csv(path, index=False)
    return path


def _matches_csv(path: Path, gt, pred, pairs) -> Path:
    """A matches CSV in the layout of fewlabel.metrics.detection.evaluate_sample."""
    gt, pred = np.asarray(gt, float), np.asarray(pred, float)
    rows = []
    nan3 = [np.nan] * 3
    for g, p in pairs:
        rows.append(["tp", g, p, float(np.linalg.norm(gt[g] - pred[p])), *gt[g], *pred[p]])
    for g in sorted(set(range(len(gt))) - {g for g, _ in pairs}):
        rows.append(["fn", g, -1, np.nan, *gt[g], *nan3])
    for p in sorted(set(range(len(pred))) - {p for _, p in pairs}):
        rows.append(["fp", -1, p, np.nan, *nan3, *pred[p]])
    pd.DataFrame(
        rows,
        columns=[
            "status",
            "gt_index",
            "pred_index",
            "distance",
            "gt_z",
            "gt_y",
            "gt_x",
            "pred_z",
            "pred_y",
            "pred_x",
        ],
    ).to_csv(path, index=False)
    return path


@pytest.fixture
def run_dir(tmp_path: Path, rng: np.random.Generator) -> dict:
    """A tiny but complete set of report inputs; returns the ReportInputs dict."""
    # detection sample 1: 3D with GT, predictions, matches
    gt = [[2, 20, 30], [4, 60, 40], [5, 80, 100], [3, 30, 90], [6, 70, 15]]
    pred = [[2, 21, 30], [4, 60, 41], [5, 79, 100], [3, 30, 91], [1, 10, 120]]
    pairs = [(0, 0), (1, 1), (2, 2), (3, 3)]
    image = _spots((8, 96, 128), gt, rng)
    write_ome_zarr(tmp_path / "spots.ome.zarr", image, (0.5, 0.2, 0.2), chunks=(4, 32, 32))
    _write_csv(tmp_path / "gt.csv", gt)
    _write_csv(tmp_path / "pred.csv", pred, score=True)
    _matches_csv(tmp_path / "matches.csv", gt, pred, pairs)
    # detection sample 2: 2D, predictions only
    flat = _spots((1, 64, 80), [[0, 20, 20], [0, 40, 60]], rng)
    write_ome_zarr(tmp_path / "flat.ome.zarr", flat, (1.0, 0.3, 0.3), chunks=(1, 32, 32))
    _write_csv(tmp_path / "flat_pred.csv", [[0, 20, 20], [0, 40, 60]], score=True)
    pd.DataFrame(
        [
            {
                "sample": "spots",
                "n_gt": 5,
                "n_pred": 5,
                "tp": 4,
                "fp": 1,
                "fn": 1,
                "precision": 0.8,
                "recall": 0.8,
                "f1": 0.8,
                "rmse": 1.0,
                "gate": 3.0,
                "gate_unit": "voxel",
            },
            {
                "sample": "ALL",
                "n_gt": 5,
                "n_pred": 5,
                "tp": 4,
                "fp": 1,
                "fn": 1,
                "precision": 0.8,
                "recall": 0.8,
                "f1": 0.8,
                "rmse": 1.0,
                "gate": 3.0,
                "gate_unit": "voxel",
            },
        ]
    ).to_csv(tmp_path / "detection.tsv", sep="\t", index=False)
    # model folders
    det_model = tmp_path / "models" / "detector"
    det_model.mkdir(parents=True)
    pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [1.0, 0.5, 0.3],
            "val_loss": [1.1, 0.7, 0.6],
            "val_f1": [0.2, 0.6, 0.8],
        }
    ).to_csv(det_model / "curve.tsv", sep="\t", index=False)
    (det_model / "thresholds.json").write_text(
        json.dumps(
            {
                "detection_threshold": 0.4,
                "val_f1": 0.8,
                "f1_curve": [
                    {"threshold": t, "f1": f, "precision": p, "recall": r}
                    for t, f, p, r in [
                        (0.1, 0.5, 0.4, 0.9),
                        (0.4, 0.8, 0.8, 0.8),
                        (0.7, 0.6, 0.9, 0.45),
                    ]
                ],
            }
        )
    )
    (det_model / "training.json").write_text(json.dumps({"epochs": 3, "seconds": 12.5}))
    isl_model = tmp_path / "models" / "isl"
    isl_model.mkdir()
    pd.DataFrame({"epoch": [1, 2], "train_loss": [0.4, 0.2], "val_pcc": [0.5, 0.7]}).to_csv(
        isl_model / "curve.tsv", sep="\t", index=False
    )
    seg_model = tmp_path / "models" / "segmenter"
    seg_model.mkdir()
    pd.DataFrame({"epoch": [1, 2], "train_loss": [0.9, 0.6], "val_loss": [1.0, 0.8]}).to_csv(
        seg_model / "curve.tsv", sep="\t", index=False
    )
    # segmentation / ISL sample
    labels = np.zeros((6, 64, 64), np.uint32)
    labels[1:5, 8:24, 8:24] = 1
    labels[1:5, 30:50, 34:56] = 2
    predicted = np.roll(labels, 2, axis=2)
    fluo = (labels > 0).astype(np.float32) * 50 + rng.normal(0, 3, labels.shape).astype(np.float32)
    labelfree = rng.normal(10, 2, labels.shape).astype(np.float32) + (labels > 0) * 4
    for name, data in (
        ("nuclei", labelfree),
        ("nuclei_gt", labels),
        ("nuclei_pred", predicted),
        ("nuclei_fluo", fluo),
        ("nuclei_pfluo", fluo * 0.9 + 1),
    ):
        write_ome_zarr(tmp_path / f"{name}.ome.zarr", data, (0.5, 0.25, 0.25), chunks=(3, 32, 32))
    pd.DataFrame(
        [{"sample": "nuclei", "ap_50_95": 0.61, "seg": 0.7, "mucov": 0.72, "pcc": 0.9312}]
    ).to_csv(tmp_path / "nuclei_metrics.tsv", sep="\t", index=False)
    pd.DataFrame(
        [
            {"sample": "nuclei", "ap_50_95": 0.61, "seg": 0.7, "seg_sum": 2.1, "pcc": 0.9312},
            {"sample": "ALL", "ap_50_95": 0.61, "seg": 0.7, "seg_sum": 2.1, "pcc": None},
        ]
    ).to_csv(tmp_path / "segmentation.tsv", sep="\t", index=False, na_rep="n/a")
    # ROI (mask records its source image, as segment_roi writes it)
    roi_dir = tmp_path / "roi" / "spots"
    roi_dir.mkdir(parents=True)
    mask = np.zeros((8, 96, 128), np.uint8)
    mask[:, 10:90, 5:120] = 1
    write_ome_zarr(
        roi_dir / "roi.ome.zarr",
        mask,
        (0.5, 0.2, 0.2),
        chunks=(4, 32, 32),
        extra_attrs={"sample": "spots", "kind": "roi", "source": str(tmp_path / "spots.ome.zarr")},
    )
    (roi_dir / "roi.json").write_text(
        json.dumps(
            {
                "sample": "spots",
                "roi_fraction": 0.7,
                "pi": 0.0012,
                "min_batch_size": 834,
                "warnings": ["class prior pi=0.0012 < 0.01: a mini-batch needs >= 834 windows"],
            }
        )
    )
    # header and provenance
    (tmp_path / "samples.tsv").write_text(
        "sample\timage\tchannel\tvoxel_size\tsplit\ttask\tpoints\tlabels\ttarget\n"
        "spots\tspots.tif\t\t0.5,0.2,0.2\ttest\tdetect\tgt.csv\t\t\n"
        "flat\tflat.tif\t\t1,0.3,0.3\tpredict\tdetect\t\t\t\n"
        "nuclei\tn.tif\t\t0.5,0.25,0.25\ttest\tsegment\tn.csv\tn_labels.tif\tn_fluo.tif\n"
    )
    pd.DataFrame(
        [
            {
                "sample": "spots",
                "split": "test",
                "shape_zyx": "8x96x128",
                "voxel_size_um": "0.5,0.2,0.2",
                "dtype": "uint16",
            }
        ]
    ).to_csv(tmp_path / "summary.tsv", sep="\t", index=False)
    (tmp_path / "provenance.json").write_text(
        json.dumps(
            {
                "created": "2025-01-02T03:04:05+00:00",
                "git_commit": "abc123def456",
                "versions": {"python": "3.11.9", "numpy": "2.1.0", "torch": "not in this env"},
                "config": {"detection": {"method": "density"}},
                "inputs": {"spots.tif": "f" * 64},
                "models": {
                    "detector": {
                        "stage": "train_detector",
                        "versions": {"python": "3.11.9", "torch": "2.13.0+cu128"},
                    }
                },
            }
        )
    )
    return {
        "title": "Test run <b>",
        "config": {"detection": {"method": "density", "gate": 3}, "seed": 0},
        "sample_sheet": str(tmp_path / "samples.tsv"),
        "summary_tsv": str(tmp_path / "summary.tsv"),
        "provenance_json": str(tmp_path / "provenance.json"),
        "roi_jsons": [str(roi_dir / "roi.json")],
        "roi_masks": {"spots": str(roi_dir / "roi.ome.zarr")},
        "detection_summary_tsv": str(tmp_path / "detection.tsv"),
        "detection_model_dir": str(det_model),
        "detection_samples": [
            {
                "sample": "spots",
                "image": str(tmp_path / "spots.ome.zarr"),
                "gt": str(tmp_path / "gt.csv"),
                "pred": str(tmp_path / "pred.csv"),
                "matches": str(tmp_path / "matches.csv"),
            },
            {
                "sample": "flat",
                "image": str(tmp_path / "flat.ome.zarr"),
                "gt": None,
                "pred": str(tmp_path / "flat_pred.csv"),
                "matches": None,
            },
        ],
        "isl_model_dir": str(isl_model),
        "segmenter_model_dir": str(seg_model),
        "segmentation_summary_tsv": str(tmp_path / "segmentation.tsv"),
        "segmentation_samples": [
            {
                "sample": "nuclei",
                "image": str(tmp_path / "nuclei.ome.zarr"),
                "gt_labels": str(tmp_path / "nuclei_gt.ome.zarr"),
                "pred_labels": str(tmp_path / "nuclei_pred.ome.zarr"),
                "target": str(tmp_path / "nuclei_fluo.ome.zarr"),
                "pred_fluorescence": str(tmp_path / "nuclei_pfluo.ome.zarr"),
                "metrics_tsv": str(tmp_path / "nuclei_metrics.tsv"),
            }
        ],
    }


def _decode_images(html: str) -> list[np.ndarray]:
    import matplotlib.image as mpimg

    images = []
    for payload in IMG_RE.findall(html):
        raw = base64.b64decode(payload, validate=True)
        assert raw[:8] == PNG_SIGNATURE
        images.append(mpimg.imread(io.BytesIO(raw), format="png"))
    return images


def _external_refs(html: str) -> list[str]:
    """src/href/url() values that point outside the file (anything but data: and #anchors)."""
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)["\']', html, flags=re.I)
    refs += re.findall(r"url\(\s*['\"]?([^)'\"]*)", html, flags=re.I)
    bad = [r for r in refs if not (r.startswith("data:") or r.startswith("#"))]
    bad += re.findall(r"<(?:script|link|iframe)\b[^>]*>", html, flags=re.I)
    return bad


# --------------------------------------------------------------------------- report
def test_full_report_has_every_section_valid_pngs_and_no_external_refs(run_dir, tmp_path):
    out = tmp_path / "out" / "report.html"

    build_report(out, inputs=ReportInputs.from_dict(run_dir))

    html = out.read_text(encoding="utf-8")
    for section in ("samples", "detection", "segmentation", "roi", "provenance", "definitions"):
        assert f'<section id="{section}">' in html
    images = _decode_images(html)
    # detection: curve + F1 sweep + spots z/y-MIP + flat z-MIP (2D: no side view) = 5
    # segmentation: 2 curves + ISL panel + outline panel = 4; ROI: 1
    assert len(images) == 10 == html.count("<img ")
    assert all(img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50 for img in images)
    assert all(float(img[..., :3].std()) > 0.01 for img in images)  # not blank
    assert _external_refs(html) == []
    assert not list(out.parent.glob(".*tmp*"))  # atomic write left nothing behind
    # content checks
    assert "Test run &lt;b&gt;" in html  # title escaped
    assert re.search(r'<tr class="pooled"><td>ALL</td>', html)  # pooled detection row marked
    # segmentation: the pooled PCC is undefined and says so; pooling sums are not shown
    assert re.search(r"<td>ALL</td><td>0\.61</td><td>0\.7</td><td>n/a</td>", html)
    assert "seg_sum" not in html and "SEG and MUCov averaged over all ground-truth" in html
    assert "0.9312" in html  # PCC of the ISL sample
    assert "8x96x128" in html and "points" in html  # samples table (summary + sheet)
    assert "<td>1,0.3,0.3</td>" in html  # voxel size from the sheet where the summary lacks it
    assert "method: density" in html  # configuration as YAML
    assert "abc123def456" in html and "f" * 64 in html  # provenance
    # versions: one column per environment (the run record's, each model's training job's)
    assert "<th>detector (train_detector)</th>" in html and "2.13.0+cu128" in html
    assert "Each column is one environment" in html
    assert "834" in html and "class prior pi=0.0012" in html  # ROI table incl. warnings
    assert "TP 4" in html and "FP 1" in html and "FN 1" in html  # match counts of 'spots'
    assert "detection_threshold" in html
    assert "Hungarian" in html and "MUCov" in html and "SEG" in html
    assert out.stat().st_size < 3_000_000


def test_provenance_versions_table_has_a_column_per_environment():
    from fewlabel.report.provenance import _provenance_section

    section = _provenance_section(
        {
            "versions": {"python": "3.11.9", "torch": "not in this rule's environment"},
            "models": {
                "segmenter": {"stage": "train_segmenter", "versions": {"torch": "2.13.0"}},
                "isl": {"stage": "pretrain_isl", "versions": "not recorded in training.json"},
            },
        }
    )
    table = section["versions"]
    assert table["columns"] == [
        "package",
        "run record (summarize_run)",
        "segmenter (train_segmenter)",
        "isl (pretrain_isl)",
    ]
    rows = {r["cells"][0]: r["cells"][1:] for r in table["rows"]}
    assert rows["torch"] == [
        "not in this rule's environment",
        "2.13.0",
        "not recorded in training.json",
    ]
    assert rows["python"][1] == "–" and section["versions_note"]
    # an old record without models keeps the single column and no note
    old = _provenance_section({"versions": {"python": "3.11.9"}})
    assert old["versions"]["columns"] == ["package", "run record (summarize_run)"]
    assert old["versions_note"] is None


def test_sections_are_omitted_without_inputs(run_dir, tmp_path):
    out = tmp_path / "report.html"

    build_report(
        out,
        inputs=ReportInputs.from_dict(
            {"title": "only metrics", "detection_summary_tsv": run_dir["detection_summary_tsv"]}
        ),
    )

    html = out.read_text()
    assert '<section id="detection">' in html
    for section in ("samples", "segmentation", "roi", "provenance"):
        assert f'<section id="{section}">' not in html
    assert "<img " not in html
    assert '<section id="definitions">' in html


def test_model_folder_without_curve_gives_no_image(run_dir, tmp_path):
    folder = Path(run_dir["detection_model_dir"])
    (folder / "curve.tsv").unlink()
    thresholds = json.loads((folder / "thresholds.json").read_text())
    thresholds["f1_curve"] = {"threshold": [0.2, 0.5], "f1": [0.3, 0.6]}  # dict-of-lists layout
    (folder / "thresholds.json").write_text(json.dumps(thresholds))
    out = tmp_path / "report.html"

    build_report(out, inputs=ReportInputs.from_dict({"detection_model_dir": str(folder)}))

    assert len(_decode_images(out.read_text())) == 1  # the F1 sweep only


def test_ensemble_folder_shows_its_composition_and_every_member_curve(run_dir, tmp_path):
    folder = Path(run_dir["detection_model_dir"])
    out = tmp_path / "report.html"
    inputs = ReportInputs.from_dict({"detection_model_dir": str(folder)})
    build_report(out, inputs=inputs)
    plain = out.read_text()
    assert "predicts with" not in plain and "ensemble members" not in plain

    curve = pd.read_csv(folder / "curve.tsv", sep="\t")
    for member in (2, 1):  # written out of order: shown in member order
        curve.assign(train_loss=curve["train_loss"] * member).to_csv(
            folder / f"curve_member{member}.tsv", sep="\t", index=False
        )
    described = {"name": "dmdetnet3d", "inference": {"members": 3, "mirror_axes": ["y", "x"]}}
    (folder / "model.json").write_text(json.dumps(described))
    build_report(out, inputs=inputs)
    html = out.read_text()

    assert "the mean of 3 networks" in html and "test-time mirroring over yx" in html
    assert "other ensemble members (2;" in html
    assert html.index("member 1 training curve") < html.index("member 2 training curve")
    assert len(_decode_images(html)) == len(_decode_images(plain)) + 2


@pytest.mark.parametrize("key", ["detection_summary_tsv", "roi_jsons", "detection_samples"])
def test_missing_listed_file_names_it(run_dir, tmp_path, key):
    missing = tmp_path / "nope" / "missing.file"
    if key == "roi_jsons":
        run_dir[key] = [str(missing)]
    elif key == "detection_samples":
        run_dir[key][0]["matches"] = str(missing)
    else:
        run_dir[key] = str(missing)
    out = tmp_path / "report.html"

    with pytest.raises(InputDataError) as info:
        build_report(out, inputs=ReportInputs.from_dict(run_dir))

    assert str(missing) in str(info.value)
    assert not out.exists()


def test_inputs_reject_unknown_keys_and_incomplete_samples():
    with pytest.raises(ConfigError, match="detection_sumary_tsv"):
        ReportInputs.from_dict({"detection_sumary_tsv": "x.tsv"})
    with pytest.raises(ConfigError, match="pred"):
        ReportInputs.from_dict({"detection_samples": [{"sample": "a", "image": "a.ome.zarr"}]})
    with pytest.raises(ConfigError, match="must be a list"):
        ReportInputs.from_dict({"roi_jsons": "a.json"})


def test_mismatched_label_shape_is_an_input_error(run_dir, tmp_path):
    write_ome_zarr(
        tmp_path / "small.ome.zarr",
        np.zeros((6, 32, 32), np.uint32),
        (0.5, 0.25, 0.25),
        chunks=(3, 32, 32),
    )
    run_dir["segmentation_samples"][0]["pred_labels"] = str(tmp_path / "small.ome.zarr")

    with pytest.raises(InputDataError, match="shape"):
        build_report(
            tmp_path / "r.html",
            inputs=ReportInputs.from_dict(
                {"segmentation_samples": run_dir["segmentation_samples"]}
            ),
        )


# --------------------------------------------------------------------------- projections
class _CountingArray:
    """Wraps an array and records the largest block read."""

    def __init__(self, data: np.ndarray, chunks):
        self.data, self.chunks, self.largest = data, chunks, 0
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        block = self.data[key]
        self.largest = max(self.largest, block.size)
        return block


def _reference_pool(image2d: np.ndarray, factors) -> np.ndarray:
    fa, fb = factors
    rows, cols = -(-image2d.shape[0] // fa), -(-image2d.shape[1] // fb)
    padded = np.full((rows * fa, cols * fb), image2d.min(), image2d.dtype)
    padded[: image2d.shape[0], : image2d.shape[1]] = image2d
    return padded.reshape(rows, fa, cols, fb).max(axis=(1, 3))


@pytest.mark.parametrize("axis", [0, 1])
def test_chunked_projection_equals_whole_volume(axis, rng, tmp_path):
    data = rng.integers(0, 60000, (10, 37, 53), dtype=np.uint16)
    write_ome_zarr(tmp_path / "v.ome.zarr", data, (1, 1, 1), chunks=(3, 5, 7))
    from fewlabel.io import open_ome_zarr

    volume = open_ome_zarr(tmp_path / "v.ome.zarr")
    counting = _CountingArray(data, (3, 5, 7))

    mip, factors = max_projection(volume.array, axis, max_px=8, block_voxels=200)
    mip2, _ = max_projection(counting, axis, max_px=8, block_voxels=200)

    kept = [s for a, s in enumerate(data.shape) if a != axis]
    assert factors == pooling_factors(kept, 8, square=axis == 0)
    assert max(mip.shape) <= 8
    expected = _reference_pool(data.max(axis=axis), factors)
    np.testing.assert_array_equal(mip, expected)
    np.testing.assert_array_equal(mip2, expected)
    assert counting.largest <= 200  # never more than one bounded block in memory


def test_projection_of_czyx_uses_channel_zero(rng):
    data = rng.random((2, 4, 6, 8)).astype(np.float32)

    mip, factors = max_projection(data, 0)

    assert factors == (1, 1)
    np.testing.assert_array_equal(mip, data[0].max(axis=0))


def test_read_matches_index_only_layout_equals_full_layout(tmp_path):
    gt = np.array([[0, 1, 1], [0, 5, 5], [0, 9, 9]], float)
    pred = np.array([[0, 1, 2], [0, 20, 20], [0, 9, 8]], float)
    full = _matches_csv(tmp_path / "full.csv", gt, pred, [(0, 0), (2, 2)])
    pd.DataFrame(
        {
            "gt_index": [0, 2, 1, -1],
            "pred_index": [0, 2, -1, 1],
            "distance": [1.0, 1.0, np.nan, np.nan],
        }
    ).to_csv(tmp_path / "idx.csv", index=False)

    a = read_matches(full, gt, pred)
    b = read_matches(tmp_path / "idx.csv", gt, pred)

    for layers in (a, b):
        np.testing.assert_array_equal(layers.tp_gt, gt[[0, 2]])
        np.testing.assert_array_equal(layers.tp_pred, pred[[0, 2]])
        np.testing.assert_array_equal(layers.fn, gt[[1]])
        np.testing.assert_array_equal(layers.fp, pred[[1]])
    with pytest.raises(InputDataError, match="do not have"):
        read_matches(tmp_path / "idx.csv", gt[:1], pred)


def test_unscored_predictions_are_drawn_apart_from_false_ones(tmp_path):
    """A test volume complete only inside its region: predictions outside are read and drawn as
    'not scored', never as false positives."""
    from fewlabel.metrics.detection import match_points
    from fewlabel.metrics.tables import write_matches
    from fewlabel.report.figures import PointLayers

    gt = np.array([[0, 1, 1], [0, 5, 5]], float)
    pred = np.array([[0, 1, 2], [0, 3, 3], [0, 20, 20]], float)
    res = match_points(gt, pred, max_distance=1.5)
    write_matches(res, gt, pred, tmp_path / "m.csv", scored=np.array([True, True, False]))

    layers = read_matches(tmp_path / "m.csv", gt, pred)

    np.testing.assert_array_equal(layers.fp, pred[[1]])
    np.testing.assert_array_equal(layers.unscored, pred[[2]])
    assert [label for label, *_ in layers.layers()][-1] == "prediction, not scored"
    plain = PointLayers(gt=gt, pred=pred, tp_gt=gt[:1], tp_pred=pred[:1], fn=gt[1:], fp=pred[1:])
    assert "prediction, not scored" not in [label for label, *_ in plain.layers()]


# --------------------------------------------------------------------------- CLI
def test_cli_build_report(run_dir, tmp_path):
    from fewlabel.cli import main

    out = tmp_path / "cli" / "report.html"
    log_file = tmp_path / "report.log"
    inputs = {k: run_dir[k] for k in ("title", "detection_summary_tsv", "roi_jsons", "roi_masks")}
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))

    rc = main(
        [
            "build_report",
            "--output",
            str(out),
            "--inputs-json",
            json.dumps(inputs),
            "--log",
            str(log_file),
        ]
    )
    rc_file = main(
        [
            "build_report",
            "--output",
            str(tmp_path / "r2.html"),
            "--inputs-file",
            str(tmp_path / "inputs.json"),
        ]
    )
    inputs["detection_summary_tsv"] = str(tmp_path / "missing.tsv")
    rc_bad = main(
        [
            "build_report",
            "--output",
            str(tmp_path / "bad.html"),
            "--inputs-json",
            json.dumps(inputs),
            "--log",
            str(log_file),
        ]
    )

    assert rc == 0 and rc_file == 0
    assert len(_decode_images(out.read_text())) == 1  # the ROI outline
    assert rc_bad == 2 and not (tmp_path / "bad.html").exists()
    assert "missing.tsv" in log_file.read_text()


# --------------------------------------------------------------------------- browser
@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium not installed "
    "(apt-get install chromium) - headless rendering check skipped",
)
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    import matplotlib.image as mpimg

    out = tmp_path / "report.html"
    build_report(out, inputs=ReportInputs.from_dict(run_dir))
    shot = tmp_path / "shot.png"

    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chrome'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            out.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )

    assert shot.exists() and shot.read_bytes()[:8] == PNG_SIGNATURE
    pixels = mpimg.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    assert float(pixels.std()) > 0.05  # text, tables and figures, not a blank page
    dark = (pixels.mean(axis=2) < 0.3).mean()
    assert dark > 0.01  # images (dark microscopy backgrounds) were rendered
    shutil.rmtree(tmp_path / "chrome", ignore_errors=True)


def test_curve_figure_is_identical_for_runs_that_differ_only_in_time():
    import pandas as pd

    from fewlabel.report.figures import curve_figure

    base = {
        "epoch": [1, 2, 3],
        "train_loss": [1.0, 0.5, 0.4],
        "val_loss": [1.1, 0.6, 0.5],
        "val_f1": [0.2, 0.5, 0.7],
        "best": [1, 1, 1],
    }
    first = curve_figure(pd.DataFrame({**base, "seconds": [0.1, 0.2, 0.3]}), "detector")
    second = curve_figure(pd.DataFrame({**base, "seconds": [5.0, 9.0, 14.0]}), "detector")
    assert first == second
    changed = curve_figure(
        pd.DataFrame({**base, "val_f1": [0.2, 0.5, 0.9], "seconds": [0.1, 0.2, 0.3]}), "detector"
    )
    assert changed != first


@pytest.mark.parametrize("log_f1", [0.95, 0.80])
def test_learned_detector_is_set_beside_the_log_baseline(run_dir, tmp_path, log_f1):
    """The report puts both tuned scores side by side and warns when the LoG scores higher;
    a comparison of different annotations or counting rules says it is only indicative."""
    learned = Path(run_dir["detection_model_dir"])
    scores = {"tuned_on": "val", "tuned_with": "clicks-recall+regions-precision", "gate": 0.5}
    record = json.loads((learned / "thresholds.json").read_text())
    record.update(scores, val_f1=0.9, val_precision=0.95, val_recall=0.855)
    (learned / "thresholds.json").write_text(json.dumps(record))
    baseline = tmp_path / "log_baseline"
    baseline.mkdir()
    log_record = {"detection_threshold": 2.5, "val_precision": 1.0, "val_recall": 0.7}
    (baseline / "thresholds.json").write_text(
        json.dumps({**scores, **log_record, "val_f1": log_f1})
    )
    out = tmp_path / "report.html"
    inputs = {"detection_model_dir": str(learned), "log_baseline_dir": str(baseline)}

    build_report(out, inputs=ReportInputs.from_dict(inputs))
    html = out.read_text()

    assert "Learned detector vs the LoG baseline" in html
    if log_f1 > 0.9:
        assert 'class="warn"' in html and "F1 0.950 vs 0.900" in html
        assert "detection.method: log" in html
    else:
        assert 'class="warn"' not in html and "at or above the LoG baseline" in html
        assert "F1 0.900 vs 0.800" in html
    assert "only indicative" not in html
    (baseline / "thresholds.json").write_text(
        json.dumps({**scores, **log_record, "val_f1": log_f1, "tuned_on": "train"})
    )
    build_report(out, inputs=ReportInputs.from_dict(inputs))
    assert "only indicative" in out.read_text() and "optimistic" in out.read_text()
    build_report(out, inputs=ReportInputs.from_dict({"detection_model_dir": str(learned)}))
    assert "LoG baseline" not in out.read_text()

    # with test rows the held-out scores decide, whatever the validation said
    summaries = {}
    for name, f1 in (("learned", 0.85), ("log", 0.70 if log_f1 > 0.9 else 0.95)):
        path = tmp_path / f"{name}.tsv"
        pd.DataFrame(
            [{"sample": "t", "precision": 0.9, "recall": 0.8, "f1": f1, "scored_in": "volume"},
             {"sample": "ALL", "precision": 0.9, "recall": 0.8, "f1": f1,
              "scored_in": "annotated_region"}]
        ).to_csv(path, sep="\t", index=False)  # fmt: skip
        summaries[name] = str(path)
    inputs |= {"detection_summary_tsv": summaries["learned"]}
    inputs |= {"log_baseline_summary_tsv": summaries["log"]}
    build_report(out, inputs=ReportInputs.from_dict(inputs))
    html = out.read_text()
    assert "on the held-out test volumes" in html and "test (held out)" in html
    assert "precision in the annotated_region" in html and "optimistic" not in html
    if log_f1 > 0.9:  # the LoG was higher on validation, lower on the test
        assert 'class="warn"' not in html and "F1 0.850 vs 0.700" in html
    else:
        assert 'class="warn"' in html and "F1 0.950 vs 0.850" in html

"""The report directory: metrics.json, report.md tables and valid PNG plots."""

import json

import numpy as np
from PIL import Image

from vestis.eval.protocols import attribute_map, knn_accuracy, leave_one_out
from vestis.eval.report import write_report


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def results() -> dict:
    v, labels = unit(80, 8, 0), np.arange(80) % 4
    meta = [{"colour": str(i % 3), "sleeve": str(i % 2)} for i in range(80)]
    return {**leave_one_out(v, labels, ks=(1, 10, 20)),
            **attribute_map(v, meta, ["colour", "sleeve"]),
            **knn_accuracy(v[:20], labels[:20], v[20:], labels[20:], k=5),
            "unused_nan": float("nan")}


def test_write_report_files_tables_and_plots(tmp_path):
    grid = tmp_path / "grids" / "best.png"
    grid.parent.mkdir()
    Image.new("RGB", (30, 20), "white").save(grid)
    res = results()
    out = tmp_path / "report"
    path = write_report(out, res, title="FPI test", command="vestis eval --collection c --group articleType",
                        examples=[("best query", grid)])

    assert path == out / "report.md"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["P@10"] == res["P@10"] and saved["unused_nan"] is None
    assert saved["attributes"]["colour"]["mAP"] == res["attributes"]["colour"]["mAP"]

    md = path.read_text()
    assert "vestis eval --collection c --group articleType" in md
    assert "| P@K | " in md and "K=20" in md and f"{res['P@10']:.4f}" in md
    assert f"| colour | {res['attributes']['colour']['mAP']:.4f} |" in md
    # merged results keep each protocol's query count
    assert "| n_queries | 80 |" in md and "| attribute_n_queries | 160 |" in md
    assert "| kNN_n_queries | 20 |" in md
    assert "| attribute_mAP |" in md and "| kNN_accuracy |" in md and "| unused_nan | n/a |" in md
    assert "## Per-class accuracy" in md and "![best query](../grids/best.png)" in md

    for name in ("metrics_at_k.png", "attribute_map.png", "confusion_matrix.png"):
        assert f"]({name})" in md
        with Image.open(out / name) as im:
            im.verify()
            assert im.format == "PNG" and min(im.size) >= 300


def test_report_without_optional_sections(tmp_path):
    write_report(tmp_path, {"P@10": 0.5, "n_queries": 3}, title="t", command="c")
    md = (tmp_path / "report.md").read_text()
    assert "Attribute" not in md and "Confusion" not in md and "Example" not in md
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "metrics_at_k.png", "report.md"]

"""One protocol per number in the report: the examples mark hits the way the verdict counts them, and the time to
quality reads only the validation checks of the report's protocol."""

from __future__ import annotations

import json

import numpy as np

from mwa_cli.report.api import make_report
from mwa_cli.report.collect import load_run
from mwa_cli.report.gallery import DataDir, build_gallery
from tests.helpers.data_dir import image_id, write_data_dir
from tests.helpers.report_builder import make_run


def _templated_data(root):
    """Six test photos of two labels whose captions are the label's two templates (captions repeat)."""
    rows, images = [], []
    for i in range(8):
        img = np.full((8, 8, 3), 20 * i, np.uint8)
        images.append(img)
        label = "scratch" if i % 2 == 0 else "dent"
        for tpl in ("a photo of {}", "a part with a {}"):
            rows.append({"image_id": image_id(img), "path": f"{label}/{i}.png", "caption": tpl.format(label),
                         "label": label, "split": "train" if i < 2 else "test", "width": 8, "height": 8})
    return write_data_dir(root / "data", images, rows, source=root / "photos", fmt="folders")


def _as_label_level(run):
    ev = json.loads((run / "eval.json").read_text())
    ev.update(primary_protocol="label_level", label_level={**{k: ev[k] for k in ("i2t", "t2i", "rsum", "mean_recall")},
                                                           "key": "caption", "protocol": "Identical-caption level"})
    (run / "eval.json").write_text(json.dumps(ev))


def test_examples_mark_hits_by_the_verdicts_protocol(tmp_path):
    data = _templated_data(tmp_path)
    run = make_run(tmp_path / "runs", "mwa", "mwa", data)
    dd = DataDir(data)
    rows = dd.split_rows("test")
    label_of = dict(zip(rows.image_id, rows.label))
    instance = build_gallery(load_run(run), dd, "instance")
    level = build_gallery(load_run(run), dd, "label_level")
    assert level["protocol"] == "label_level"
    for q_inst, q_level in zip(instance["t2i"], level["t2i"]):
        own_label = label_of[q_inst["image_id"]]
        for a, b in zip(q_inst["results"], q_level["results"]):
            assert a["hit"] == (a["image_id"] == q_inst["image_id"])  # instance: its own photo only
            assert b["hit"] == (label_of[b["image_id"]] == own_label)  # label level: any photo with its caption
        assert sum(b["hit"] for b in q_level["results"]) > sum(a["hit"] for a in q_inst["results"])
    for q in level["i2t"]:
        for res in q["results"]:
            assert res["hit"] == (res["caption"].endswith(label_of[q["image_id"]]))
    _as_label_level(run)
    make_run(tmp_path / "runs", "full-ft", "full-ft", data)
    _as_label_level(tmp_path / "runs" / "full-ft")
    rep = make_report([], tmp_path / "runs", out=tmp_path / "r.html")
    assert rep["primary_protocol"] == "label_level"
    main = next(r for r in rep["runs"] if r["is_main"])
    assert main["gallery"]["protocol"] == "label_level"
    assert "Correct here means what the verdict counts (label level)" in (tmp_path / "r.html").read_text("utf-8")


def test_time_to_quality_reads_only_checks_of_the_reports_protocol(tmp_path):
    data = _templated_data(tmp_path)
    runs = tmp_path / "runs"
    for name in ("full-ft", "mwa"):
        run = make_run(runs, name, name, data)
        _as_label_level(run)
        with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
            for i, (rsum, protocol) in enumerate(((100.0, "label_level"), (500.0, "instance"),
                                                  (300.0, "label_level"))):
                f.write(json.dumps({"kind": "eval", "step": 10 * i, "split": "val", "rsum": rsum, "protocol": protocol,
                                    "time_s": 10.0 * i, "time_no_val_s": 10.0 * i}) + "\n")
    rep = make_report([], runs, write=False)
    assert rep["time_to_quality"]["reference_best_val_rsum"] == 300.0  # the instance check (500) is not mixed in
    mwa = next(r for r in rep["runs"] if r["name"] == "mwa")
    assert mwa["time_to_quality"]["checks"] == 2 and mwa["time_to_quality"]["best_val_rsum"] == 300.0

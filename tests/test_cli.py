"""The napari-gsm command line end to end on the bundled wing sample (8 train, 2 test)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_gsm.cli import build_parser, main
from napari_gsm.evaluate import auc, nme, summarise
from napari_gsm.geometry import shape_size
from napari_gsm.init import FaceDetector, start_from_box
from napari_gsm.io import read_image, read_pts, to_grey
from napari_gsm.methods import METHODS
from napari_gsm.model import load_model

REPO = Path(__file__).resolve().parent.parent
WINGS = REPO / "sample_data" / "wings"
FACES = REPO / "sample_data" / "faces"

pytestmark = pytest.mark.skipif(not WINGS.is_dir(), reason="sample_data/wings not present")


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def wings(tmp_path_factory):
    """train/ (8 annotated wings), test/ (2 images only), truth/ (their .pts), model.npz."""
    root = tmp_path_factory.mktemp("wings")
    stems = sorted(p.stem for p in WINGS.glob("*.pts"))
    train, test, truth = root / "train", root / "test", root / "truth"
    for d in (train, test, truth):
        d.mkdir()
    for s in stems[:8]:
        shutil.copy(WINGS / f"{s}.jpg", train)
        shutil.copy(WINGS / f"{s}.pts", train)
    for s in stems[8:]:
        shutil.copy(WINGS / f"{s}.jpg", test)
        shutil.copy(WINGS / f"{s}.pts", truth)
    model = root / "model.npz"
    assert main(["train", str(train), "--method", "gsm", "-o", str(model), "--json"]) == 0
    return {"root": root, "train": train, "test": test, "truth": truth, "model": model,
            "test_stems": stems[8:]}


def test_train_passes_options_straight_through(wings, tmp_path, capsys):
    out = tmp_path / "sub" / "m.npz"
    rc, stdout, _ = run(capsys, "train", wings["train"], "--features", "grey", "--sigma", 3.5,
                        "--ref-size", 30, "--lam", 0.2, "-o", out)
    assert rc == 0
    assert "8 images" in stdout and "12 landmarks" in stdout and str(out) in stdout
    m = load_model(out)
    assert m.n_landmarks == 12 and m.method == "gsm"
    assert m.train_params.sigma == 3.5 and m.train_params.features == "grey"
    assert m.train_params.ref_size == 30 and m.gsm_params.lam == 0.2
    # grey features: grid stride 1 px, so the detector width is sigma itself
    assert m.detectors.sigma == pytest.approx(3.5)


def test_train_hog_is_signed_unless_asked_for_unsigned(wings, tmp_path, capsys):
    for extra, signed in (((), True), (("--features", "hog"), False)):
        out = tmp_path / f"m{signed}.npz"
        rc, printed, _ = run(capsys, "train", wings["train"], *extra, "--lam", 0.2, "-o", out)
        m = load_model(out)
        assert rc == 0 and m.features.kind == "hog" and m.features.signed == signed
        # the summary line names the features as the option does
        assert f"({'hog-signed' if signed else 'hog'})" in printed
        assert m.train_params.signed == signed
        assert m.detectors.filters.shape[-1] == (12 if signed else 9)


def test_train_gsm3d_with_a_known_3d_mean(wings, tmp_path, capsys):
    mean3d = np.column_stack([np.linspace(0, 1, 12), np.linspace(1, 0, 12) ** 2,
                              np.sin(np.linspace(0, 3, 12))])
    good, bad = tmp_path / "mean3d.csv", tmp_path / "short.csv"
    np.savetxt(good, mean3d, delimiter=",")
    np.savetxt(bad, mean3d[:10], delimiter=",")
    out = tmp_path / "m3.npz"
    rc, _, _ = run(capsys, "train", wings["train"], "--method", "gsm3d", "--mean3d", good,
                   "-o", out)
    assert rc == 0 and load_model(out).state.source == "file"
    rc, _, err = run(capsys, "train", wings["train"], "--method", "gsm3d", "--mean3d", bad,
                     "-o", tmp_path / "m4.npz")
    assert rc == 2 and str(bad) in err and "10" in err and "12" in err
    assert not (tmp_path / "m4.npz").exists()
    rc, _, err = run(capsys, "train", wings["train"], "--mean3d", good, "-o", tmp_path / "x")
    assert rc == 2 and "gsm3d" in err


def test_train_offers_only_registered_methods(wings, tmp_path):
    action = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]
                  ._actions if a.dest == "method")
    assert sorted(action.choices) == sorted(METHODS)
    with pytest.raises(SystemExit) as exc:
        main(["train", str(wings["train"]), "--method", "no-such-method", "-o",
              str(tmp_path / "m.npz")])
    assert exc.value.code == 2


def test_fit_folder_writes_pts_near_truth(wings, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, _ = run(capsys, "fit", wings["model"], wings["test"], "-o", out)
    assert rc == 0
    for stem in wings["test_stems"]:
        pred = read_pts(out / f"{stem}.pts")
        truth = read_pts(wings["truth"] / f"{stem}.pts")
        assert pred.shape == (12, 2)
        # easy case: same microscope set-up, prior start; the bounding-box diagonal
        # of a wing is ~500 px, so 0.03 is ~15 px.
        assert nme(pred, truth) < 0.03
        assert stem in stdout


def test_fit_never_replaces_an_annotation_unless_asked(wings, tmp_path, capsys):
    """-o onto the annotated folder itself: annotations and earlier fits are skipped (and
    said to be); --overwrite replaces them, keeping each as <stem>.pts.~N~; --unannotated
    fits only images without a .pts beside them."""
    proj = tmp_path / "proj"
    shutil.copytree(wings["train"], proj)
    for s in wings["test_stems"]:
        shutil.copy(wings["test"] / f"{s}.jpg", proj)
    annotated = {p.name: p.read_bytes() for p in proj.glob("*.pts")}
    assert len(annotated) == 8
    rc, stdout, _ = run(capsys, "fit", wings["model"], proj, "-o", proj)
    assert rc == 0
    assert {p.name: p.read_bytes() for p in proj.glob("*.pts") if p.name in annotated} \
        == annotated
    assert not list(proj.glob("*~")), "no backups: nothing was replaced"
    for s in wings["test_stems"]:  # the two unannotated images got their fits
        assert read_pts(proj / f"{s}.pts").shape == (12, 2)
    assert "skipped 8 image(s)" in stdout and "--overwrite" in stdout
    assert f"{proj / sorted(annotated)[0]} exists" in stdout  # listed, with the reason

    # a re-run skips everything, with the reason per image in the JSON: the annotations
    # exist, the two fits are done (fit wrote them with this model)
    rc, stdout, _ = run(capsys, "fit", wings["model"], proj, "-o", proj, "--json")
    doc = json.loads(stdout)
    assert rc == 0 and doc["images"] == [] and doc["totals"]["n_skipped"] == 10
    reasons = {Path(r["file"]).name: r["reason"] for r in doc["skipped"]}
    assert reasons == {**{n: "output exists" for n in annotated},
                       **{f"{s}.pts": "done" for s in wings["test_stems"]}}

    # --unannotated: only images without an annotation beside them (fit's own output
    # beside an image is no annotation)
    (proj / f"{wings['test_stems'][0]}.pts").unlink()
    out = tmp_path / "fits"
    rc, stdout, _ = run(capsys, "fit", wings["model"], proj, "-o", out, "--unannotated",
                        "--json")
    doc = json.loads(stdout)
    assert [Path(r["image"]).stem for r in doc["images"]] == wings["test_stems"]
    assert sorted(p.name for p in out.glob("*.pts")) == [f"{s}.pts" for s in wings["test_stems"]]
    assert doc["totals"]["n_skipped"] == 8
    assert {r["reason"] for r in doc["skipped"]} == {"annotated"}

    # --overwrite replaces, keeping every file fit did not write as a numbered backup
    rc, stdout, _ = run(capsys, "fit", wings["model"], proj, "-o", proj, "--overwrite")
    assert rc == 0 and "replaced 8 existing .pts file(s)" in stdout and ".pts.~1~" in stdout
    assert "re-fitted 1 image(s)" in stdout
    for name, old in annotated.items():
        assert (proj / f"{name}.~1~").read_bytes() == old
        assert (proj / name).read_bytes() != old
    assert len(list(proj.glob("*~"))) == 8


def test_fit_resumes_and_refits_only_its_own_output(wings, tmp_path, capsys):
    """fit's journal: a re-run skips what fit wrote with this model; after retraining it
    fits again what fit wrote with the old model (no backup: its own output), but leaves
    alone a fit a person has edited since; a journal line cut short is ignored."""
    out = tmp_path / "out"
    rc, _, _ = run(capsys, "fit", wings["model"], wings["test"], "-o", out)
    assert rc == 0
    first = {p.name: p.read_bytes() for p in out.glob("*.pts")}
    assert len(first) == 2
    rc, stdout, _ = run(capsys, "fit", wings["model"], wings["test"], "-o", out, "--json")
    doc = json.loads(stdout)
    assert doc["images"] == [] and {s["reason"] for s in doc["skipped"]} == {"done"}

    edited, untouched = sorted(first)
    text = (out / edited).read_text().replace("\n}", "\n}\n")  # a person saved it again
    (out / edited).write_text(text)
    with open(out / ".napari-gsm-fits.jsonl", "a") as f:
        f.write('{"file": "' + untouched + '", "sha2')  # cut short by a crash
    model2 = tmp_path / "model2.npz"
    assert main(["train", str(wings["train"]), "--lam", "0.4", "-o", str(model2)]) == 0
    capsys.readouterr()
    rc, stdout, _ = run(capsys, "fit", model2, wings["test"], "-o", out, "--json")
    doc = json.loads(stdout)
    assert rc == 0 and [Path(r["output"]).name for r in doc["images"]] == [untouched]
    assert doc["images"][0]["replaced"] and doc["images"][0]["backup"] is None
    assert [(Path(s["file"]).name, s["reason"]) for s in doc["skipped"]] == [
        (edited, "output exists")]
    assert (out / edited).read_text() == text
    assert (out / untouched).read_bytes() != first[untouched]  # model2's fit
    assert not list(out.glob("*~"))
    rc, stdout, _ = run(capsys, "fit", model2, wings["test"], "-o", out, "--json")
    assert {s["reason"] for s in json.loads(stdout)["skipped"]} == {"done", "output exists"}


def test_gsm_cr_train_fit_evaluate(wings, tmp_path, capsys):
    """GSM-CR through the CLI: the file holds the cascade, fit and evaluate use it."""
    model = tmp_path / "cr.npz"
    rc, stdout, _ = run(capsys, "train", wings["train"], "--method", "gsm-cr", "-o", model)
    assert rc == 0 and "gsm-cr" in stdout
    m = load_model(model)
    assert m.method == "gsm-cr" and m.state.R.shape[1:] == (6 * 12 + 1, 2 * 12)
    assert m.state.params()["init"] == "prior"  # the start a plain fit of a wing uses
    out = tmp_path / "out"
    rc, stdout, _ = run(capsys, "fit", model, *[wings["test"] / f"{s}.jpg"
                                                for s in wings["test_stems"]],
                        "-o", out, "--json")
    assert rc == 0
    for r, stem in zip(json.loads(stdout)["images"], wings["test_stems"]):
        assert r["init"] == "prior" and r["n_iter"] == m.state.levels
        pred = read_pts(out / f"{stem}.pts")
        assert nme(pred, read_pts(wings["truth"] / f"{stem}.pts")) < 0.03
    rc, stdout, _ = run(capsys, "evaluate", model, wings["train"], "--json")
    assert rc == 0 and json.loads(stdout)["method"] == "gsm-cr"


def test_fit_json(wings, tmp_path, capsys):
    out = tmp_path / "out"
    images = [wings["test"] / f"{s}.jpg" for s in wings["test_stems"]]
    rc, stdout, stderr = run(capsys, "fit", wings["model"], *images, "-o", out, "--json")
    assert rc == 0 and stderr == ""  # no progress bar with --json
    doc = json.loads(stdout)
    assert [Path(r["image"]) for r in doc["images"]] == images
    for r in doc["images"]:
        assert r["fit_ms"] > 0 and r["init"] == "prior" and r["n_iter"] >= 1
        assert isinstance(r["converged"], bool) and "points" not in r
        assert np.allclose(read_pts(r["output"]).shape, (12, 2))
    assert doc["totals"]["n_images"] == 2
    assert doc["totals"]["fit_ms_total"] == pytest.approx(sum(r["fit_ms"] for r in doc["images"]))
    # each image's confidence, landmark by landmark in the order of the written .pts
    assert doc["confidence_note"] is None
    for r in doc["images"]:
        c = r["confidence"]
        assert len(c["p_off"]) == len(c["error_px"]) == 12
        assert all(0 <= p <= 1 for p in c["p_off"]) and all(e > 0 for e in c["error_px"])
        assert isinstance(c["nme"], float) and isinstance(c["failed"], bool)
        pts = read_pts(r["output"])
        assert c["threshold_px"] == pytest.approx(0.02 * np.hypot(*np.ptp(pts, 0)), rel=1e-3)
        assert c["nme"] == pytest.approx(np.mean(c["error_px"]) / np.hypot(*np.ptp(pts, 0)),
                                         rel=1e-3)
    # a stricter threshold: smaller in pixels, every landmark more likely off
    rc, stdout, _ = run(capsys, "fit", wings["model"], *images, "-o", out, "--json",
                        "--overwrite", "--off-threshold", "0.5")
    for r, s in zip(json.loads(stdout)["images"], doc["images"]):
        c, d = r["confidence"], s["confidence"]
        assert c["threshold_px"] == pytest.approx(d["threshold_px"] / 4, rel=1e-3)
        assert all(a >= b for a, b in zip(c["p_off"], d["p_off"]))
    with pytest.raises(SystemExit) as exc:
        run(capsys, "fit", wings["model"], *images, "-o", out, "--off-threshold", "0")
    assert exc.value.code == 2 and "--off-threshold" in capsys.readouterr().err


def test_a_model_without_calibration_fits_and_says_so(wings, tmp_path, capsys):
    from napari_gsm.io import load_model_file, save_model_file

    arrays, meta = load_model_file(wings["model"])
    old = save_model_file(tmp_path / "old.npz",
                          {k: v for k, v in arrays.items() if not k.startswith("calib_")},
                          {k: v for k, v in meta.items() if k != "calibration"})
    rc, stdout, stderr = run(capsys, "fit", old, wings["test"], "-o", tmp_path / "o", "--json")
    doc = json.loads(stdout)
    assert rc == 0 and "retrain" in doc["confidence_note"]
    assert all(r["confidence"] is None for r in doc["images"])
    rc, stdout, stderr = run(capsys, "fit", old, wings["test"], "-o", tmp_path / "p")
    assert rc == 0 and "retrain" in stderr and str(old) in stderr


def test_boxes_override_the_start(wings, tmp_path, capsys):
    far, near = wings["test_stems"]
    box = [5.0, 5.0, 85.0, 65.0]  # top-left corner; the wing fills the image centre
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({far: box}))
    rc, stdout, _ = run(capsys, "fit", wings["model"], wings["test"], "-o", tmp_path / "o",
                        "--boxes", boxes, "--json")
    assert rc == 0
    recs = {Path(r["image"]).stem: r for r in json.loads(stdout)["images"]}
    assert recs[far]["init"] == "box" and recs[near]["init"] == "prior"
    truth = read_pts(wings["truth"] / f"{far}.pts")
    pred = read_pts(tmp_path / "o" / f"{far}.pts")
    start = start_from_box(load_model(wings["model"]).shape.s0, box)
    box_c = np.array([45.0, 35.0])
    np.testing.assert_allclose(start.mean(0), box_c, atol=20)
    # The fit starts (and stays) near the box, far from the wing.
    assert np.linalg.norm(pred.mean(0) - box_c) < np.linalg.norm(pred.mean(0) - truth.mean(0))
    assert nme(pred, truth) > 0.1
    # --init box needs a box for every image
    rc, _, err = run(capsys, "fit", wings["model"], wings["test"], "-o", tmp_path / "o2",
                     "--init", "box", "--boxes", boxes)
    assert rc == 2 and str(boxes) in err and near in err


def _wing_detector_boxes(folder):
    """A made-up detector's boxes around the wings of ``folder``'s .pts files: 3 shape sizes
    wide, 2 tall, centred half a size left of the landmarks' centroid."""
    out = {}
    for pts in sorted(Path(folder).glob("*.pts")):
        p = read_pts(pts)
        c, size = p.mean(0) - [0.5 * shape_size(p), 0], shape_size(p)
        out[pts.stem] = [c[0] - 1.5 * size, c[1] - size, c[0] + 1.5 * size, c[1] + size]
    return out


def test_train_on_a_detectors_boxes_and_fit_from_them(wings, tmp_path, capsys):
    train_boxes, test_boxes = tmp_path / "train.json", tmp_path / "test.json"
    train_boxes.write_text(json.dumps(_wing_detector_boxes(wings["train"])))
    boxes = _wing_detector_boxes(wings["truth"])
    test_boxes.write_text(json.dumps(boxes))
    model = tmp_path / "boxes.npz"
    rc, stdout, _ = run(capsys, "train", wings["train"], "--boxes", train_boxes, "-o", model)
    assert rc == 0 and "boxes for 8/8" in stdout
    m = load_model(model)
    assert m.starts.face_source == "boxes"
    np.testing.assert_allclose(m.starts.face, [2 / 3, 0.5, 1 / np.sqrt(6)], atol=1e-6)
    fits = {}
    for kind in (None, "landmarks"):
        extra = () if kind is None else ("--box-kind", kind)
        rc, stdout, _ = run(capsys, "fit", model, wings["test"], "-o", tmp_path / str(kind),
                            "--boxes", test_boxes, "--json", *extra)
        assert rc == 0
        recs = json.loads(stdout)["images"]
        assert {r["init"] for r in recs} == {"detector box" if kind is None else "box"}
        fits[kind] = {Path(r["image"]).stem: read_pts(r["output"]) for r in recs}
    for stem in wings["test_stems"]:  # the detector's box is the default for this model
        truth = read_pts(wings["truth"] / f"{stem}.pts")
        api = m.fit(read_image(wings["test"] / f"{stem}.jpg"), "box", box=boxes[stem],
                    box_kind="detector")
        np.testing.assert_allclose(fits[None][stem], api.points, atol=1e-3)
        assert nme(fits[None][stem], truth) < 0.03
        start = m.start(to_grey(read_image(wings["test"] / f"{stem}.jpg")), "box",
                        box=boxes[stem], box_kind="detector")[0]
        assert np.linalg.norm(start.mean(0) - truth.mean(0)) < 0.1 * shape_size(truth)
        # --box-kind landmarks reads the same box as the wing's bounding box: another start
        assert np.abs(fits["landmarks"][stem] - fits[None][stem]).max() > 0.01
    # what cannot be done, each named
    rc, _, err = run(capsys, "train", wings["train"], "--boxes", train_boxes,
                     "--face-detector", "-o", tmp_path / "x.npz")
    _assert_user_error(rc, err, "--boxes")
    rc, _, err = run(capsys, "fit", wings["model"], wings["test"], "-o", tmp_path / "y",
                     "--boxes", test_boxes, "--box-kind", "detector")
    _assert_user_error(rc, err, wings["model"], "--boxes")
    rc, _, err = run(capsys, "fit", model, wings["test"], "-o", tmp_path / "z", "--init",
                     "detect")
    _assert_user_error(rc, err, model, "--box-kind detector")
    unrelated = tmp_path / "unrelated.json"
    unrelated.write_text(json.dumps({"no-such-image": [0, 0, 10, 10]}))
    rc, _, err = run(capsys, "train", wings["train"], "--boxes", unrelated, "-o",
                     tmp_path / "u.npz")
    _assert_user_error(rc, err, unrelated, "stems")


def test_init_from_points_folder(wings, tmp_path, capsys):
    rc, stdout, _ = run(capsys, "fit", wings["model"], wings["test"], "-o", tmp_path / "o",
                        "--init", f"pts:{wings['truth']}", "--json")
    assert rc == 0
    for r in json.loads(stdout)["images"]:
        stem = Path(r["image"]).stem
        assert r["init"] == "points"
        assert nme(read_pts(r["output"]), read_pts(wings["truth"] / f"{stem}.pts")) < 0.02
    bad = tmp_path / "bad"
    shutil.copytree(wings["truth"], bad)
    stem = wings["test_stems"][1]
    (bad / f"{stem}.pts").write_text("version: 1\nn_points: 2\n{\n1 1\n2 2\n}\n")
    rc, _, err = run(capsys, "fit", wings["model"], wings["test"], "-o", tmp_path / "o2",
                     "--init", f"pts:{bad}")
    assert rc == 2 and str(bad / f"{stem}.pts") in err and "2 points" in err


@pytest.mark.skipif(not FACES.is_dir(), reason="sample_data/faces not present")
def test_face_detector_start_and_fallback_to_prior(tmp_path, capsys):
    import cv2

    faces = tmp_path / "faces"
    stems = sorted(p.stem for p in FACES.glob("*.pts"))
    faces.mkdir()
    for s in stems[:6]:  # enough for the face-box regression (>= 2 detected)
        shutil.copy(FACES / f"{s}.jpg", faces)
        shutil.copy(FACES / f"{s}.pts", faces)
    model = tmp_path / "faces.npz"
    rc, _, _ = run(capsys, "train", faces, "--face-detector", "-o", model, "--json")
    assert rc == 0 and load_model(model).starts.face is not None
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(FACES / f"{stems[-1]}.jpg", images)
    cv2.imwrite(str(images / "blank.png"), np.full((240, 260), 128, np.uint8))  # no face
    for init in ("auto", "detect"):
        rc, stdout, _ = run(capsys, "fit", model, images, "-o", tmp_path / init, "--json",
                            "--init", init)
        assert rc == 0
        recs = {Path(r["image"]).stem: r for r in json.loads(stdout)["images"]}
        assert recs[stems[-1]]["init"] == "detect"
        assert recs["blank"]["init"] == "prior (no face found)"
        assert read_pts(tmp_path / init / "blank.pts").shape == (68, 2)
    # A face detector's box given with --boxes is placed as the model learned for that
    # detector's boxes (it used to be read as the landmarks' bounding box).
    face_img = read_image(images / f"{stems[-1]}.jpg")
    vj_box = FaceDetector().detect(to_grey(face_img))[0]
    boxes = tmp_path / "vj.json"
    boxes.write_text(json.dumps({stems[-1]: vj_box.tolist()}))
    rc, stdout, _ = run(capsys, "fit", model, images, "-o", tmp_path / "boxed", "--json",
                        "--boxes", boxes)
    assert rc == 0
    rec = next(r for r in json.loads(stdout)["images"] if Path(r["image"]).stem == stems[-1])
    assert rec["init"] == "detector box"
    api = load_model(model).fit(face_img, "box", box=vj_box, box_kind="detector")
    np.testing.assert_allclose(read_pts(rec["output"]), api.points, atol=1e-3)
    # a model without the face start refuses --init detect, naming the model file
    plain = tmp_path / "plain.npz"
    assert run(capsys, "train", faces, "-o", plain, "--json")[0] == 0
    rc, _, err = run(capsys, "fit", plain, images, "-o", tmp_path / "x", "--init", "detect")
    _assert_user_error(rc, err, plain, "--face-detector")


def test_evaluate_json_matches_evaluate_module(wings, tmp_path, capsys):
    data = tmp_path / "heldout"
    shutil.copytree(wings["test"], data)
    for p in wings["truth"].iterdir():
        shutil.copy(p, data)
    fit_out = tmp_path / "fit"
    assert run(capsys, "fit", wings["model"], wings["test"], "-o", fit_out)[0] == 0
    rc, stdout, stderr = run(capsys, "evaluate", wings["model"], data, "--json", "-o",
                             tmp_path / "ev")
    assert rc == 0 and stderr == ""
    doc = json.loads(stdout)
    errs = []
    for r in doc["images"]:
        stem = Path(r["image"]).stem
        truth = read_pts(data / f"{stem}.pts")
        # the same fit (deterministic) written by `fit` and by `evaluate -o`
        e = nme(read_pts(fit_out / f"{stem}.pts"), truth, "diagonal")
        # NME in percent, as everywhere a person reads it
        assert r["nme_pct"] == pytest.approx(100 * e, rel=1e-9)
        assert r["nme_pct"] == pytest.approx(100 * nme(read_pts(r["output"]), truth), rel=1e-9)
        errs.append(e)
    s = summarise(errs)
    assert doc["n_images"] == 2 and doc["norm"] == "auto" and doc["norm_used"] == "diagonal"
    assert doc["mean_nme_pct"] == pytest.approx(100 * s["mean"])
    assert doc["median_nme_pct"] == pytest.approx(100 * s["median"])
    assert doc["max_error_pct"] == 8
    assert doc["auc_pct"] == pytest.approx(100 * auc(errs, 0.08))
    assert doc["failure_rate_pct"] == 0.0
    assert all(k.endswith("_pct") for k in doc
               if "nme" in k or k.startswith(("auc", "failure", "max_error")))
    assert doc["median_fit_ms"] == pytest.approx(np.median([r["fit_ms"] for r in doc["images"]]))
    # the confidence against the truth
    c = doc["confidence"]
    assert c["off_threshold_pct"] == 2 and c["n_landmarks"] == 24
    assert c["predicted_mean_nme_pct"] == pytest.approx(
        np.mean([r["predicted_nme_pct"] for r in doc["images"]]))
    n_off = sum(r["n_off"] for r in doc["images"])
    assert c["off_share_pct"] == pytest.approx(100 * n_off / 24)
    assert c["mean_p_off_pct"] == pytest.approx(
        100 * np.mean([p for r in doc["images"] for p in r["confidence"]["p_off"]]), abs=0.01)
    for r in doc["images"]:
        pts = read_pts(r["output"])
        assert r["predicted_nme_pct"] == pytest.approx(
            100 * np.mean(r["confidence"]["error_px"]) / np.hypot(*np.ptp(pts, 0)), rel=1e-3)
    # pair normaliser: errors scale by diagonal / pair distance
    rc, stdout, _ = run(capsys, "evaluate", wings["model"], data, "--json", "--norm", "pair:0,1")
    pair = json.loads(stdout)
    for r_d, r_p in zip(doc["images"], pair["images"]):
        t = read_pts(data / f"{Path(r_d['image']).stem}.pts")
        ratio = np.hypot(*np.ptp(t, 0)) / np.hypot(*(t[0] - t[1]))
        assert r_p["nme_pct"] == pytest.approx(r_d["nme_pct"] * ratio, rel=1e-9)
    # human-readable output: the same percentages
    rc, stdout, _ = run(capsys, "evaluate", wings["model"], data)
    assert rc == 0 and "AUC@8 %" in stdout
    assert f"mean NME        {doc['mean_nme_pct']:.3f} %" in stdout
    assert f"median NME      {doc['median_nme_pct']:.3f} %" in stdout
    assert f"predicted NME   {c['predicted_mean_nme_pct']:.3f} %" in stdout
    # the cut-off is a percentage too: between the two images' errors, one fails
    lo, hi = sorted(r["nme_pct"] for r in doc["images"])
    rc, stdout, _ = run(capsys, "evaluate", wings["model"], data, "--json", "--max-error",
                        (lo + hi) / 2)
    assert json.loads(stdout)["failure_rate_pct"] == pytest.approx(50.0)
    # 'eyes' needs 68 points
    rc, _, err = run(capsys, "evaluate", wings["model"], data, "--norm", "eyes")
    assert rc == 2 and "68" in err


def _assert_user_error(rc, err, *names):
    """One line "napari-gsm: error: <names[0]>[:line]: <what is wrong>", for people: no Python
    class names, error numbers or numpy advice."""
    assert rc == 2
    assert re.match(rf"napari-gsm: error: {re.escape(str(names[0]))}(:\d+)?: ", err), err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not re.search(r"Error\b|Exception|Errno|pickle", err.replace(str(names[0]), "")), err
    for n in names:
        assert str(n) in err


def test_user_errors_exit_2_naming_the_file(wings, tmp_path, capsys):
    out = tmp_path / "o"
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(wings["model"].read_bytes()[:300])
    _assert_user_error(*run(capsys, "fit", corrupt, wings["test"], "-o", out)[::2], corrupt)
    not_a_model = tmp_path / "text.npz"
    not_a_model.write_text("hello")
    _assert_user_error(*run(capsys, "evaluate", not_a_model, wings["train"])[::2], not_a_model)
    _assert_user_error(*run(capsys, "fit", tmp_path / "none.npz", wings["test"], "-o", out)[::2],
                       tmp_path / "none.npz")

    boxes = tmp_path / "boxes.json"
    boxes.write_text('{"63015": [1, 2, 3,')
    _assert_user_error(*run(capsys, "fit", wings["model"], wings["test"], "-o", out,
                            "--boxes", boxes)[::2], boxes)
    boxes.write_text('{"63015": [10, 20, 5, 30]}')  # x1 < x0
    _assert_user_error(*run(capsys, "fit", wings["model"], wings["test"], "-o", out,
                            "--boxes", boxes)[::2], boxes, "63015")

    missing = tmp_path / "nope.jpg"
    _assert_user_error(*run(capsys, "fit", wings["model"], missing, "-o", out)[::2], missing)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    _assert_user_error(*run(capsys, "fit", wings["model"], broken, "-o", out)[::2], broken)

    bad_pts = tmp_path / "badpts"
    shutil.copytree(wings["train"], bad_pts)
    victim = sorted(bad_pts.glob("*.pts"))[3]
    victim.write_text("version: 1\nn_points: 12\n{\n1 x\n}\n")
    _assert_user_error(*run(capsys, "train", bad_pts, "-o", tmp_path / "m.npz")[::2], victim)
    _assert_user_error(*run(capsys, "train", tmp_path / "absent", "-o", tmp_path / "m.npz")[::2],
                       tmp_path / "absent")
    if FACES.is_dir():  # a 68-point folder against the 12-point model
        faces = tmp_path / "faces"
        faces.mkdir()
        for suffix in (".jpg", ".pts"):
            shutil.copy(FACES / f"image_0372{suffix}", faces)
        _assert_user_error(*run(capsys, "evaluate", wings["model"], faces)[::2], faces, "68")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    _assert_user_error(*run(capsys, "fit", wings["model"], wings["test"], "-o", a_file)[::2],
                       a_file, "not a folder")
    _assert_user_error(*run(capsys, "train", wings["train"], "--method", "gsm3d", "--mean3d",
                            tmp_path / "no.npy", "-o", tmp_path / "m.npz")[::2],
                       tmp_path / "no.npy")
    if Path("/proc/self").is_dir():  # a folder nobody can write to, root included
        _assert_user_error(*run(capsys, "train", wings["train"], "-o", "/proc/m.npz")[::2],
                           "/proc/m.npz")
    assert not out.exists() or not any(out.iterdir())  # nothing written on an error


def test_corrupt_model_is_named_as_not_a_model(wings, tmp_path, capsys):
    """Whatever the damage, the message names the file, says it is not a napari-gsm
    model and never suggests loading it with pickles allowed."""
    rng = np.random.default_rng(1)
    head = {"format": "napari-gsm-model", "format_version": 1, "meta": {}}
    meta = np.frombuffer(json.dumps(head).encode(), np.uint8)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("notes.txt", "not arrays")
    objects = io.BytesIO()
    np.savez(objects, __meta__=meta, evil=np.array([{"x": 1}], dtype=object))
    single = io.BytesIO()
    np.save(single, np.ones(3))
    files = {"random.npz": rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
             "zip.npz": zipped.getvalue(), "objects.npz": objects.getvalue(),
             "array.npy": single.getvalue()}
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        rc, _, err = run(capsys, "fit", path, wings["test"], "-o", tmp_path / "o")
        _assert_user_error(rc, err, path, "not a napari-gsm model")


class _Terminal(io.StringIO):
    """stderr as a terminal: progress bars are drawn."""

    def isatty(self):
        return True


def test_training_progress_is_one_bar_labelled_with_the_stage(wings, tmp_path, monkeypatch):
    """GSM-CR on a terminal: one bar from the detectors to the last cascade level, counting
    all levels' images, cleared only at the end (never blank between stages)."""
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert main(["train", str(wings["train"]), "--method", "gsm-cr", "-o",
                 str(tmp_path / "cr.npz")]) == 0
    frames = [f for f in term.getvalue().split("\r") if f]
    assert all(f.strip() for f in frames[:-1]) and not frames[-1].strip()
    assert frames[0].startswith("detectors:")
    levels = [re.match(r"cascade level (\d)/5: +\d+%\|.*\| (\d+)/(\d+) ", f) for f in frames
              if f.startswith("cascade")]
    assert all(levels) and {m[1] for m in levels} == set("12345")
    counts = [int(m[2]) for m in levels]
    assert counts == sorted(counts) and levels[-1].group(2, 3) == ("40", "40")  # 5 x 8 images


def test_progress_lines_when_stderr_is_not_a_terminal(wings, tmp_path, capsys, monkeypatch):
    """In a log or a pipe: one line per report here (interval 0), stage, done/total and
    elapsed time on stderr; stdout keeps exactly the JSON document."""
    monkeypatch.setenv("NAPARI_GSM_PROGRESS_SECONDS", "0")
    line = r"napari-gsm {}: {} (\d+)/(\d+) \(\d+ %\), \d\d:\d\d elapsed"
    rc, stdout, err = run(capsys, "train", wings["train"], "--method", "gsm-cr", "-o",
                          tmp_path / "cr.npz", "--json")
    assert rc == 0 and json.loads(stdout)["method"] == "gsm-cr"
    stages = "(detectors|cascade level [1-5]/5|confidence calibration)"
    assert all(re.fullmatch(line.format("train", stages), t) for t in err.splitlines()), err
    assert "train: detectors 8/8 (100 %)" in err and "cascade level 5/5 40/40 (100 %)" in err
    for command, args in (("fit", ("-o", tmp_path / "fits", "--json")),
                          ("evaluate", ("--json",))):
        data = wings["test"] if command == "fit" else wings["train"]
        rc, stdout, err = run(capsys, command, wings["model"], data, *args)
        assert rc == 0 and json.loads(stdout)
        n = 2 if command == "fit" else 8
        done = [re.fullmatch(line.format(command, "fitting"), t) for t in err.splitlines()]
        assert all(done) and [int(m[1]) for m in done] == list(range(1, n + 1)), err
        assert {int(m[2]) for m in done} == {n}


def test_progress_lines_every_interval():
    """Off a terminal a line at most every `interval` seconds, and the last one of a
    stage once some line was printed; a short job prints nothing."""
    from napari_gsm.cli._progress import Progress

    now = [0.0]
    out = io.StringIO()
    p = Progress("fit", stream=out, interval=10, clock=lambda: now[0])
    for done in range(1, 101):
        now[0] = done * 0.3  # 30 s in all
        p(done, 100, "fitting")
    lines = out.getvalue().splitlines()
    assert [t.split()[3] for t in lines] == ["34/100", "68/100", "100/100"]
    assert lines[-1] == "napari-gsm fit: fitting 100/100 (100 %), 00:30 elapsed"
    quick = io.StringIO()
    p = Progress("fit", stream=quick, interval=10, clock=lambda: 0.0)
    for done in range(1, 11):
        p(done, 10, "fitting")
    assert quick.getvalue() == ""


def _files(folder):
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")
            if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``demo --no-viewer`` run twice into the same folder: the files after the first run,
    and the second run's folder and printout."""
    if not (FACES.is_dir() and WINGS.is_dir()):
        pytest.skip("sample data not present")
    out = tmp_path_factory.mktemp("demo") / "demo"
    first = None
    for _ in range(2):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["demo", "--no-viewer", "--out", str(out)]) == 0
        first = first or _files(out)
    return {"out": out, "stdout": buf.getvalue(), "first": first,
            "held": {name: sorted(p.stem for p in (REPO / "sample_data" / name).glob("*.pts"))[-2:]
                     for name in ("faces", "wings")}}


def test_demo_writes_fits_overlays_and_prints_nme_in_percent(demo):
    out = demo["out"]
    for name, stems in demo["held"].items():
        assert (out / f"{name}-model.npz").is_file()
        for s in stems:
            pred = read_pts(out / "fits" / name / f"{s}.pts")
            truth = read_pts(REPO / "sample_data" / name / f"{s}.pts")
            assert pred.shape == truth.shape and not np.array_equal(pred, truth)
            err = nme(pred, truth)
            assert err < 0.2  # a fit, not noise
            png = out / "overlays" / f"{name}-{s}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            row = next(line.split() for line in demo["stdout"].splitlines()
                       if line.startswith(name) and s in line)
            # the table's NME is a percentage (.pts rounding moves the last digit at most)
            assert float(row[-2]) == pytest.approx(100 * err, abs=0.02)
        # the training images' annotations are copied unchanged next to the fits
        train_stem = sorted(p.stem for p in (REPO / "sample_data" / name).glob("*.pts"))[0]
        np.testing.assert_array_equal(read_pts(out / name / f"{train_stem}.pts"),
                                      read_pts(REPO / "sample_data" / name / f"{train_stem}.pts"))
    assert "NME %" in demo["stdout"]


def test_demo_project_opens_on_a_fitted_image(demo):
    """The held-out images are fitted drafts, not accepted annotations, and the first
    image still to annotate (where the widget opens) is one of them."""
    from napari_gsm.ui.project import FITTED, Project

    for name, stems in demo["held"].items():
        project = Project(demo["out"] / name)
        for s in stems:
            i = project.stems.index(s)
            assert not project.is_annotated(i) and project.status(i) == "fitted"
            assert not (demo["out"] / name / f"{s}.pts").exists()
            st = project.state(i)
            assert (st.states == FITTED).all()
            fit = read_pts(demo["out"] / "fits" / name / f"{s}.pts")
            np.testing.assert_allclose(st.points, fit, atol=1e-3)
        first = project.next_unannotated(after=-1)
        assert project.stems[first] in stems and project.status(first) == "fitted"
        assert project.n_annotated == len(project) - 2


def test_demo_rerun_replaces_its_own_output(demo, tmp_path, capsys):
    second = _files(demo["out"])
    assert not [f for f in second if "~" in f], "no numbered backups"
    assert set(second) == set(demo["first"])
    assert sum(second.values()) <= 1.001 * sum(demo["first"].values())
    assert (demo["out"] / ".napari-gsm-demo").is_file()
    # a folder the demo did not make is never emptied
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    rc, _, err = run(capsys, "demo", "--no-viewer", "--out", mine)
    _assert_user_error(rc, err, mine, "--out")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_console_script_subprocess(wings, tmp_path):
    exe = Path(sys.executable).parent / "napari-gsm"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "napari_gsm.cli"]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(cmd + ["fit", str(wings["model"]), str(wings["test"]), "-o",
                                 str(tmp_path / "o"), "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["images"]) == 2
    proc = subprocess.run(cmd + ["fit", str(tmp_path / "missing.npz"), str(wings["test"]), "-o",
                                 str(tmp_path / "o")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2 and "missing.npz" in proc.stderr
    assert "Traceback" not in proc.stderr

"""The annotation project's state (no viewer): undo, pins, drafts, guided placement, accept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_gsm.io import read_pts, read_tps, write_pts
from napari_gsm.ui.project import CHECKED, FITTED, MISSING, PINNED, ImageState, Project


def _make_project(tmp_path, n_images=4, annotated=(0, 1), v=5):
    """Tiny synthetic project: grey PNGs, ``v`` landmarks, some images annotated."""
    import cv2

    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    truth = {}
    for i in range(n_images):
        img = (rng.random((40, 60)) * 255).astype(np.uint8)
        cv2.imwrite(str(tmp_path / f"im{i}.png"), img)
        pts = rng.uniform(5, 35, (v, 2))
        truth[f"im{i}"] = pts
        if i in annotated:
            write_pts(tmp_path / f"im{i}.pts", pts)
    (tmp_path / "landmarks.txt").write_text("\n".join(f"L{k}" for k in range(v)) + "\n")
    return truth


def test_open_and_names(tmp_path):
    truth = _make_project(tmp_path)
    p = Project(tmp_path)
    assert p.names == [f"L{k}" for k in range(5)]
    assert p.stems == ["im0", "im1", "im2", "im3"]
    assert [p.is_annotated(i) for i in range(4)] == [True, True, False, False]
    st = p.state(0)
    np.testing.assert_array_equal(st.points, truth["im0"])
    assert (st.states == CHECKED).all() and not st.dirty
    assert p.next_unannotated(after=0) == 2
    assert p.fit_candidates() == [2, 3]


def test_unknown_landmark_count(tmp_path):
    _make_project(tmp_path, annotated=())
    (tmp_path / "landmarks.txt").unlink()
    with pytest.raises(ValueError, match="number of landmarks"):
        Project(tmp_path)
    assert Project(tmp_path, n_landmarks=3).names == ["1", "2", "3"]


def test_skip_keeps_labels_and_missing_is_nan():
    st = ImageState.empty("a", 4)
    assert st.current == 0
    st.apply_layer([-1], [[1.0, 2.0]])          # click: landmark 0
    assert st.current == 1
    st.step_target(+1)                           # skip landmark 1
    assert st.current == 2
    st.apply_layer([0, -1], [[1.0, 2.0], [5.0, 6.0]])   # click: landmark 2, not 1
    np.testing.assert_array_equal(st.points[2], [5.0, 6.0])
    assert np.isnan(st.points[1]).all() and st.states[1] == MISSING
    assert st.current == 3
    st.apply_layer([0, 2, -1], [[1.0, 2.0], [5.0, 6.0], [7.0, 8.0]])
    assert st.current == 1                       # wraps back to the skipped one
    st.step_target(-1)
    assert st.current == 0
    assert list(st.states) == [PINNED, MISSING, PINNED, PINNED]


def test_moved_points_are_pinned_and_undo_redo():
    st = ImageState.empty("a", 3)
    fit = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    st.set_fit(fit)
    assert list(st.states) == [FITTED] * 3 and not st.pinned.any()
    moved = fit.copy()
    moved[1] = [9.5, 9.25]
    assert st.apply_layer([0, 1, 2], moved)
    assert list(st.states) == [FITTED, PINNED, FITTED]
    np.testing.assert_array_equal(st.pinned, [False, True, False])
    assert not st.apply_layer([0, 1, 2], moved)  # no change, no undo step
    # A re-fit keeps the pinned point's state, everything else becomes fitted.
    st.set_fit(moved + [[0.5, 0], [0, 0], [0.5, 0]], keep=st.pinned)
    assert list(st.states) == [FITTED, PINNED, FITTED]
    assert st.undo()
    np.testing.assert_array_equal(st.points, moved)
    assert st.undo()
    np.testing.assert_array_equal(st.points, fit)
    assert list(st.states) == [FITTED] * 3
    assert st.undo() and np.isnan(st.points).all()
    assert not st.undo()
    assert st.redo() and st.redo()
    np.testing.assert_array_equal(st.points, moved)
    # Removing a point from the layer removes the landmark.
    st.apply_layer([0, 2], moved[[0, 2]])
    assert np.isnan(st.points[1]).all() and st.states[1] == MISSING


def test_toggle_pin():
    st = ImageState.empty("a", 3)
    st.set_fit(np.ones((3, 2)))
    st.toggle_pin([0, 2])
    assert list(st.states) == [PINNED, FITTED, PINNED]
    st.toggle_pin([0, 2])
    assert list(st.states) == [FITTED] * 3


def test_drafts_survive_a_restart(tmp_path):
    _make_project(tmp_path)
    p = Project(tmp_path)
    p.go(2)
    st = p.state()
    st.apply_layer([-1], [[3.25, 4.5]])
    st.step_target(+1)
    st.apply_layer([0, -1], [[3.25, 4.5], [10.0, 11.0]])
    p.go(3)  # switching autosaves
    draft = tmp_path / ".napari-gsm" / "drafts" / "im2.pts"
    assert draft.exists()
    assert json.loads(draft.with_suffix(".json").read_text())["states"][:3] == [PINNED, "", PINNED]
    # "Crash": a fresh project object restores the edits exactly, with their states.
    q = Project(tmp_path)
    assert q.status(2) == "edited"
    st2 = q.state(2)
    np.testing.assert_array_equal(st2.points[[0, 2]], [[3.25, 4.5], [10.0, 11.0]])
    assert np.isnan(st2.points[[1, 3, 4]]).all()
    assert list(st2.states) == [PINNED, MISSING, PINNED, MISSING, MISSING]
    assert st2.current == st.current
    # Undoing back to the saved state removes the draft.
    p.go(2)
    while p.state().undo():
        pass
    assert p.autosave() is None and not draft.exists()


def test_accept_writes_pts_with_backup(tmp_path):
    truth = _make_project(tmp_path)
    p = Project(tmp_path)
    p.go(2)
    st = p.state()
    with pytest.raises(ValueError, match="L0"):
        p.accept()
    st.set_fit(truth["im2"])
    p.autosave()
    path, was_new = p.accept()
    assert was_new and path == tmp_path / "im2.pts"
    np.testing.assert_array_equal(read_pts(path), truth["im2"])
    assert not (tmp_path / ".napari-gsm" / "drafts" / "im2.pts").exists()
    assert p.is_annotated(2) and (p.state().states == CHECKED).all() and not p.state().dirty
    # Accepting again after an edit keeps the previous version as a numbered backup.
    st.set_point(1, [20.5, 21.5])
    _, was_new = p.accept()
    assert not was_new
    np.testing.assert_array_equal(read_pts(tmp_path / "im2.pts")[1], [20.5, 21.5])
    np.testing.assert_array_equal(read_pts(tmp_path / "im2.pts.~1~"), truth["im2"])
    assert p.snapshot().n_landmarks == 5 and len(p.snapshot().items) == 3


def test_export(tmp_path):
    truth = _make_project(tmp_path / "proj")
    p = Project(tmp_path / "proj")
    out = p.export(tmp_path / "out")
    assert [f.name for f in out] == ["im0.pts", "im1.pts", "proj.tps"]
    for stem in ("im0", "im1"):
        np.testing.assert_array_equal(read_pts(tmp_path / "out" / f"{stem}.pts"), truth[stem])
    specs = read_tps(out[-1], image_height=40)
    assert [s.id for s in specs] == ["im0", "im1"]
    np.testing.assert_array_equal(specs[1].points, truth["im1"])

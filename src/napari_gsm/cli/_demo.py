"""``napari-gsm demo``: train on the bundled sample sets, fit held-out images, open napari.

Nothing here imports napari, except the last step that opens the viewer.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from ._inputs import Starts
from ._output import CLIError, percent

#: The file that marks a folder as the demo's own: the next run may delete that folder.
MARKER = ".napari-gsm-demo"


def sample_root():
    """The bundled ``sample_data`` folder (``faces/``, ``wings/``)."""
    try:
        # Qt-free: napari_gsm.ui and ui.sample_data import napari only inside functions.
        from ..ui.sample_data import sample_data_dir

        return sample_data_dir()
    except (ImportError, FileNotFoundError):
        root = Path(__file__).resolve().parents[3] / "sample_data"
        if not (root / "faces").is_dir():
            raise CLIError(f"{root}: sample data not found") from None
        return root


#: The demo's sample sets: folder, train the face detector start, how the held-out
#: images are started.
DEMO_SETS = (("faces", True, "auto"), ("wings", False, "prior"))

# BGR colours of the overlay
_GREEN, _RED, _BLUE = (40, 200, 40), (30, 30, 230), (230, 120, 20)


def _to_bgr8(image):
    import cv2

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = img.astype(float)
        hi = float(np.nanmax(img)) if img.size else 1.0
        img = np.clip(img / (hi if hi > 0 else 1.0) * 255.0, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_RGBA2BGR)
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)


def draw_overlay(image, truth, fit, start, title=""):
    """The image with the truth (green), fit (red) and start (small blue dots), and a
    legend; returns a BGR ``uint8`` array for ``cv2.imwrite``.

    Images smaller than 500 px are enlarged so the landmarks stay distinguishable.
    """
    import cv2

    img = _to_bgr8(image)
    k = max(1.0, 500.0 / max(img.shape[:2]))
    if k > 1:
        img = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_LINEAR)
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px

    def dots(points, colour, radius):
        for x, y in np.asarray(points, float):
            if np.isfinite(x) and np.isfinite(y):
                # +0.5: pixel centres (0-based) to OpenCV's continuous coordinates
                c = (int(round((x + 0.5) * k * 16 - 8)), int(round((y + 0.5) * k * 16 - 8)))
                cv2.circle(img, c, radius * 16, colour, -1, cv2.LINE_AA, shift)

    if start is not None:
        dots(start, _BLUE, 2)
    dots(truth, _GREEN, 3)
    dots(fit, _RED, 3)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    rows = [("truth", _GREEN), ("fit", _RED), ("start", _BLUE)]
    h = 20 * len(rows) + 8 + (20 if title else 0)
    w = 150 if not title else max(150, 12 + cv2.getTextSize(title, font, scale, 1)[0][0])
    cv2.rectangle(img, (4, 4), (4 + w, 4 + h), (255, 255, 255), -1)
    cv2.rectangle(img, (4, 4), (4 + w, 4 + h), (90, 90, 90), 1)
    y = 22
    if title:
        cv2.putText(img, title, (10, y), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
        y += 20
    for name, colour in rows:
        cv2.circle(img, (18, y - 5), 5, colour, -1, cv2.LINE_AA)
        cv2.putText(img, name, (30, y), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
        y += 20
    return img


def _write_png(path, bgr):
    import cv2

    from ..io import atomic_write_bytes

    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError(f"{path}: could not encode the PNG")
    return atomic_write_bytes(path, buf.tobytes(), backup=False)


def fresh_output(out):
    """Make ``out`` an empty folder of the demo's own and return it.

    A folder holding :data:`MARKER` was made by an earlier run and is emptied (so re-runs
    do not pile up backups); an empty folder is taken; any other existing folder is left
    alone and refused, since the demo must never delete what it did not make.
    """
    out = Path(out)
    if out.is_dir() and (out / MARKER).is_file():
        # its content, not the folder itself, which may be a link to another disk
        for entry in out.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    elif out.exists() and not out.is_dir():
        raise CLIError(f"{out}: exists and is not a folder; choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise CLIError(f"{out}: this folder is not empty and was not written by the demo (it "
                       f"has no {MARKER} file); choose another --out or remove the folder")
    out.mkdir(parents=True, exist_ok=True)
    # First, so that even a run that fails half-way leaves a folder the next run replaces.
    (out / MARKER).write_text("Written by `napari-gsm demo`; the next demo run into this "
                              "folder deletes everything in it.\n", encoding="utf-8")
    return out


def run_demo_sets(out):
    """Train on each sample set minus its last 2 images, fit those, write the results.

    ``out`` is emptied first (see :func:`fresh_output`). Its layout: ``<set>/`` a copy of
    the sample set as an annotation project in which the held-out images are not
    annotated but hold the fits as drafts (the widget lists them as fitted, ``~``, and
    opens on the first); ``fits/<set>/<stem>.pts`` the same fits as 300-W files;
    ``<set>-model.npz``; ``overlays/<set>-<stem>.png``.

    Returns
    -------
    list of dict
        One row per fitted image: set, image, init, nme (a fraction of the normaliser),
        fit_ms, pts, png, and per set the project folder and model path.
    """
    from ..evaluate import nme
    from ..io import NAMES_FILE, Dataset, load_dataset, write_pts
    from ..model import TrainParams, train
    from ..ui.project import Project  # Qt-free

    root = sample_root()
    out = fresh_output(out)
    (out / "overlays").mkdir()
    rows = []
    for name, face_detector, init in DEMO_SETS:
        ds = load_dataset(root / name)
        items = ds.annotated
        if len(items) < 4:
            raise CLIError(f"{root / name}: the demo needs at least 4 annotated images")
        train_items, held = items[:-2], items[-2:]
        project_dir, fits_dir = out / name, out / "fits" / name
        project_dir.mkdir()
        fits_dir.mkdir(parents=True)
        if (root / name / NAMES_FILE).is_file():
            shutil.copyfile(root / name / NAMES_FILE, project_dir / NAMES_FILE)
        for it in items:
            shutil.copyfile(it.image_path, project_dir / it.image_path.name)
        for it in train_items:
            shutil.copyfile(it.pts_path, project_dir / it.pts_path.name)
        t0 = time.perf_counter()
        model = train(Dataset(ds.root, train_items, ds.landmark_names), "gsm",
                      params=TrainParams(features="hog", face_detector=face_detector))
        train_s = time.perf_counter() - t0
        model_path = model.save(out / f"{name}-model.npz")
        starts = Starts(model, model_path, init, None, [it.stem for it in held])
        project = Project(project_dir)
        for it in held:
            image = it.load_image()
            result, label = starts.fit(image, it.stem)
            i = project.stems.index(it.stem)
            project.state(i).set_fit(result.points)
            project.autosave(i)  # a draft of fitted landmarks: "fitted", not accepted
            pts = write_pts(fits_dir / f"{it.stem}.pts", result.points)
            err = nme(result.points, it.points)
            png = _write_png(out / "overlays" / f"{name}-{it.stem}.png",
                             draw_overlay(image, it.points, result.points, result.start,
                                          f"{name}/{it.stem}  NME {percent(err):.2f} %"))
            rows.append({"set": name, "image": it.stem, "init": label, "nme": err,
                         "fit_ms": float(result.fit_ms), "n_train": len(train_items),
                         "train_s": train_s, "pts": pts, "png": png, "project": project_dir,
                         "model": model_path})
    return rows


def _has_display():
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _open_viewer(project, model_path):
    """napari with the project in the annotation widget, on its first unannotated image."""
    try:
        import napari
    except ImportError:
        raise CLIError("napari is not installed: pip install 'napari-gsm[napari]', "
                       "or run the demo with --no-viewer") from None
    from ..ui.launch import launch

    launch(project, model_path)  # returns the viewer; napari.run() shows it
    napari.run()


def cmd_demo(args):
    t0 = time.perf_counter()
    rows = run_demo_sets(args.out)
    seconds = time.perf_counter() - t0
    out = Path(args.out)
    width = max(len(r["image"]) for r in rows)
    print("napari-gsm demo: GSM (HoG) trained on each sample set minus its last 2 images")
    print(f"{'set':<6} {'image':<{width}}  {'start':<21} {'NME %':>6} {'fit ms':>7}")
    for r in rows:
        print(f"{r['set']:<6} {r['image']:<{width}}  {r['init']:<21} {percent(r['nme']):6.2f} "
              f"{r['fit_ms']:7.1f}")
    print("NME %: mean landmark error in percent of the outer-eye distance (faces) or of the "
          "bounding-box diagonal (wings)")
    trained = {r["set"]: (r["n_train"], r["train_s"]) for r in rows}
    print("training: " + ", ".join(f"{k} {n} images in {t:.1f} s"
                                   for k, (n, t) in trained.items()))
    print(f"wrote in {seconds:.1f} s: {out}/<set>/ (annotation projects: the held-out images "
          f"hold the fits as drafts to review), {out}/fits/<set>/<image>.pts, "
          f"{out}/<set>-model.npz and {len(rows)} overlays in {out}/overlays/ (truth green, "
          "fit red, start blue)")
    if args.no_viewer:
        return 0
    if not _has_display():
        print("no display (DISPLAY/WAYLAND_DISPLAY unset): not opening napari")
        return 0
    first = rows[0]
    print(f"opening napari on {first['project']} ...")
    _open_viewer(first["project"], first["model"])
    return 0

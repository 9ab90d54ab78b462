"""What the commands read besides the model: image lists, box files, and each image's start."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ._output import CLIError, warn


def expand_images(inputs):
    """Image paths from files and folders (a folder's images, sorted, not recursive)."""
    from ..io import IMAGE_SUFFIXES as suffixes

    out = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")
                           and q.suffix.lower() in suffixes)
            if not found:
                raise CLIError(f"{p}: no images in this folder ({', '.join(suffixes)})")
            out.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in suffixes:
                raise CLIError(f"{p}: not an image file (expected one of {', '.join(suffixes)})")
            out.append(p)
        else:
            raise CLIError(f"{p}: no such image file or folder")
    seen = {}
    for p in out:
        if p.stem in seen:
            raise CLIError(f"{p}: same name as {seen[p.stem]}; both would be written to "
                           f"{p.stem}.pts")
        seen[p.stem] = p
    return out


def annotations_beside(images):
    """``{image path: its annotation}`` for the images with a same-stem ``.pts`` beside
    them, matched as :func:`napari_gsm.io.load_dataset` matches them (any case of the
    suffix, hidden files ignored)."""
    in_folder, out = {}, {}
    for image in images:
        folder = image.parent
        if folder not in in_folder:
            in_folder[folder] = {p.stem: p for p in folder.iterdir()
                                 if p.suffix.lower() == ".pts" and not p.name.startswith(".")
                                 and p.is_file()}
        pts = in_folder[folder].get(image.stem)
        if pts is not None:
            out[image] = pts
    return out


def read_boxes(path):
    """``{stem: (x0, y0, x1, y1)}`` from a BOXES.json file, validated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CLIError(f"{path}: no such boxes file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"{path}: cannot read the boxes file ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise CLIError(f"{path}: expected a JSON object mapping image stems to "
                       "[x0, y0, x1, y1]")
    boxes = {}
    for stem, box in doc.items():
        ok = (isinstance(box, list) and len(box) == 4
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box))
        if ok:
            box = np.asarray(box, float)
            ok = bool(np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1])
        if not ok:
            raise CLIError(f"{path}: box for {stem!r} must be [x0, y0, x1, y1] with "
                           f"x1 > x0 and y1 > y0, got {json.dumps(doc[stem])[:60]}")
        boxes[str(stem)] = box
    return boxes


def init_arg(text):
    """argparse type for --init."""
    if text in ("auto", "detect", "prior", "box"):
        return text
    if text.startswith("pts:") and len(text) > 4:
        return text
    raise argparse.ArgumentTypeError(
        f"invalid --init {text!r}: use auto, detect, prior, box or pts:DIR")


def norm_arg(text):
    """argparse type for --norm."""
    from ..evaluate import parse_norm

    try:
        return parse_norm(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text):
    """argparse type for a whole number > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def positive_float(text):
    """argparse type for a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


class Starts:
    """How each image's start is chosen: boxes, points files, face detector or prior.

    ``stems`` are the images that will be fitted: ``--init box`` needs a box for each,
    ``--init pts:DIR`` a points file for each. ``box_kind`` says what the boxes are (see
    :meth:`napari_gsm.model.Model.start`); None: a face detector's ('detector') when the
    model learned where such boxes put the shape, else the landmarks' bounding boxes.
    ``off_fraction`` is the fits' off threshold (``Model.fit``; None: the default).
    """

    def __init__(self, model, model_path, init, boxes_path, stems, box_kind=None,
                 off_fraction=None):
        self.model, self.init, self.off_fraction = model, init, off_fraction
        if box_kind is None:
            box_kind = "detector" if model.starts.face is not None else "landmarks"
        if box_kind == "detector" and model.starts.face is None:
            raise CLIError(f"{model_path}: this model has not learned where a face detector's "
                           "box puts the shape (train with --face-detector or --boxes), so "
                           "--box-kind detector cannot be used")
        self.box_kind = box_kind
        self.boxes = read_boxes(boxes_path) if boxes_path else {}
        self.points = {}
        if init == "box":
            if not boxes_path:
                raise CLIError("--init box needs --boxes BOXES.json")
            missing = [s for s in stems if s not in self.boxes]
            if missing:
                raise CLIError(f"{boxes_path}: no box for {missing[0]!r} "
                               f"({len(missing)} image(s) without a box)")
        if init == "detect" and model.starts.face_source != "viola-jones":
            raise CLIError(f"{model_path}: this model was not trained with the face detector "
                           + ("(train with --face-detector)" if model.starts.face is None else
                              "but with given detector boxes: give that detector's boxes "
                              "(--boxes, --box-kind detector)")
                           + ", so --init detect cannot be used")
        if init.startswith("pts:"):
            self._read_points(Path(init[4:]), stems)
        unused = sorted(set(self.boxes) - set(stems))
        if unused:
            warn(f"{boxes_path}: {len(unused)} box(es) match no image to fit "
                 f"(e.g. {unused[0]!r})")

    def _read_points(self, folder, stems):
        from ..io import read_pts

        if not folder.is_dir():
            raise CLIError(f"{folder}: no such folder of start .pts files")
        v = self.model.n_landmarks
        for stem in stems:
            path = folder / f"{stem}.pts"
            pts = read_pts(path, missing="negative")
            if len(pts) != v:
                raise CLIError(f"{path}: has {len(pts)} points, the model has {v} landmarks")
            if np.isfinite(pts).all(1).sum() < 2:
                raise CLIError(f"{path}: needs at least two placed points to start from")
            self.points[stem] = pts

    def start(self, stem):
        """The :class:`~napari_gsm.distributed.Start` of the image ``stem``: its points
        file, else its box, else ``--init``."""
        from ..distributed import Start

        return Start(self.init, self.boxes.get(stem), self.points.get(stem), self.box_kind,
                     self.off_fraction)

    def fit(self, image, stem):
        """Fit one image; returns ``(FitResult, start label)``."""
        return self.start(stem).fit(self.model, image)

"""The argument parser and the entry point ``main``."""

from __future__ import annotations

import argparse
import sys

from ._commands import cmd_evaluate, cmd_train
from ._confidence import add_off_threshold
from ._demo import cmd_demo
from ._fit import cmd_fit
from ._inputs import init_arg, norm_arg, positive_float, positive_int
from ._output import PROG, CLIError


def _start_options(parser):
    """--init, --boxes and --box-kind, shared by fit and evaluate."""
    from ..init import BOX_KINDS

    parser.add_argument("--init", type=init_arg, default="auto",
                        metavar="auto|detect|prior|box|pts:DIR",
                        help="start: auto (points/box if given, else face detector if "
                        "trained, else prior), detect, prior, box (needs --boxes), pts:DIR "
                        "(DIR/<stem>.pts)")
    parser.add_argument("--boxes", metavar="BOXES.json",
                        help="JSON {stem: [x0, y0, x1, y1]} (0-based px); overrides the start "
                        "for those images")
    parser.add_argument("--box-kind", choices=BOX_KINDS, default=None,
                        help="what the --boxes are: a face detector's boxes (placed as the "
                        "model learned with --face-detector or --boxes; the default for such "
                        "models) or the landmarks' bounding boxes (the default otherwise)")


def _cluster_options(parser, verb="fit"):
    """--workers and --scheduler: where the images are fitted or trained on (default: this
    process)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=positive_int, metavar="N",
                       help=f"{verb} on N worker processes on this computer (Dask; one core "
                       "each); default: in this process")
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help=f"{verb} on the workers of the Dask scheduler at ADDRESS "
                       "(tcp://host:8786); they need the same napari-gsm and must see the "
                       "images at the same paths")


def build_parser():
    from ..methods import METHODS
    from ..model import FEATURE_CHOICES, TrainParams, feature_choice

    tp = TrainParams()

    p = argparse.ArgumentParser(prog=PROG, description="Semi-automatic landmark annotation "
                                "with the Gradient Shape Model.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model from annotated folders",
                       description="Train a model from folders of images with same-stem "
                       ".pts files.")
    t.add_argument("data", nargs="+", metavar="DATA_DIR")
    # Only the methods registered at run time are offered.
    t.add_argument("--method", default="gsm", choices=sorted(METHODS),
                   help="fitting method (default gsm)")
    t.add_argument("--features", choices=tuple(FEATURE_CHOICES), default=None,
                   help=f"patch features (default {feature_choice(tp)}); hog-signed: HoG with "
                   "signed orientations, 12 channels of 30 degrees; hog: unsigned, 9 channels of "
                   "20 degrees (faster, less accurate on faces and X-rays)")
    t.add_argument("--sigma", type=float, default=None, metavar="S",
                   help="detector target width in grid units (default: hog 1.5, grey 4)")
    t.add_argument("--ref-size", type=float, default=None, metavar="R",
                   help=f"mean shape size in the reference frame, px (default {tp.ref_size:g})")
    t.add_argument("--lam", type=float, default=None, metavar="L",
                   help="shape prior weight lambda (default: chosen on held-out training images)")
    t.add_argument("--face-detector", action="store_true",
                   help="learn to start from OpenCV's face detector (faces only)")
    t.add_argument("--boxes", metavar="TRAIN_BOXES.json",
                   help="JSON {stem: [x0, y0, x1, y1]}: a face detector's boxes on the "
                   "training images; learns where that detector's box puts the shape, so "
                   "fits start from its boxes (fit --boxes, --box-kind detector)")
    t.add_argument("--names", metavar="FILE", help="landmark names, one per line")
    t.add_argument("--mean3d", metavar="FILE",
                   help="gsm3d: a known 3D mean shape (.npy or CSV, one row x y z per "
                   "landmark) instead of recovering it from the annotations")
    t.add_argument("-o", "--output", required=True, metavar="MODEL",
                   help="model file to write (.npz)")
    _cluster_options(t, "train")
    t.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    t.set_defaults(func=cmd_train)

    f = sub.add_parser("fit", help="place landmarks on images",
                       description="Fit a model to images; writes OUT_DIR/<stem>.pts. An "
                       "image whose OUT_DIR/<stem>.pts fit already wrote with this model is "
                       "skipped (a re-run continues where the last one stopped), one fit "
                       "wrote with another model is fitted again, and any other existing "
                       ".pts (an annotation) is left alone unless --overwrite.")
    f.add_argument("model", metavar="MODEL")
    f.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    f.add_argument("-o", "--output", required=True, metavar="OUT_DIR")
    f.add_argument("--unannotated", action="store_true",
                   help="fit only images without an annotation beside them (a same-stem "
                   ".pts that fit did not write)")
    f.add_argument("--overwrite", action="store_true",
                   help="fit every image again: replace existing OUT_DIR/<stem>.pts files "
                   "(each one fit did not write is kept as <stem>.pts.~N~)")
    _start_options(f)
    _cluster_options(f)
    add_off_threshold(f)
    f.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout (fitted and skipped images, each "
                   "fit's per-landmark confidence)")
    f.set_defaults(func=cmd_fit)

    e = sub.add_parser("evaluate", help="fit annotated images and measure the error",
                       description="Fit every annotated image of DATA_DIR and report "
                       "NME (mean landmark error in percent of the normaliser), AUC and "
                       "failure rate.")
    e.add_argument("model", metavar="MODEL")
    e.add_argument("data", metavar="DATA_DIR")
    _start_options(e)
    e.add_argument("--norm", type=norm_arg, default="auto", metavar="auto|eyes|diagonal|pair:I,J",
                   help="normaliser: auto (eyes for 68 points, else diagonal), eyes, "
                   "diagonal, pair:I,J (0-based landmarks)")
    e.add_argument("--max-error", type=positive_float, default=8.0, metavar="PCT",
                   help="AUC and failure cut-off: NME in percent (default 8)")
    add_off_threshold(e)
    e.add_argument("-o", "--output", metavar="OUT_DIR", help="also write the fitted .pts")
    _cluster_options(e)
    e.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout (errors in percent, keys *_pct)")
    e.set_defaults(func=cmd_evaluate)

    d = sub.add_parser("demo", help="train and fit on the bundled sample data, open napari",
                       description="Train on the bundled sample sets, fit held-out images "
                       "and open them in napari. The output folder is the demo's own: a "
                       "re-run replaces it.")
    d.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    d.add_argument("--no-viewer", action="store_true", help="do not open napari")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv=None):
    """Run the command line; returns the exit status (0 ok, 2 user error)."""
    from ..distributed import ClusterError
    from ..io import LandmarkFileError, ModelFileError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, LandmarkFileError, ModelFileError, ClusterError) as exc:
        # LandmarkFileError covers ImageFileError; all name their file.
        message = str(exc)
    except OSError as exc:  # missing folder, unwritable output, ...
        message = (f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror
                   else str(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2

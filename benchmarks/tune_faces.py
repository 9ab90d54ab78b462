"""Settings chosen on held-out *training* faces: the measurements behind the faces defaults.

The tuning faces are ``faces-300w/train`` without the seeded 10 % that the benchmark's
``faces-heldout`` suite tests on (``_common.tuning_items``); of those, a seeded ``--n-val``
are held out here and models are trained on (up to ``--n-train`` of) the rest. Faces start
from their Viola-Jones box as in the benchmark (``run.py``: the detection the model picks,
else the box the placement maps onto the prior start). The LFPW test faces are never read::

    .venv/bin/python benchmarks/tune_faces.py starts        # simulated vs real start errors
    .venv/bin/python benchmarks/tune_faces.py clm           # CLM bandwidth schedules
    .venv/bin/python benchmarks/tune_faces.py cascade --variants '{"levels": 6}' ...
    .venv/bin/python benchmarks/tune_faces.py cascade --fit-variants '{"frame_tol": 0}' ...
    .venv/bin/python benchmarks/tune_faces.py gsm --fit-variants '{}' '{"tol": 0.3}' ...

Each experiment prints a table: mean / median NME in % of the outer-eye-corner distance,
failures and AUC at 8 %, median fit_ms (timings are only comparable within one run).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from napari_gsm.evaluate import nme, summarise  # noqa: E402
from napari_gsm.geometry import shape_size  # noqa: E402
from napari_gsm.methods import METHODS, GSMParams  # noqa: E402
from napari_gsm.model import TrainParams, load_model, train  # noqa: E402


def log(*a):
    print(*a, flush=True)


def split(n_train, n_val, seed=1):
    """``(train, val)`` samples from the tuning faces."""
    items = C.tuning_items()
    order = np.random.default_rng(seed).permutation(len(items))
    val = sorted(order[:n_val])
    fit = sorted(order[n_val:])[:n_train] if n_train else sorted(order[n_val:])
    log(f"loading {len(fit)} training and {len(val)} held-out tuning faces ...")
    return C.load_samples([items[i] for i in fit]), C.load_samples([items[i] for i in val])


def base_model(samples, params, gsm_params=None):
    """GSM model on ``samples`` (cached like ``run.py``'s, under a ``tune-`` name)."""
    gsm_params = gsm_params or GSMParams()
    key = C.key_of({"data": C.files_digest(samples), "params": asdict(params),
                    "gsm_params": asdict(gsm_params), "version": C.package_version(),
                    "code": C.code_digest()})
    path = C.CACHE / "models" / f"tune-gsm-{params.features}-{key}.npz"
    if path.exists():
        log(f"cached {path.name}")
        return load_model(path)
    log(f"training GSM ({params.features}) on {len(samples)} faces ...")
    m = train([(s.grey, s.points) for s in samples], "gsm", params=params,
              gsm_params=gsm_params)
    path.parent.mkdir(parents=True, exist_ok=True)
    m.save(path, backup=False)
    validation = ", ".join(f"{lam}: {C.pct(e, 3)}"
                           for lam, e in m.summary.get("lam_validation", {}).items())
    log(f"  {m.summary['train_seconds']} s, lam {m.gsm_params.lam}, "
        f"validation error per lam (% of the shape size) {validation or 'n/a'}")
    return m


def boxes_for(model, samples):
    """The benchmark's start box per face (see module docstring)."""
    from run import _box_from_start

    cache = C.BoxCache(C.CACHE / "vj_boxes.json")
    out = []
    for s in samples:
        box = model.starts.choose_face(cache.get(s), s.grey.shape)
        if box is None:
            box = _box_from_start(model, model.start(s.grey, "prior")[0])
        out.append(box)
    cache.save()
    return out


def evaluate(model, samples, boxes, **fit_kw):
    errs, ms, _ = evaluate_each(model, samples, boxes, [fit_kw])
    return errs[0], ms[0]


def evaluate_each(model, samples, boxes, fit_kws, extra=None):
    """NMEs, fit_ms and the ``extra[extra]`` values (or the result's attribute ``extra``,
    NaN without either) of the fits from the
    start boxes with each of ``fit_kws``, ``(len(fit_kws), n)`` arrays each. The settings
    take turns on every face, so a change in the machine's load hits them alike."""
    out = np.full((3, len(fit_kws), len(samples)), np.nan)
    for i, (s, b) in enumerate(zip(samples, boxes)):
        for j, kw in enumerate(fit_kws):
            C.flush_caches()
            r = model.fit(s.grey, "box", box=b, box_kind="detector", history=False,
                          confidence=False, **kw)
            more = r.extra[extra] if extra in r.extra else getattr(r, extra or "", np.nan)
            out[:, j, i] = nme(r.points, s.points, "auto"), r.fit_ms, more
    return out


CUTOFF = 0.08


def row(name, errs, ms=None, extra=""):
    s = summarise(errs, CUTOFF)
    t = "" if ms is None else f"{np.median(ms):7.2f}"
    return (f"| {name} | {C.pct(s['mean'], 3)} | {C.pct(s['median'], 3)} | "
            f"{C.pct(s['failure_rate'], 1)} | {C.pct(s['auc'], 1)} | {t} | {extra} |")


HEAD = (f"| setting | mean NME (%) | median NME (%) | failures @{C.pct(CUTOFF, None)} % (%) | "
        f"AUC@{C.pct(CUTOFF, None)} % (%) | median fit_ms | notes |\n"
        "|---|---:|---:|---:|---:|---:|---|")


# -- experiments -----------------------------------------------------------------------
def exp_starts(args):
    """Real detector starts vs the simulated ones GSM-CR and choose_lam draw."""
    fit, val = split(args.n_train, args.n_val)
    model = base_model(fit, TrainParams(face_detector=True))
    st, s0 = model.starts, model.shape.s0
    boxes = boxes_for(model, val)
    cache = C.BoxCache(C.CACHE / "vj_boxes.json")
    detected = [C.matching_box(cache.get(s), s.points) is not None for s in val]
    real = [st.from_face_box(s0, b) for b in boxes]
    rng = np.random.default_rng(0)
    sim = [st.simulate(s0, s.points, s.grey.shape, "face", 1, rng)[0] for s in val]
    # What choose_lam drew before: the residual stds (in box widths) read as shape sizes,
    # the size spread's box-width std read as a log-size std, rotation 0.05.
    std = np.maximum(st.face_std, 0.05)
    from napari_gsm.init import place_mean
    old = [place_mean(s0, s.points.mean(0) + rng.normal(0, std[:2] * shape_size(s.points)),
                      shape_size(s.points) * np.exp(rng.normal(0, std[2])),
                      rng.normal(0, 0.05)) for s in val]

    from napari_gsm.init import start_error

    log(f"\nStart errors on {len(val)} held-out tuning faces ({sum(detected)} with a "
        "detection containing the face): mean point error in % of the true shape's size "
        "(mean, median, 90th percentile), and RMS of the centroid error (% of the shape "
        "size), of the log size ratio and of the angle (degrees)")
    log("| starts | faces | mean (%) | median (%) | 90th percentile (%) | centroid (%) | "
        "log size | angle (degrees) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, starts, keep in (("real (Viola-Jones box, placed)", real, detected),
                               ("real, all faces", real, [True] * len(val)),
                               ("simulated (StartModel.simulate)", sim, [True] * len(val)),
                               ("choose_lam before the fix", old, [True] * len(val))):
        pick = [(a, s) for a, s, k in zip(starts, val, keep) if k]
        e = np.array([np.linalg.norm(a - s.points, axis=1).mean() / shape_size(s.points)
                      for a, s in pick])
        z = np.array([start_error(a, s.points) for a, s in pick])
        rms = np.sqrt((z**2).mean(0))
        log(f"| {name} | {len(e)} | {C.pct(e.mean())} | {C.pct(np.median(e))} | "
            f"{C.pct(np.percentile(e, 90))} | {C.pct(np.hypot(rms[0], rms[1]))} | "
            f"{rms[2]:.4f} | {np.degrees(rms[3]):.1f} |")


def exp_clm(args):
    """CLM annealing schedules (grid steps squared)."""
    fit, val = split(args.n_train, args.n_val)
    model = base_model(fit, TrainParams(face_detector=True))
    boxes = boxes_for(model, val)
    schedules = [json.loads(v) for v in args.variants] or [
        [10, 5, 2, 1, 0.5], [15, 10, 5, 2], [20, 10, 5, 2, 1], [5, 2, 1, 0.5],
        [10, 5, 2, 1], [1.67, 1.11, 0.56, 0.22], [4, 2, 1, 0.5, 0.25]]
    clm = copy.copy(model)
    clm.method = "clm"
    log(f"\nCLM on {len(val)} held-out tuning faces (GSM HoG model, lam {model.gsm_params.lam})")
    log(HEAD)
    e, ms = evaluate(model, val, boxes)
    log(row("GSM HoG (reference)", e, ms))
    for sch in schedules:
        e, ms = evaluate(clm, val, boxes, bandwidths=tuple(sch))
        log(row(f"CLM bandwidths {sch}", e, ms))


def exp_cascade(args):
    """GSM-CR training variants: each ``--variants`` entry is a JSON dict of
    ``train_cascade`` keyword arguments (``{}`` is the default); each trained cascade fits
    with every ``--fit-variants`` entry, a JSON dict of ``fit_cascade`` keyword arguments
    (side by side, so their fit_ms compare)."""
    fit, val = split(args.n_train, args.n_val)
    params = TrainParams(face_detector=True, **json.loads(args.train_params))
    model = base_model(fit, params)
    boxes = boxes_for(model, val)
    log(f"\nGSM-CR on {len(val)} held-out tuning faces, trained on {len(fit)}")
    log(HEAD)
    e, ms = evaluate(model, val, boxes)
    log(row("GSM HoG", e, ms))
    for v in args.variants or ["{}"]:
        kw = json.loads(v)
        m = copy.copy(model)
        m.method = "gsm-cr"
        t0 = time.perf_counter()
        m.state = METHODS["gsm-cr"].train(m, fit, **kw)
        secs = time.perf_counter() - t0
        info = m.state.info
        log(f"| GSM-CR {v} trained | | | | | | train {secs:.0f} s; held-out px "
            f"{[round(x, 2) for x in info['heldout_error']]} |")
        fvs = args.fit_variants or ["{}"]
        errs, ms, warps = evaluate_each(m, val, boxes, [json.loads(f) for f in fvs],
                                        "n_warps")
        for j, fv in enumerate(fvs):
            log(row(f"GSM-CR {v}, fit {fv}", errs[j], ms[j],
                    f"{np.mean(warps[j]):.2f} warps per fit"))


def exp_gsm(args):
    """GSM (Newton) fit settings: each ``--fit-variants`` entry is a JSON dict of
    :class:`GSMParams` fields replacing the trained model's, fitted side by side."""
    fit, val = split(args.n_train, args.n_val)
    params = TrainParams(face_detector=True, **json.loads(args.train_params))
    model = base_model(fit, params)
    boxes = boxes_for(model, val)
    fvs = args.fit_variants or ["{}"]
    kws = [{"params": replace(model.gsm_params, **json.loads(f))} for f in fvs]
    errs, ms, iters = evaluate_each(model, val, boxes, kws, "n_iter")
    log(f"\nGSM HoG on {len(val)} held-out tuning faces, trained on {len(fit)} "
        f"(lam {model.gsm_params.lam})")
    log(HEAD)
    for j, fv in enumerate(fvs):
        log(row(f"GSM, fit {fv}", errs[j], ms[j], f"{np.mean(iters[j]):.2f} iterations"))


EXPERIMENTS = {"starts": exp_starts, "clm": exp_clm, "cascade": exp_cascade, "gsm": exp_gsm}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", choices=list(EXPERIMENTS))
    p.add_argument("--n-train", type=int, default=800,
                   help="training faces (0: all 1,511 tuning faces not held out)")
    p.add_argument("--n-val", type=int, default=300, help="held-out tuning faces")
    p.add_argument("--variants", nargs="*", default=[], help="JSON settings to compare")
    p.add_argument("--fit-variants", nargs="*", default=[],
                   help="cascade, gsm: JSON fit settings to compare (side by side)")
    p.add_argument("--train-params", default="{}", help="JSON TrainParams overrides")
    args = p.parse_args(argv)
    EXPERIMENTS[args.experiment](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

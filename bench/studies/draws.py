"""Which ten images to box, on real images: the ten ``autoprompt suggest`` lists against uniform draws of ten.

The HC18 sample is laid out as a user's folder (``examples/own-data/gather.py``: each subject's first image, masks
from the annotated outlines). Each draw of ten images gets the tight boxes of their masks (as a user would draw
them) and is trained as a user would train it: ``autoprompt train`` with ``examples/own-data/params.yaml`` on the
default, fast CPU numerics. The draws: the ten that ``autoprompt suggest -n 10`` lists with each of its methods
(``kcenter``, ``typical``, ``cover``), and ``--uniform`` draws of ten taken uniformly without replacement (seeds 0,
1, ...). A draw whose model was trained on the same boxes by an earlier call is not trained again.

Every model is scored on the same images: those that no draw trained on. Each is encoded once (the fast path's
encoder, as ``predict``'s) and decoded by each model as ``predict`` does (the runs' ensemble, re-prompted at the
model's margin); Dice (%) on each image's own grid, and its misses (Dice under 50). The tight-box prompt on the same
images is the bound. The results also give each model's Dice on the thirds of the scored images by tight-box area
in pixels (``by_size``), and where each ten's boxes lie among the pool's box areas (``draws_area_percentiles``), to
see whether the heads a ten scores worst on are the sizes its boxes leave out.

``--split authors`` takes the draws from the authors' training split alone (a folder of its images: what ``suggest``
lists from and what the second round harvests) and scores every model on their test split, the images the pipeline's
studies score. ``--self-training`` also trains each draw with ``train --self-training`` (the second round on the
folder's unboxed images, reusing the first round's runs) and scores that model beside the first; it needs
``--split authors``, where the unboxed images are not the scored ones.

One ten per rule says little: uniform tens of ten differ by several points of Dice. ``--tens N`` draws each rule
``N`` times (``--methods kcenter typical``): ``suggest``'s ten, then ``suggested_<method>_seed1`` ... from other
starts, like ``train.draw: suggest``'s subsets (k-center from a seeded image instead of the medoid, typical with
another k-means++ seed), chosen from the embeddings ``suggest`` kept. ``summary.rules`` gives each rule's tens, their
mean minus the uniform tens' mean and the standard error of that difference, from the spread between tens; all are
trained and scored in one call, on one CPU kind (with ``--self-training``, each ten's second round too).

Box next (``autoprompt suggest --model``): ``--next K`` adds the draw ``suggested_nextK``, ``--shots`` minus K
images by k-center, a model trained on them, and the K images ``suggest --model`` lists with it, boxed too: the ten
chosen in two steps. ``--more K`` adds K boxes to the k-center ten: those ``suggest --model`` lists with the ten's
model (``kcenter_plus_next``) against K drawn uniformly from the rest (``kcenter_plus_uniformS``, ``--more-uniform``
seeds), each trained in the first round only. ``--baseline FILE`` scores, beside this call's models, every model of an
earlier call's results on the images both scored, so that draws trained then need not be trained again; the largest
difference between the two calls' tight-box Dice on an image says how alike the two calls scored (the fast numerics
are the CPU's own: another CPU scores a little differently).

    python -m bench.studies.draws [--hc18 ../shared/data/hc18-sample] [--uniform 5] [--shots 10]
    python -m bench.studies.draws --name draws_authors --split authors --methods kcenter typical cover --uniform 5 \
        --self-training
    python -m bench.studies.draws --name draws_rules_authors --split authors --methods kcenter typical --tens 5 \
        --uniform 5
    python -m bench.studies.draws --name draws_next_authors --split authors --methods kcenter --uniform 0 --next 5 \
        --more 5 --self-training --baseline bench/results/draws_authors.json
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from autoprompt.training.suggest import METHODS
from bench.lib import common
from bench.lib.walkthrough import (
    SEED,
    THREADS,
    WALKTHROUGH,
    authors_split,
    box_area,
    gathered,
    kept_features,
    listed,
    seeded_ten,
    tight_boxes,
)

log = logging.getLogger("bench.draws")

SECOND_ROUND = "second_round"  # a draw's model trained with --self-training: "<draw>_second_round"
MORE = "kcenter_plus_"  # --more's draws: the k-center ten and more boxes (next, or uniform0, uniform1, ...)


def write_boxes(names: list[str], boxes: dict, path: Path) -> None:
    """``names``' boxes as a ``boxes.csv`` (``autoprompt.data.boxes.to_csv``)."""
    from autoprompt.data.boxes import Box, to_csv

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_csv({name: (Box("", None, *boxes[name]),) for name in names}))


def suggested(data: Path, shots: int, out: Path, env: dict, method: str) -> list[str]:
    """The images ``autoprompt suggest --method METHOD`` lists, in its order."""
    return listed(data, shots, out, env, "--method", method)


def other_tens(data: Path, first: list[str], method: str, tens: int) -> list[list[str]]:
    """``tens - 1`` more tens by ``method``'s rule from other starts, like ``train.draw: suggest``'s subsets after the
    first: k-center from a seeded image instead of the medoid, typical with another k-means++ seed (seeds 1, 2, ...).
    They are chosen from the pooled embeddings that ``suggest`` kept in ``DATA.work`` (a folder of 2D images: no
    slice positions), whose first ten must be ``first``, the ten ``suggest`` listed."""
    names, features = kept_features(data)

    def ten(seed: int) -> list[str]:
        return [names[row] for row in seeded_ten(features, len(first), method, seed)]

    assert ten(0) == first, f"{method}: the store's first ten {ten(0)} are not those suggest listed, {first}"
    return [ten(seed) for seed in range(1, tens)]


def listed_next(data: Path, model: Path, n: int, out: Path, env: dict) -> list[str]:
    """The ``n`` images ``autoprompt suggest --model`` lists to box next in the folder ``data`` (a draw's folder,
    its ``boxes.csv`` the boxes drawn), ``model`` trained there by ``train`` (its work folder reused)."""
    return listed(data, n, out, env, "--model", str(model), "--work", str(model.parent / "model.pt.work"), "--params",
                  str(WALKTHROUGH / "params.yaml"))  # fmt: skip


def next_draw(folder: Path, shots: int, after: int, boxes: dict, work: Path, env: dict) -> list[str]:
    """The ten of ``suggest`` then ``suggest --model`` (box next): ``shots - after`` images by k-center, a model
    trained on their boxes (the first round alone), and the ``after`` images ``suggest --model`` lists with it."""
    first = suggested(folder, shots - after, work / "suggest-first", env, "kcenter")
    log.info("next: training on the first %d, %s", len(first), ", ".join(first))
    model = train(folder, first, boxes, work / "first", env)
    return first + listed_next(work / "first" / "data", model, after, work / "suggest-next", env)


def train(data: Path, names: list[str], boxes: dict, work: Path, env: dict, second_round: bool = False) -> Path:
    """``autoprompt train`` on ``names``' tight boxes, the images of ``data`` unboxed: the model file (this benchmark
    compares Dice, not times: ``bench/studies/own_data.py`` times ``train``). ``second_round``: with
    ``--self-training``, in the first round's work folder (its runs are not trained again)."""
    folder = work / "data"
    model = work / (f"model-{SECOND_ROUND}.pt" if second_round else "model.pt")
    wanted = work / "boxes.wanted.csv"
    write_boxes(names, boxes, wanted)
    trained = (folder / "boxes.csv").read_text() if (folder / "boxes.csv").is_file() else None
    if model.is_file() and trained == wanted.read_text():
        log.info("%s: trained on these boxes already (delete it to train again)", model)
        return model
    if trained != wanted.read_text():  # other boxes: neither round's model nor runs are theirs
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(work / "model.pt.work", ignore_errors=True)
        for old in work.glob("model*.pt"):
            old.unlink()
        folder.mkdir(parents=True)
        (folder / "images").symlink_to(data / "images")
        write_boxes(names, boxes, folder / "boxes.csv")
    autoprompt = Path(sys.executable).with_name("autoprompt")
    subprocess.run([str(autoprompt), "train", str(folder), "-o", str(model), "--work", str(work / "model.pt.work"),
                    "--params", str(WALKTHROUGH / "params.yaml"), "--class", "head", "--threads", str(THREADS),
                    "--self-training" if second_round else "--no-self-training"], check=True, env=env)  # fmt: skip
    return model


def score(models: dict[str, Path], data: Path, names: list[str], boxes: dict) -> dict[str, dict]:
    """Per draw: Dice (%) of its model on each of ``names`` (each encoded once), and the tight-box prompt's."""
    from autoprompt.data.images import as_stack, frame_slices, read_image, to_input_grid
    from autoprompt.data.preprocess import fit_label, tight_box
    from autoprompt.device import FAST, numerics
    from autoprompt.evaluation.metrics import mask_dice
    from autoprompt.inference import load_model
    from autoprompt.inference.policy import resolve
    from autoprompt.inference.predictor import Predictor
    from autoprompt.model.decoding import decode

    cpu, chosen = torch.device("cpu"), numerics(FAST, torch.device("cpu"), THREADS)
    cache = common.BENCH / ".work" / "runtimes"
    loaded = {draw: load_model(path) for draw, path in models.items()}
    first = next(iter(loaded.values()))
    encoder = Predictor(first, cpu, 8, cache_dir=cache, numerics=chosen)
    inputs = []
    for name in names:
        image = read_image(data / "images" / name)
        stack = as_stack(image)
        framed = frame_slices(stack, first.preprocessing)
        reference = sitk.GetArrayFromImage(read_image(data / "masks" / name)) > 0
        inputs.append((stack, framed, encoder.encode(framed.slices), reference))
    dice = {draw: [] for draw in [*loaded, "tight_box"]}
    for draw, model in loaded.items():
        policy, _ = resolve(model.policy, model.group())  # as predict applies it
        predictor = Predictor(
            model, cpu, 8, cache_dir=cache, reprompt_margin=policy.margin, volume_min_iou=policy.volume_min_iou,
            presence=policy.presence, numerics=chosen, box_threshold=policy.box_threshold,
        )  # fmt: skip
        for stack, framed, embeddings, reference in inputs:
            grid = to_input_grid(predictor.decode(embeddings), framed, stack)
            dice[draw].append(100.0 * mask_dice(grid > 0.5, reference))
    size = first.label_size
    for stack, framed, embeddings, reference in inputs:
        label = fit_label(reference.astype(np.uint8), size, framed.geometries[0])
        box = torch.tensor([tight_box(label > 0)])
        with chosen.autocast(cpu):
            frame = decode(encoder.decoder, embeddings, size, 8, cpu, boxes=box)
        dice["tight_box"].append(100.0 * mask_dice(to_input_grid(frame.numpy(), framed, stack) > 0.5, reference))
    return {
        draw: {"mean": round(float(np.mean(v)), 2), "median": round(float(np.median(v)), 2),
               "below_50": int((np.array(v) < 50).sum()), "per_image": [round(x, 2) for x in v]}
        for draw, v in dice.items()
    }  # fmt: skip


def by_size(scores: dict[str, dict], test: list[str], boxes: dict) -> dict:
    """Each model's mean Dice on the thirds of the scored images ``test`` by tight-box area (smallest, middle,
    largest): where a ten's boxes leave a size out, its model misses there."""
    areas = np.array([box_area(boxes[name]) for name in test])
    thirds = np.array_split(np.argsort(areas, kind="stable"), 3)
    return {
        "area_px": [[int(areas[t].min()), int(areas[t].max())] for t in thirds],
        "dice": {
            model: [round(float(np.mean(np.asarray(score["per_image"])[t])), 2) for t in thirds]
            for model, score in scores.items()
        },
    }


def area_percentiles(names: list[str], pool: list[str], boxes: dict) -> list[int]:
    """The percentile of each of ``names``' tight-box areas among the ``pool``'s, sorted: which sizes a ten spans."""
    pool_areas = np.array([box_area(boxes[name]) for name in pool])
    return sorted(round(100 * float(np.mean(pool_areas < box_area(boxes[name])))) for name in names)


def summarised(scores: dict[str, dict], suggested: list[str], uniform: int, suffix: str) -> dict:
    """Mean Dice of each ``suggested`` draw and of the uniform draws (each, and their mean), the tight box's, and
    every draw's misses: of the models whose key ends with ``suffix`` (``""``: the first round)."""
    each = [scores[f"uniform{s}{suffix}"]["mean"] for s in range(uniform)]
    drawn = suggested + [f"uniform{s}" for s in range(uniform)]
    uniforms = {"uniform_mean": round(float(np.mean(each)), 2), "uniform_each": each} if each else {}
    return {
        **{d: scores[f"{d}{suffix}"]["mean"] for d in suggested},
        **uniforms,
        "tight_box": scores["tight_box"]["mean"],
        "below_50": {d: scores[f"{d}{suffix}"]["below_50"] for d in [*drawn, "tight_box"] if f"{d}{suffix}" in scores},
    }


def ten_index(draw: str) -> int:
    """A draw's place among its rule's tens: ``S`` of ``uniformS`` and of ``suggested_<method>_seedS``, else 0."""
    digits = draw.removeprefix("uniform").rsplit(SEED, 1)[-1]
    return int(digits) if digits.isdigit() else 0


def rules(scores: dict[str, dict], methods: list[str], tens: int, uniform: int, suffix: str = "") -> dict:
    """Each rule's ``tens`` tens against the ``uniform`` tens, of the models whose key ends with ``suffix`` (``""``:
    the first round): each ten's mean Dice and misses, their mean and standard deviation, and the rule's mean minus
    the uniform tens' with the standard error of that difference, from the spread between tens (a difference within
    two standard errors of 0 is not one)."""

    def tens_of(draws: list[str]) -> dict:
        each = [scores[f"{d}{suffix}"]["mean"] for d in draws]
        spread = round(float(np.std(each, ddof=1)), 2) if len(each) > 1 else None
        return {"each": each, "mean": round(float(np.mean(each)), 2), "std": spread,
                "below_50_each": [scores[f"{d}{suffix}"]["below_50"] for d in draws]}  # fmt: skip

    uniforms = [f"uniform{s}" for s in range(uniform)]
    out = {"uniform": tens_of(uniforms)} if uniforms else {}
    for method in methods:
        rule = tens_of([f"suggested_{method}", *(f"suggested_{method}{SEED}{s}" for s in range(1, tens))])
        if len(uniforms) > 1:
            base = out["uniform"]["each"]
            rule["minus_uniform"] = round(rule["mean"] - float(np.mean(base)), 2)
            rule["standard_error"] = round(
                float(np.sqrt(np.var(rule["each"], ddof=1) / tens + np.var(base, ddof=1) / len(base))), 2
            )
        out[method] = rule
    return out


def against_baseline(baseline: dict, scores: dict[str, dict], test: list[str], baseline_test: list[str]) -> dict:
    """Every model of this call and of the ``baseline`` results (an earlier call's, scored on ``baseline_test``)
    on the images both scored: mean Dice and misses, and the largest difference between the two calls' tight-box
    Dice on an image (0: both scored alike)."""
    common = [name for name in test if name in set(baseline_test)]
    if not common:
        raise SystemExit("--baseline: its results scored none of this call's images; give results of the same --split")
    here, there = {n: i for i, n in enumerate(test)}, {n: i for i, n in enumerate(baseline_test)}

    def on_common(per_image: list[float], index: dict[str, int]) -> dict:
        values = np.array([per_image[index[name]] for name in common])
        return {"mean": round(float(values.mean()), 2), "below_50": int((values < 50).sum())}

    tight = [abs(scores["tight_box"]["per_image"][here[n]] - baseline["dice"]["tight_box"]["per_image"][there[n]])
             for n in common]  # fmt: skip
    return {
        "images": len(common),
        "tight_box_largest_difference": round(float(max(tight)), 2),
        "here": {model: on_common(score["per_image"], here) for model, score in scores.items()},
        "baseline": {model: on_common(score["per_image"], there) for model, score in baseline["dice"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--hc18", type=Path, default=common.DEFAULT_HC18, help="the HC18 sample, official layout (default: %(default)s)"
    )
    parser.add_argument("--work", type=Path, help="kept between calls (default: bench/.work/NAME)")
    parser.add_argument("--name", default="draws", help="the results file: bench/results/NAME.json (default: draws)")
    parser.add_argument("--uniform", type=int, default=5, help="uniform draws of --shots images (default: 5)")
    parser.add_argument("--shots", type=int, default=10, help="boxed images in each draw (default: 10)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="suggest's methods")
    parser.add_argument(
        "--tens",
        type=int,
        default=1,
        help="tens drawn by each method's rule: suggest's, then others from seeded starts (suggested_METHOD_seedS; "
        "kcenter and typical only) (default: 1)",
    )
    parser.add_argument(
        "--split",
        choices=("folder", "authors"),
        default="folder",
        help="folder (the default): draw from every image, score the images no draw trained on; authors: draw from "
        "the authors' training split, score their test split",
    )
    parser.add_argument(
        "--self-training", action="store_true", help="also train each draw with a second round, scored beside it"
    )
    parser.add_argument(
        "--next",
        type=int,
        default=0,
        help="also the draw suggested_nextK: --shots minus K images by k-center, then K by suggest --model with a "
        "model trained on those (default: 0, none)",
    )
    parser.add_argument(
        "--more",
        type=int,
        default=0,
        help="also K more boxes after suggest's k-center ten (--methods kcenter): the K suggest --model lists with "
        "the ten's model (kcenter_plus_next), and K drawn uniformly from the rest (kcenter_plus_uniformS, "
        "--more-uniform seeds); first round only (default: 0, none)",
    )
    parser.add_argument("--more-uniform", type=int, default=3, help="uniform draws of --more images (default: 3)")
    parser.add_argument(
        "--baseline", type=Path, help="an earlier results file of this study: every model also scored beside its "
        "models on the images both scored",
    )  # fmt: skip
    args, machine = common.parse_and_start(parser)
    if not 0 <= args.next < args.shots:
        raise SystemExit(f"--next {args.next}: give 0 (none) to {args.shots - 1}, fewer than --shots {args.shots}")
    if args.tens < 1 or (args.tens > 1 and "cover" in args.methods):
        raise SystemExit(f"--tens {args.tens}: give 1, or more with --methods kcenter typical (cover has no seed)")
    if args.more and "kcenter" not in args.methods:
        raise SystemExit("--more adds boxes to suggest's k-center ten; add kcenter to --methods")
    baseline = json.loads(args.baseline.read_text()) if args.baseline is not None else None
    if baseline is not None and baseline["settings"]["split"] != args.split:
        raise SystemExit(f"--baseline {args.baseline}: split {baseline['settings']['split']}, this call's "
                         f"{args.split}; give results of the same --split")  # fmt: skip
    if not (args.hc18 / "training_set").is_dir():
        raise SystemExit(f"{args.hc18}: real HC18 sample not found (no training_set/); pass --hc18 PATH")
    if args.self_training and args.split == "folder":
        raise SystemExit("--self-training with --split folder: the second round would learn from the scored images; "
                         "add --split authors")  # fmt: skip
    work = (args.work or common.BENCH / ".work" / args.name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = common.numerics_env(False, TORCHINDUCTOR_CACHE_DIR=str(work / "inductor"))
    data = gathered(args.hc18, work)
    boxes = tight_boxes(data / "masks")
    folder, held_out = (data, None) if args.split == "folder" else authors_split(data, work)
    pool = sorted(p.name for p in (folder / "images").glob("*.png") if p.name in boxes)
    draws = {f"suggested_{m}": suggested(folder, args.shots, work / f"suggest-{m}", env, m) for m in args.methods}
    for method in args.methods if args.tens > 1 else ():
        for seed, ten in enumerate(other_tens(folder, draws[f"suggested_{method}"], method, args.tens), 1):
            draws[f"suggested_{method}{SEED}{seed}"] = ten
    if args.next:
        draws[f"suggested_next{args.next}"] = next_draw(folder, args.shots, args.next, boxes, work / "next", env)
    if args.more:
        ten = draws["suggested_kcenter"]
        model = train(folder, ten, boxes, work / "suggested_kcenter", env)
        added = listed_next(work / "suggested_kcenter" / "data", model, args.more, work / "suggest-more", env)
        draws[f"{MORE}next"] = ten + added
        rest = [name for name in pool if name not in ten]
        for seed in range(args.more_uniform):
            picks = np.random.default_rng(seed).choice(len(rest), size=args.more, replace=False)
            draws[f"{MORE}uniform{seed}"] = ten + sorted(rest[i] for i in picks)
    named = list(draws)
    for seed in range(args.uniform):
        picks = np.random.default_rng(seed).choice(len(pool), size=args.shots, replace=False)
        draws[f"uniform{seed}"] = sorted(pool[i] for i in picks)
    models = {}
    for draw in sorted(draws, key=ten_index):  # a rule's tens and the uniform ones in turn: any prefix is balanced
        names = draws[draw]
        log.info("%s: training on %s", draw, ", ".join(names))
        models[draw] = train(folder, names, boxes, work / draw, env)
        if args.self_training and not draw.startswith(MORE):
            models[f"{draw}_{SECOND_ROUND}"] = train(folder, names, boxes, work / draw, env, second_round=True)
    trained = {name for names in draws.values() for name in names}
    test = held_out if held_out is not None else [name for name in pool if name not in trained]
    assert not trained & set(test), "a test image was boxed"
    log.info("scoring %d models on %d images that none trained on", len(models), len(test))
    scores = score(models, data, test, boxes)
    summary = summarised(scores, named, args.uniform, "")
    if args.tens > 1:
        summary["rules"] = rules(scores, args.methods, args.tens, args.uniform)
    if args.self_training:
        first_rounds = [d for d in named if not d.startswith(MORE)]
        summary[SECOND_ROUND] = summarised(scores, first_rounds, args.uniform, f"_{SECOND_ROUND}")
        if args.tens > 1:
            summary[SECOND_ROUND]["rules"] = rules(scores, args.methods, args.tens, args.uniform, f"_{SECOND_ROUND}")
    if args.more:
        each = [scores[f"{MORE}uniform{s}"]["mean"] for s in range(args.more_uniform)]
        summary["more"] = {"next": scores[f"{MORE}next"]["mean"], "uniform_mean": round(float(np.mean(each)), 2),
                           "uniform_each": each}  # fmt: skip
    compared = {}
    if baseline is not None:
        their_trained = {name for names in baseline["draws"].values() for name in names}
        their_test = baseline.get("test") or (
            held_out if held_out is not None else [name for name in pool if name not in their_trained]
        )  # results written before "test" was recorded: the images no draw trained on, as then
        compared = {"against_baseline": {"file": args.baseline.as_posix(),
                                         **against_baseline(baseline, scores, test, their_test)}}  # fmt: skip
    log.info("draws: %s", summary)
    common.write_result(
        args.name,
        {
            "what": "autoprompt train on ten tight boxes of the real HC18 sample: the ten autoprompt suggest lists "
            "(each method) against uniform draws of ten; every model scored on the images no draw trained on "
            "(split authors: the authors' test split) "
            "(Dice %, each image's own grid; the runs' ensemble re-prompted at the model's margin, as predict "
            "does), with the tight-box prompt as the bound; <draw>_second_round: the same boxes with "
            "train --self-training",
            "settings": {
                "params": "examples/own-data/params.yaml",
                "threads": THREADS,
                "shots": args.shots,
                "uniform_draws": args.uniform,
                "methods": args.methods,
                "tens": args.tens,
                "split": args.split,
                "self_training": args.self_training,
                "next": args.next,
                "more": args.more,
                "more_uniform": args.more_uniform if args.more else 0,
                "numerics": "fast (the default)",
            },
            "draws": draws,
            "draws_area_percentiles": {draw: area_percentiles(names, pool, boxes) for draw, names in draws.items()},
            "test_images": len(test),
            "test": test,
            "by_size": by_size(scores, test, boxes),
            "summary": summary,
            **compared,
            "dice": scores,
            "machine": machine,
        },
    )


if __name__ == "__main__":
    main()

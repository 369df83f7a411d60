"""A tiny end-to-end run through the stage modules on phantoms: the box-trained head must beat box baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
import zarr

from autoprompt.data import views
from autoprompt.data.tasks import Task, TaskFiles, load_task
from autoprompt.errors import InputError
from autoprompt.evaluation.metrics import dice
from autoprompt.inference.reprompt import choose_margin, group_margins, reprompt
from autoprompt.model import backbones, checkpoints
from autoprompt.model.decoding import decode
from autoprompt.settings import RepromptSettings, load_settings
from autoprompt.training import runs
from stages import augment, baseline, encode, evaluate, prepare, report, simulate, train
from tests.helpers import encode_section, train_section

VIEWS = "views.zarr"


def baseline_section(epochs: int, **extra: object) -> dict:
    """A tiny ``baseline.<method>`` section: the stage's plumbing, not the methods' accuracy (tests/test_baselines)."""
    return {
        "epochs": {"fewshot": epochs, "all": epochs},
        "milestones": {"fewshot": [epochs], "all": [epochs]},
        "gamma": 0.1,
        "batch_size": 4,
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "augment": {"dihedral": 0.0, "zoom": 0.2, "shift": 0.1},
        **extra,
    }


PARAMS = {
    "datasets": ["hc18"],
    "tasks": {"hc18": {"dataset": "hc18", "class": "head", "column": "HC"}},
    "simulate": {"hc18": {"subjects": 14, "size": [800, 540], "seed": 1, "second_image": 0.3}},
    "prepare": {
        "seed": 0,
        "on_error": "stop",
        "min_foreground": 10,
        "hc18": {"crop": 640, "split": {"train": 507, "val": 77, "test": 148}},
    },
    "encode": encode_section(batch_size=1, shard_size=4),
    "augment": {
        "count": 1,
        "hflip": 0.5,
        "zoom": 0.25,
        "shift": 0.1,
        "gamma": 0.3,
        "contrast": 0.2,
        "brightness": 10.0,
        "seed": 0,
    },
    "train": train_section(4, 2, {"workshop": (10, 8), "followup": (9, 7)}, validate_every=9),
    "baseline": {
        "methods": ["unet", "transunet", "autosam", "head_masks", "persam"],
        "all_images": False,
        "device": "cpu",
        "threads": 2,
        "unet": baseline_section(2, input_size=64, channels=[4, 8, 16], strides=[2, 2], res_units=0),
        "transunet": baseline_section(1, input_size=64, encoder="vit_tiny_r_s16_p8_224", weights=None),
        "autosam": baseline_section(1, input_size=64, encoder="resnet18", weights=None),
        "head_masks": baseline_section(2),
        "persam": {"references": 2},
    },
    "reprompt": {"margin": 0.1},
    "evaluate": {
        "threshold": 0.5,
        "batch_size": 8,
        "nsd_tolerance_mm": 2.0,
        "examples": 2,
        "device": "cpu",
        "threads": 2,
    },
}
PARAMS["train"]["recipes"]["followup"]["augment"]["inputs"]["views"] = 0.5  # the workshop recipe draws no views
for _recipe in PARAMS["train"]["recipes"].values():  # epochs sized for one step per epoch on 4 shots
    _recipe["batch_size"] = 4


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Every stage once, in order, as dvc repro would run them; returns the working folder."""
    root = tmp_path_factory.mktemp("pipeline")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(PARAMS))
    p = ["--params", str(params)]
    store, index, emb = root / "prepared.zarr", root / "prepared.csv", root / "embeddings.zarr"
    simulate.main([*p, "--dataset", "hc18", "--out", str(root / "raw")])
    prepare.main([*p, "--dataset", "hc18", "--raw", str(root / "raw"), "--store", str(store), "--index", str(index)])
    encode.main([*p, "--dataset", "hc18", "--store", str(store), "--out", str(emb)])
    augment.main([*p, "--dataset", "hc18", "--store", str(store), "--index", str(index), "--out", str(root / VIEWS)])
    data = ["--task", "hc18", "--prepared", str(store), "--index", str(index), "--embeddings", str(emb)]
    train.main([*p, *data, "--views", str(root / VIEWS), "--out", str(root / "models")])
    baseline.main([*p, *data, "--out", str(root / "baselines")])
    evaluate.main(
        [
            *p,
            *data,
            "--models",
            str(root / "models"),
            "--metrics",
            str(root / "metrics/hc18.json"),
            "--per-image",
            str(root / "metrics/hc18/per_image.csv"),
            "--figure",
            str(root / "metrics/hc18/examples.png"),
            "--baselines",
            str(root / "baselines"),
        ]
    )
    report.main(
        [
            *p,
            "--metrics",
            str(root / "metrics"),
            "--table",
            str(root / "metrics/table.md"),
            "--surface",
            str(root / "metrics/table_surface.md"),
            "--figure",
            str(root / "metrics/dice.png"),
        ]
    )
    return root


def box_baselines(root) -> tuple[float, float]:
    """Test Dice (%) of an empty mask and of the filled tight box."""
    table = pd.read_csv(root / "prepared.csv", dtype={"id": str, "subject": str})
    test = table[table["split"] == "test"]
    labels = zarr.open_group(root / "prepared.zarr", mode="r")["labels"][:][test.index.to_numpy()] == 1
    filled = np.zeros_like(labels)
    for i, (x0, y0, x1, y1) in enumerate(test[["head_x0", "head_y0", "head_x1", "head_y1"]].to_numpy()):
        filled[i, y0 : y1 + 1, x0 : x1 + 1] = True
    truth = torch.from_numpy(labels)
    return (
        100 * float(dice(torch.zeros_like(truth), truth).mean()),
        100 * float(dice(torch.from_numpy(filled), truth).mean()),
    )


def test_box_trained_heads_beat_empty_and_filled_box(pipeline):
    result = json.loads((pipeline / "metrics/hc18.json").read_text())
    empty, filled = box_baselines(pipeline)
    assert result["shots"] == 4 and result["select"] == "last"
    for recipe in ("workshop", "followup"):
        runs_row, ensemble = result["dice"][recipe]["fewshot"], result["dice"][recipe]["fewshot_ensemble"]
        assert runs_row["n"] == 2 and runs_row["over"] == "runs" and ensemble["over"] == "test images"
        for name, head in (("runs", runs_row["mean"]), ("ensemble", ensemble["mean"])):
            assert head > empty + 50, f"{recipe} {name}: head {head:.1f} vs empty mask {empty:.1f}"
            assert head > filled + 2, f"{recipe} {name}: head {head:.1f} vs filled tight box {filled:.1f}"
    assert result["dice"]["tight_box"]["mean"] > 90, "LiteMedSAM prompted with the tight box"
    assert 0 < result["nsd"]["followup"]["fewshot"]["mean"] <= 100
    assert 0 < result["hd95_mm"]["tight_box"]["mean"] < 20, "HD95 in mm of a good mask on a 0.1-0.2 mm grid"


def pipeline_task(root: Path) -> Task:
    """The pipeline's hc18 task, opened as the stages open it."""
    settings = load_settings(root / "params.yaml")
    files = TaskFiles(root / "prepared.zarr", root / "prepared.csv", root / "embeddings.zarr")
    return load_task("hc18", settings.task("hc18"), files, settings.prepare.min_foreground, "lite_medsam")


def followup_ensemble(root) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decoder, the test embeddings, the mean of the follow-up recipe's two few-shot runs' test probabilities
    and the test masks."""
    task = pipeline_task(root)
    rows = task.rows("test")
    decoder = backbones.build_prompt_decoder("lite_medsam", checkpoints.resolve_checkpoint("lite_medsam", None))
    embeddings = task.load_embeddings(rows)
    folders = sorted((root / "models/followup/fewshot").iterdir())
    assert len(folders) == 2
    probs = [decode(decoder, embeddings, 640, 8, torch.device("cpu"), head=runs.load_head(f)[0]) for f in folders]
    return decoder, embeddings, torch.stack(probs).mean(0), task.load_masks(rows)


def test_ensemble_is_the_mean_of_the_runs_probabilities(pipeline):
    """The ensemble row is the Dice of the runs' mean probability thresholded once, not the mean of their Dice."""
    _, _, mean, masks = followup_ensemble(pipeline)
    expected = dice(mean > 0.5, masks).mean()
    result = json.loads((pipeline / "metrics/hc18.json").read_text())
    assert result["dice"]["followup"]["fewshot_ensemble"]["mean"] == pytest.approx(100 * float(expected), abs=1e-3)


def test_reprompted_ensembles_are_scored_and_tabled(pipeline):
    """Each recipe's ensemble, re-prompted with its masks' boxes loosened by reprompt.margin, has a row of its own;
    the baselines have none."""
    decoder, embeddings, mean, masks = followup_ensemble(pipeline)
    expected = dice(reprompt(decoder, embeddings, mean, 0.1, 0.5, 8, torch.device("cpu")) > 0.5, masks).mean()
    result = json.loads((pipeline / "metrics/hc18.json").read_text())
    row = result["dice"]["followup"]["fewshot_reprompted"]
    assert row["mean"] == pytest.approx(100 * float(expected), abs=1e-3) and row["over"] == "test images"
    assert "fewshot_reprompted" in result["dice"]["workshop"] and "fewshot_reprompted" not in result["dice"]["unet"]
    assert "dice:followup/fewshot_reprompted" in pd.read_csv(pipeline / "metrics/hc18/per_image.csv").columns
    table = (pipeline / "metrics/table.md").read_text().replace("**", "")
    assert "Prompt module, follow-up losses, re-prompted with its mask's box — ours, LiteMedSAM | 4 | boxes" in table


def test_outputs_are_complete(pipeline):
    per_image = pd.read_csv(pipeline / "metrics/hc18/per_image.csv")
    predictors = ["tight_box", "workshop/fewshot", "workshop/fewshot_ensemble", "followup/fewshot"]
    expected = {f"{metric}:{name}" for metric in ("dice", "nsd", "hd95") for name in predictors}
    assert expected <= set(per_image.columns) and list(per_image.columns[:2]) == ["id", "subject"]
    assert per_image[[f"dice:{name}" for name in predictors]].to_numpy().min() >= 0
    for figure in ("metrics/hc18/examples.png", "metrics/dice.png"):
        assert (pipeline / figure).read_bytes()[:4] == b"\x89PNG"
    table = (pipeline / "metrics/table.md").read_text().replace("**", "")
    assert "Prompt module — ours, LiteMedSAM | 4 | boxes" in table
    assert "Prompt module, follow-up losses — ours, LiteMedSAM | 4 | boxes" in table
    assert "Prompt module, follow-up losses, ensemble of the runs — ours, LiteMedSAM | 4 | boxes" in table
    assert "85.23 ± 0.55" in table, "the paper's number beside ours"
    surface = (pipeline / "metrics/table_surface.md").read_text()
    assert "HC NSD" in surface and "HC HD95 (mm)" in surface and "at a tolerance of 2 mm" in surface
    assert "| HC misses |" in surface, "each row counts its misses"
    logs = pipeline / "models/followup/fewshot/subset0-seed0/plots/metrics/val"
    assert (logs / "dice_box.tsv").is_file() and (logs / "dice_mask.tsv").is_file(), "validation Dice is logged"


def stage_args(root, models="models") -> list[str]:
    views = ["--views", str(root / VIEWS)] if models == "models" else []
    return [
        *views,
        "--params",
        str(root / "params.yaml"),
        "--task",
        "hc18",
        "--prepared",
        str(root / "prepared.zarr"),
        "--index",
        str(root / "prepared.csv"),
        "--embeddings",
        str(root / "embeddings.zarr"),
        "--out",
        str(root / models),
    ]


def test_train_resumes_without_retraining(pipeline, caplog):
    weights = pipeline / "models/followup/fewshot/subset0-seed0/head.pt"
    before = weights.stat().st_mtime_ns
    with caplog.at_level("INFO"):
        train.main(stage_args(pipeline))
    assert "4 runs planned, 4 already trained, 0 to train" in caplog.text
    assert weights.stat().st_mtime_ns == before


def test_a_corrected_training_box_trains_its_run_again(pipeline, tmp_path, caplog):
    """Runs are fingerprinted with their boxes: correcting one box retrains the runs that use that image only."""
    for name in ("prepared.zarr", "embeddings.zarr", VIEWS):
        (tmp_path / name).symlink_to(pipeline / name)
    params = yaml.safe_load((pipeline / "params.yaml").read_text())
    params["train"]["recipe"] = ["workshop"]
    params["train"]["recipes"]["workshop"]["epochs"]["fewshot"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    index = pd.read_csv(pipeline / "prepared.csv", dtype={"id": str, "subject": str})
    index.to_csv(tmp_path / "prepared.csv", index=False)
    train.main(stage_args(tmp_path))
    subsets = [set(runs.load_head(f)[1]["ids"]) for f in sorted((tmp_path / "models/workshop/fewshot").iterdir())]
    only_first = sorted(subsets[0] - subsets[1])[0]
    index.loc[index["id"] == only_first, "head_x1"] -= 3
    index.to_csv(tmp_path / "prepared.csv", index=False)
    caplog.clear()
    with caplog.at_level("INFO"):
        train.main(stage_args(tmp_path))
    assert "2 runs planned, 1 already trained, 1 to train" in caplog.text


def test_baselines_are_scored_and_tabled_beside_the_head(pipeline):
    """Every baseline's runs are scored on the head's test images, under their own keys, and named in the table."""
    result = json.loads((pipeline / "metrics/hc18.json").read_text())
    for method in ("unet", "transunet", "autosam", "head_masks"):
        row = result["dice"][method]["fewshot"]
        assert row["n"] == 2 and row["over"] == "runs" and 0 <= row["mean"] <= 100, method
        assert "fewshot" in result["nsd"][method]
    assert result["dice"]["persam"]["oneshot"]["n"] == 2
    assert result["methods"]["transunet"] == "TransUNet (vit_tiny_r_s16_p8_224, no pretraining)"
    subsets = [runs.load_baseline(f)[1]["ids"] for f in sorted((pipeline / "baselines/unet/fewshot").iterdir())]
    heads = [runs.load_head(f)[1]["ids"] for f in sorted((pipeline / "models/workshop/fewshot").iterdir())]
    assert subsets == heads, "the baselines train on the head's few-shot subsets"
    table = (pipeline / "metrics/table.md").read_text().replace("**", "")
    for row in ("UNet (MONAI) — ours, LiteMedSAM | 4 | masks", "PerSAM — ours, LiteMedSAM | 1 | mask",
                "AutoSAM (resnet18, no pretraining) — ours, LiteMedSAM | 4 | masks",
                "Prompt module trained with masks — ours, LiteMedSAM | 4 | masks"):  # fmt: skip
        assert row in table, row
    assert "dice:unet/fewshot" in pd.read_csv(pipeline / "metrics/hc18/per_image.csv").columns


def test_baselines_resume_and_leave_out_runs_without_masks(pipeline, tmp_path, caplog):
    """A second call trains nothing; an image without a mask takes its runs out of the plan, with a warning."""
    with caplog.at_level("INFO"):
        baseline.main(stage_args(pipeline, "baselines"))
    assert "10 baseline runs planned, 10 already trained, 0 to train" in caplog.text
    for name in ("prepared.zarr", "embeddings.zarr", "params.yaml"):
        (tmp_path / name).symlink_to(pipeline / name)
    index = pd.read_csv(pipeline / "prepared.csv", dtype={"id": str, "subject": str})
    first = runs.load_baseline(pipeline / "baselines/unet/fewshot/subset0-seed0")[1]["ids"][0]
    index["has_mask"] = (index["id"] != first).astype(int)
    index.to_csv(tmp_path / "prepared.csv", index=False)
    caplog.clear()
    with caplog.at_level("INFO"):
        baseline.main(stage_args(tmp_path, "baselines"))
    assert "unet fewshot/subset0-seed0 left out: 1 of its images have no mask" in caplog.text
    kept = {runs.run_key(f) for f in runs.finished_runs(tmp_path / "baselines", runs.MODEL)}
    assert "unet/fewshot/subset0-seed0" not in kept and any(k.startswith("persam/") for k in kept)


def evaluate_with(root: Path, tmp_path: Path, reprompt_params: dict) -> Path:
    """evaluate on the pipeline's runs with another ``reprompt`` section; returns the metrics JSON's path."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**PARAMS, "reprompt": reprompt_params}))
    data = ["--task", "hc18", "--prepared", str(root / "prepared.zarr"), "--index", str(root / "prepared.csv")]
    data += ["--embeddings", str(root / "embeddings.zarr"), "--models", str(root / "models")]
    outputs = ["--metrics", str(tmp_path / "m.json"), "--per-image", str(tmp_path / "p.csv")]
    evaluate.main(["--params", str(params), *data, *outputs, "--figure", str(tmp_path / "e.png")])
    return tmp_path / "m.json"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"margin": -0.1}, r"params\.yaml: reprompt\.margin: -0\.1 is not a margin; give null"),
        ({"margin": "auto", "candidates": [0.1, -1]}, r"params\.yaml: reprompt\.candidates\.1 is -1; it should be"),
        ({"margin": "auto", "candidates": [0.1], "fallback": "x"}, r"params\.yaml: reprompt\.fallback is 'x'; it"),
        ({"box_threshold": 1.5}, r"params\.yaml: reprompt\.box_threshold: 1\.5 is not a box threshold; give a"),
        ({"box_thresholds": [0.5, 1.0]}, r"params\.yaml: reprompt\.box_thresholds\.1 is 1\.0; it should be"),
        ({"box_thresholds": [0.5, 0.8, 0.5]}, r"params\.yaml: reprompt\.box_thresholds: \[0\.5, 0\.8, 0\.5\] repeats"),
    ],
)
def test_a_bad_reprompt_section_is_refused_in_one_line(pipeline, tmp_path, section, message):
    with pytest.raises(InputError, match=message):
        evaluate_with(pipeline, tmp_path, section)
    assert not (tmp_path / "m.json").exists()


def test_auto_margin_is_chosen_on_the_validation_boxes_and_recorded(pipeline, tmp_path):
    """reprompt.margin: auto picks each group's margin and box threshold with choose_margin on the validation images'
    tight boxes and the group's ensemble there; the re-prompted row uses them, and the metrics JSON records them."""
    candidates, cores = [0.0, 0.05, 0.2], [0.5, 0.9]
    section = {"margin": "auto", "candidates": candidates, "box_thresholds": cores}
    result = json.loads(evaluate_with(pipeline, tmp_path, section).read_text())
    task = pipeline_task(pipeline)
    val = task.rows("val")
    decoder, embeddings, mean, masks = followup_ensemble(pipeline)
    val_embeddings, cpu = task.load_embeddings(val), torch.device("cpu")
    folders = sorted((pipeline / "models/followup/fewshot").iterdir())
    val_mean = torch.stack([decode(decoder, val_embeddings, 640, 8, cpu, head=runs.load_head(f)[0]) for f in folders])
    chosen = choose_margin(decoder, val_embeddings, task.boxes(val), val_mean.mean(0), candidates, 0.5, 8, cpu, cores)
    recorded = result["reprompt"]["groups"]["followup/fewshot"]
    assert result["reprompt"]["margin"] == "auto" and set(result["reprompt"]["groups"]) == {
        "followup/fewshot",
        "workshop/fewshot",
    }
    pairs = [[m, c] for c in cores for m in candidates]
    assert recorded["margin"] == chosen.margin and recorded["choices"] == [None, *pairs]
    assert recorded.get("box_threshold", 0.5) == chosen.box_threshold
    assert recorded["validation_box_iou"] == list(chosen.scores.values())
    assert recorded["validation_images"] == len(val) > 0
    refined = (
        mean
        if chosen.margin is None
        else reprompt(decoder, embeddings, mean, chosen.margin, 0.5, 8, cpu, box_threshold=chosen.box_threshold)
    )
    expected = 100 * float(dice(refined > 0.5, masks).mean())
    assert result["dice"]["followup"]["fewshot_reprompted"]["mean"] == pytest.approx(expected, abs=1e-3)


def test_views_are_encoded_for_every_image_a_few_shot_run_trains_on(pipeline):
    store = zarr.open_group(pipeline / VIEWS, mode="r")
    trained = sorted({i for f in (pipeline / "models/followup/fewshot").iterdir() for i in runs.load_head(f)[1]["ids"]})
    assert sorted({views.source_id(i) for i in store.attrs["ids"]}) == trained
    count = PARAMS["augment"]["count"]
    assert store["embeddings"].shape == (count * len(trained), 256, 64, 64)
    originals = pipeline_task(pipeline)
    first = originals.load_embeddings(originals.rows(ids=(trained[0],)))[0].float()
    view = torch.from_numpy(np.asarray(store["embeddings"][0])).float()
    assert torch.isfinite(view).all() and (view - first).norm() > 0.05 * first.norm(), "a view is its image"


def test_runs_that_draw_views_are_fingerprinted_with_them(pipeline):
    for recipe, drawn in (("followup", True), ("workshop", False)):
        hashes = runs.load_head(pipeline / f"models/{recipe}/fewshot/subset0-seed0")[1]["inputs_sha256"]
        assert ("view_boxes" in hashes and "view_pseudo_labels" in hashes) == drawn, f"{recipe}: {sorted(hashes)}"


@pytest.mark.parametrize("draw", ["suggest", "kcenter"])
def test_augment_draws_by_the_embeddings_for_either_rule(pipeline, tmp_path, monkeypatch, draw):
    """``train.draw: suggest`` and ``kcenter`` both read the embeddings: without them augment says so, with them it
    encodes the views of the training images the draw takes, no more than shots x subsets of them."""
    params = yaml.safe_load((pipeline / "params.yaml").read_text())
    params["train"]["draw"] = draw
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    index = pipeline / "prepared.csv"
    args = ["--params", str(tmp_path / "params.yaml"), "--dataset", "hc18", "--store", str(pipeline / "prepared.zarr")]
    args += ["--index", str(index), "--out", str(tmp_path / VIEWS)]
    with pytest.raises(InputError, match=rf"train\.draw is {draw}, which reads the embeddings; pass --embeddings"):
        augment.main(args)
    drawn: list[list[str]] = []
    monkeypatch.setattr(augment, "encode_views", lambda group, table, ids, *rest: drawn.append(ids))
    augment.main([*args, "--embeddings", str(pipeline / "embeddings.zarr")])
    table = pd.read_csv(index)
    train_ids = set(table.loc[table["split"] == "train", "id"])
    (ids,) = drawn
    assert ids and set(ids) <= train_ids and len(ids) <= params["train"]["shots"] * params["train"]["subsets"]


def test_views_made_with_other_settings_are_refused(pipeline, tmp_path):
    params = yaml.safe_load((pipeline / "params.yaml").read_text())
    params["augment"]["zoom"] = 0.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = stage_args(pipeline)
    args[args.index("--params") + 1] = str(tmp_path / "params.yaml")
    args[args.index("--out") + 1] = str(tmp_path / "models")
    with pytest.raises(InputError, match="views made from other images or augment settings"):
        train.main(args)
    args[args.index("--views") + 1] = str(tmp_path / "missing.zarr")
    with pytest.raises(InputError, match="views store not found; run `dvc repro` \\(the augment stage\\)"):
        train.main(args)


def test_auto_margin_without_validation_images_falls_back(caplog):
    """A task without a validation split (every box trains) takes reprompt.fallback for each group, and says so."""
    with caplog.at_level("WARNING"):
        margins = group_margins(
            RepromptSettings(margin="auto", candidates=(0.0, 0.1), fallback=0.1), None, ["a/fewshot", "b/all"], None,
            torch.zeros(0, 4), {}, 0.5, 8, torch.device("cpu"),
        )  # fmt: skip
    assert margins == {g: {"margin": 0.1, "validation_images": 0} for g in ("a/fewshot", "b/all")}
    assert "no validation images to choose the re-prompt margin on: reprompt.fallback (0.1) it is" in caplog.text

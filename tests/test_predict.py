"""``autoprompt predict`` and ``export`` on a head trained from boxes on ACDC-like phantom volumes (LiteMedSAM).

The inputs are new volumes on grids the model never saw: anisotropic voxels, an oblique direction and odd sizes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
import yaml

from autoprompt import cli
from autoprompt.data.images import as_stack, frame_slices, resample_in_plane
from autoprompt.data.preprocess import fit_label
from autoprompt.errors import InputError
from autoprompt.inference import PostProcessing, Writing, export_model, load_model, predict
from autoprompt.inference.policy import resolve
from autoprompt.inference.predictor import Predictor
from autoprompt.inference.reprompt import reprompt
from autoprompt.inference.volume import refine_volumes
from stages import encode, evaluate, prepare, simulate, train
from tests.helpers import ON_CPU, RUNTIME_CACHE, encode_section, train_section

PARAMS = {
    "datasets": ["acdc"],
    "tasks": {"acdc-lv": {"dataset": "acdc", "class": "lv", "column": "ACDC LV"}},
    "simulate": {"acdc": {"training": 3, "testing": 1, "size": [150, 130], "slices": [4, 4], "seed": 3}},
    "prepare": {
        "seed": 0,
        "on_error": "stop",
        "min_foreground": 10,
        "acdc": {"crop": 192, "fit": "crop", "spacing": 1.0, "drop_empty": True, "split": {"train": 1}},
    },
    "encode": encode_section(batch_size=4, shard_size=8, threads=2),
    "train": train_section(6, 2, {"augmented": (6, 5)}),
}
LV = 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """simulate -> prepare -> encode -> train on ACDC phantoms; returns the task's model folder (2 few-shot runs)."""
    root = tmp_path_factory.mktemp("predict")
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    p = ["--params", str(root / "params.yaml")]
    store, index, emb = root / "acdc.zarr", root / "acdc.csv", root / "emb.zarr"
    simulate.main([*p, "--dataset", "acdc", "--out", str(root / "raw")])
    prepare.main([*p, "--dataset", "acdc", "--raw", str(root / "raw"), "--store", str(store), "--index", str(index)])
    encode.main([*p, "--dataset", "acdc", "--store", str(store), "--out", str(emb)])
    data = ["--prepared", str(store), "--index", str(index), "--embeddings", str(emb)]
    train.main([*p, "--task", "acdc-lv", *data, "--out", str(root / "models")])
    return root / "models"


def regrid(image: sitk.Image, spacing, size, angle_deg: float, interpolator) -> sitk.Image:
    """``image`` resampled onto a new grid about its centre: ``spacing``, ``size`` and its direction turned by
    ``angle_deg`` about the oblique axis (1, 1, 1)."""
    axis = np.ones(3) / np.sqrt(3)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(angle_deg)
    direction = (np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k) @ np.array(image.GetDirection()).reshape(3, 3)
    centre = image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()])
    origin = np.array(centre) - direction @ (np.array(spacing) * (np.array(size) - 1) / 2)
    reference = sitk.Image([int(s) for s in size], image.GetPixelID())
    reference.SetSpacing(spacing)
    reference.SetDirection(direction.ravel().tolist())
    reference.SetOrigin(origin.tolist())
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, 0)


@pytest.fixture(scope="module")
def volume(trained, tmp_path_factory) -> tuple[Path, sitk.Image]:
    """The test patient's ED volume on an anisotropic (0.83 x 1.37 x 7.1 mm), oblique, odd-sized (211 x 119 x 3)
    grid, as NIfTI, with its label on the same grid."""
    folder = trained.parent / "raw/testing/patient004"
    image = sitk.ReadImage(str(folder / "patient004_frame01.nii.gz"))
    label = sitk.ReadImage(str(folder / "patient004_frame01_gt.nii.gz"))
    grid = ((0.83, 1.37, 7.1), (211, 119, 3), 17.0)
    out = tmp_path_factory.mktemp("inputs")
    moved = regrid(image, *grid, sitk.sitkLinear)
    sitk.WriteImage(moved, str(out / "oblique.nii.gz"))
    return out / "oblique.nii.gz", regrid(label, *grid, sitk.sitkNearestNeighbor)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 100 * 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def test_volume_mask_has_the_input_grid_and_its_dice(trained, volume, tmp_path):
    """The written mask has the input's size, spacing, origin and direction, and its Dice in the input's grid is
    within 1 point of the Dice of the same prediction in the prepared frame."""
    path, label = volume
    summary = predict(trained, [path], tmp_path / "out", ON_CPU)
    written = sitk.ReadImage(str(tmp_path / "out/oblique.nii.gz"))
    made = json.loads((tmp_path / "out/predict.json").read_text())  # what made the outputs, for the record
    assert made["numerics"]["mode"] == "exact" and made["encoder"] == {"runtime": "openvino", "precision": "float32"}
    assert made["reprompt_margin"] == load_model(trained).reprompt_margin
    source = sitk.ReadImage(str(path))
    assert summary.written == [tmp_path / "out/oblique.nii.gz"]
    assert written.GetSize() == source.GetSize() == (211, 119, 3)
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(written.GetDirection(), source.GetDirection(), atol=1e-6)
    mask = sitk.GetArrayFromImage(written)
    assert written.GetPixelID() == sitk.sitkUInt8 and set(np.unique(mask)) <= {0, 1}

    model = load_model(trained)
    predictor = Predictor(model, torch.device("cpu"), cache_dir=RUNTIME_CACHE)
    assert (model.runtime, predictor.encoder.runtime) == ("openvino", "openvino")  # trained and predicted alike
    segmentation = predictor.segment(source)
    np.testing.assert_array_equal(mask, segmentation.probabilities > 0.5)
    truth = sitk.GetArrayFromImage(label) == LV
    # the label through the same steps as the image: in-plane resampling (nearest) and the fit of each slice
    stack = as_stack(label)
    on_grid = sitk.GetArrayFromImage(resample_in_plane(stack.stack, 1.0, sitk.sitkNearestNeighbor)) == LV
    framed = frame_slices(as_stack(source), model.preprocessing)
    truth_frame = np.stack([fit_label(s, 192, g) for s, g in zip(on_grid, framed.geometries, strict=True)])
    in_frame, in_input = dice(segmentation.frame > 0.5, truth_frame), dice(mask, truth)
    assert in_frame > 60, f"the head should find the LV (Dice {in_frame:.1f} in the prepared frame)"
    assert abs(in_input - in_frame) < 1.0, f"Dice {in_input:.2f} in the input grid vs {in_frame:.2f} in the frame"


def test_png_mha_and_nifti_through_one_model_and_a_corrupt_file_skipped(trained, volume, tmp_path, caplog):
    """One model segments a 2D PNG, an MHA and a NIfTI volume from one folder; a corrupt file stops the run unless
    --on-error skip, which counts it; a second run keeps what exists."""
    path, _ = volume
    source = sitk.ReadImage(str(path))
    folder = tmp_path / "in"
    folder.mkdir()
    sitk.WriteImage(source, str(folder / "scan.mha"))
    sitk.WriteImage(source, str(folder / "volume.nii.gz"))
    middle = sitk.GetArrayFromImage(source)[1].astype(np.float32)
    picture = np.rint(255 * (middle - middle.min()) / np.ptp(middle)).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(picture), str(folder / "slice.png"))
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not a volume")
    out = tmp_path / "out"
    args = ["predict", "-m", str(trained), "-i", str(folder), "-o", str(out), "--device", "cpu", "--overlay"]
    with pytest.raises(InputError, match=r"broken\.nii\.gz: unreadable"):
        cli.main(args)
    with caplog.at_level("WARNING"), pytest.raises(SystemExit, match="1 unreadable inputs were skipped"):
        cli.main([*args, "--on-error", "skip", "--label-value"])
    assert "broken.nii.gz" in caplog.text
    mha, nii, png = (sitk.ReadImage(str(out / n)) for n in ("scan.mha", "volume.nii.gz", "slice.png"))
    assert mha.GetSize() == nii.GetSize() == source.GetSize() and png.GetSize() == picture.shape[::-1]
    np.testing.assert_allclose(mha.GetDirection(), source.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mha), sitk.GetArrayFromImage(nii))
    assert set(np.unique(sitk.GetArrayFromImage(mha))) == {0, LV}, "bare --label-value writes the class's value"
    assert sitk.GetArrayFromImage(png).any(), "the PNG slice is segmented too"
    assert all((out / f"{n}_overlay.png").is_file() for n in ("scan", "volume", "slice"))
    sitk.WriteImage(source, str(folder / "scan.nii.gz"))  # scan_overlay.png would be two inputs' overlay
    with pytest.raises(InputError, match=r"scan\.nii\.gz: its output .*scan_overlay\.png would overwrite one of .*"
                       r"scan\.mha's; rename one of them"):  # fmt: skip
        cli.main(args)
    (folder / "scan.nii.gz").unlink()
    summary = predict(trained, [folder / "scan.mha", folder / "slice.png"], out, ON_CPU)
    assert summary.written == [] and len(summary.existing) == 2, "existing outputs are kept"


def test_ensemble_is_the_mean_of_its_runs_probabilities(trained, volume):
    path, _ = volume
    runs = sorted(p.parent for p in trained.rglob("head.pt"))
    assert len(runs) == 2
    device = torch.device("cpu")
    ensemble = Predictor(load_model(trained), device, cache_dir=RUNTIME_CACHE)
    framed = frame_slices(as_stack(sitk.ReadImage(str(path))), ensemble.model.preprocessing)
    embeddings = ensemble.encode(framed.slices)
    each = [Predictor(load_model(r), device, cache_dir=RUNTIME_CACHE).decode(embeddings) for r in runs]
    assert not np.allclose(each[0], each[1]), "two different runs"
    np.testing.assert_allclose(ensemble.decode(embeddings), (each[0] + each[1]) / 2, atol=1e-6)


def test_reprompt_margin_replaces_the_ensembles_probabilities_by_its_boxes_answer(trained, volume, tmp_path):
    path, _ = volume
    device = torch.device("cpu")
    plain = Predictor(load_model(trained), device, cache_dir=RUNTIME_CACHE)
    again = Predictor(load_model(trained), device, cache_dir=RUNTIME_CACHE, reprompt_margin=0.1, threshold=0.5)
    embeddings = plain.encode(frame_slices(as_stack(sitk.ReadImage(str(path))), plain.model.preprocessing).slices)
    probs = torch.from_numpy(plain.decode(embeddings))
    expected = reprompt(plain.decoder, embeddings, probs, 0.1, 0.5, plain.batch_size, device).numpy()
    np.testing.assert_allclose(again.decode(embeddings), expected, atol=1e-6)
    assert not np.allclose(expected, probs.numpy()), "the box prompts answer differently"
    core = float(np.quantile(probs.numpy()[probs.numpy() > 0.5], 0.5))  # half of the mask's pixels are above it
    cored = Predictor(load_model(trained), device, cache_dir=RUNTIME_CACHE, reprompt_margin=0.1, box_threshold=core)
    expected = reprompt(plain.decoder, embeddings, probs, 0.1, 0.5, plain.batch_size, device, box_threshold=core)
    np.testing.assert_allclose(cored.decode(embeddings), expected.numpy(), atol=1e-6)
    with pytest.raises(InputError, match=r"reprompt margin is -0\.1"):
        Predictor(load_model(trained), device, cache_dir=RUNTIME_CACHE, reprompt_margin=-0.1)


def test_volume_fit_follows_re_prompting_and_leaves_the_volumes_ends_alone(trained, volume):
    """``volume_min_iou`` refits the re-prompted masks' boxes across the volume's slices in order, never carrying a
    box past the volume's ends; without re-prompting it does nothing."""
    path, _ = volume
    device = torch.device("cpu")
    plain = Predictor(load_model(trained), device, cache_dir=RUNTIME_CACHE, reprompt_margin=0.1)
    fitted = Predictor(load_model(trained), device, cache_dir=RUNTIME_CACHE, reprompt_margin=0.1, volume_min_iou=0.9)
    embeddings = plain.encode(frame_slices(as_stack(sitk.ReadImage(str(path))), plain.model.preprocessing).slices)
    reprompted = torch.from_numpy(plain.decode(embeddings))
    slices = torch.arange(len(reprompted))
    expected, _ = refine_volumes(plain.decoder, embeddings, reprompted, [slices], slices.double(), 0.1, 0.9, False,
                                 0.5, plain.batch_size, device)  # fmt: skip
    np.testing.assert_allclose(fitted.decode(embeddings), expected.numpy(), atol=1e-6)
    off = Predictor(load_model(trained), device, cache_dir=RUNTIME_CACHE, volume_min_iou=0.9)
    np.testing.assert_array_equal(off.decode(embeddings), Predictor(load_model(trained), device,
                                  cache_dir=RUNTIME_CACHE).decode(embeddings))  # fmt: skip
    with pytest.raises(InputError, match=r"volume min IoU is 1\.5"):
        Predictor(load_model(trained), device, cache_dir=RUNTIME_CACHE, volume_min_iou=1.5)


def test_predictor_fills_a_slice_missed_between_found_ones(trained, volume, monkeypatch):
    """A re-prompted middle slice lost (empty between two found ones) is prompted again from its neighbours' boxes
    when the fit is on, and counted; with the fit off it stays empty."""
    import autoprompt.inference.predictor as predictor_module

    path, _ = volume
    device = torch.device("cpu")

    def losing_the_middle_slice(*args, **kwargs):
        probs = reprompt(*args, **kwargs)
        probs[1] = 0.0
        return probs

    monkeypatch.setattr(predictor_module, "reprompt", losing_the_middle_slice)
    fitted = Predictor(load_model(trained), device, cache_dir=RUNTIME_CACHE, reprompt_margin=0.1, volume_min_iou=0.0)
    plain = Predictor(load_model(trained), device, cache_dir=RUNTIME_CACHE, reprompt_margin=0.1)
    embeddings = plain.encode(frame_slices(as_stack(sitk.ReadImage(str(path))), plain.model.preprocessing).slices)
    kept, _, none, _, _ = plain._decode(embeddings)
    assert len(kept) == 3 and (kept[[0, 2]] > 0.5).reshape(2, -1).any(axis=1).all(), "both neighbours are found"
    assert not (kept[1] > 0.5).any() and not none
    filled, _, refitted, _, _ = fitted._decode(embeddings)
    assert refitted == {"gap": 1} and (filled[1] > 0.5).any(), "the lost slice is segmented again"
    np.testing.assert_array_equal(filled[[0, 2]], kept[[0, 2]])


def test_reprompt_from_reads_the_margin_evaluate_chose_for_the_models_recipe(trained, tmp_path):
    model = load_model(trained)
    group, other = model.group(), "other/fewshot"
    assert group == "augmented/fewshot", "the fixture's runs are of one recipe and regime"
    metrics = tmp_path / "metrics.json"

    def recorded(groups: dict, model=model) -> float | None:
        metrics.write_text(json.dumps({"reprompt": {"margin": "auto", "groups": groups}}))
        return resolve(model.policy, model.group(), reprompt_from=metrics)[0].margin

    assert recorded({group: {"margin": 0.05}, other: {"margin": 0.2}}) == 0.05
    assert recorded({group: {"margin": None}}) is None, "evaluate chose no re-prompting"
    with pytest.raises(InputError, match=r"metrics.json: no margin recorded for augmented/fewshot; evaluate"):
        recorded({other: {"margin": 0.1}})
    metrics.write_text(json.dumps({"dice": {}}))
    with pytest.raises(InputError, match=r"metrics.json: no re-prompt margins in it \(KeyError\); give evaluate's"):
        resolve(model.policy, group, reprompt_from=metrics)
    mixed = dataclasses.replace(model, runs=[*model.runs, f"{other}/subset0-seed0"])
    with pytest.raises(InputError, match=r"margins are per recipe and regime; give a model of one"):
        recorded({group: {"margin": 0.1}}, mixed)
    for volume, expected in (({"min_iou": 0.3}, 0.3), (None, None)):
        metrics.write_text(
            json.dumps({"reprompt": {"margin": 0.1, "groups": {group: {"margin": 0.1}}, "volume": volume}})
        )
        assert resolve(model.policy, group, reprompt_from=metrics)[0].volume_min_iou == expected, "evaluate's fit"
    metrics.write_text(json.dumps({"reprompt": {"margin": 0.1, "groups": {group: {"margin": 0.1}}}}))
    chosen, sources = resolve(model.policy, group, reprompt_from=metrics)
    assert chosen.volume_min_iou == model.volume_min_iou and sources["volume_min_iou"] == "the model's", "none recorded"


def test_exported_model_predicts_the_same_masks_and_checks_its_backbone(trained, volume, tmp_path):
    path, _ = volume
    cli.main(["export", "-m", str(trained), "-o", str(tmp_path / "model.pt")])
    exported = load_model(tmp_path / "model.pt")
    record = torch.load(tmp_path / "model.pt", weights_only=True)
    assert record["backbone"] == "lite_medsam" and len(record["heads"]) == 2 and record["label_value"] == LV
    assert record["preprocessing"] == {"crop": 192, "fit": "crop", "spacing": 1.0, "clip": [0.5, 99.5]}
    assert record["configs"][0]["train"]["epochs"] == 6, "the training params travel with the model"
    probabilities = Writing(probabilities=True)
    predict(trained, [path], tmp_path / "from_runs", ON_CPU, probabilities)
    predict(tmp_path / "model.pt", [path], tmp_path / "from_file", ON_CPU, probabilities)
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / path.name))) for d in ("from_runs", "from_file"))
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)

    exported.checkpoint_sha256 = "0" * 64
    export_model(exported, tmp_path / "other.pt")
    with pytest.raises(InputError, match="differs from the 0000000000000000"):
        predict(tmp_path / "other.pt", [path], tmp_path / "refused", ON_CPU)
    assert not (tmp_path / "refused").exists()


def test_bad_model_paths_get_one_line_errors(trained, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no trained run"):
        load_model(tmp_path / "empty")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not an exported autoprompt model"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(InputError, match="no such file or folder"):
        predict(trained, [tmp_path / "missing.png"], tmp_path / "out")


def test_a_thread_count_below_one_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["predict", "-m", str(tmp_path), "-i", str(tmp_path), "-o", str(tmp_path / "out"), "--threads", "0"])
    assert "--threads: 0 threads; give 1 or more" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_evaluate_on_volumes_scores_each_re_prompted_row_fitted_across_the_slices(trained, tmp_path):
    """Slices of volumes: each re-prompted row has a ``volume`` twin, and the metrics count the slices prompted
    again; ``reprompt.volume: null`` leaves it out; the example figure shows the same rows either way."""
    root = trained.parent
    data = ["--prepared", str(root / "acdc.zarr"), "--index", str(root / "acdc.csv"), "--embeddings",
            str(root / "emb.zarr")]  # fmt: skip
    out = {}
    for name, fit in (("on", {"min_iou": 0.5}), ("off", None)):
        params, folder = tmp_path / f"{name}.yaml", tmp_path / name
        params.write_text(yaml.safe_dump({**PARAMS, "reprompt": {"margin": 0.1, "volume": fit}}))
        outputs = ["--metrics", str(folder / "m.json"), "--per-image", str(folder / "m.csv"), "--figure",
                   str(folder / "m.png")]  # fmt: skip
        evaluate.main(["--params", str(params), "--task", "acdc-lv", *data, "--models", str(trained), *outputs])
        out[name] = (json.loads((folder / "m.json").read_text()), pd.read_csv(folder / "m.csv").columns)
        assert cv2.imread(str(folder / "m.png")).shape == cv2.imread(str(tmp_path / "on/m.png")).shape
    (metrics, columns), (plain, plain_columns) = out["on"], out["off"]
    assert "fewshot_volume" not in plain["dice"]["augmented"] and plain["reprompt"]["volume"] is None
    assert "dice:augmented/fewshot_volume" not in plain_columns
    counts = metrics["reprompt"]["volume"]["slices_prompted_again"]["augmented/fewshot"]
    assert set(counts) == {"gap", "off", "end"} and metrics["reprompt"]["volume"]["min_iou"] == 0.5
    assert "dice:augmented/fewshot_volume" in columns
    assert set(metrics["misses"]["augmented"]["fewshot_volume"]) >= {"below_50_dice", "empty", "n"}
    rows = metrics["dice"]["augmented"]
    assert rows["fewshot_reprompted"] == plain["dice"]["augmented"]["fewshot_reprompted"]
    if not any(counts.values()):
        assert rows["fewshot_volume"] == rows["fewshot_reprompted"], "no slice prompted again: the same masks"


@pytest.fixture(scope="module")
def beyond(trained, tmp_path_factory) -> Path:
    """A test patient whose volume reaches past its heart (simulate.acdc.beyond: the atria and vessels above the
    base, the apical cap and the liver below the apex), prepared and encoded like the fixture's; returns its
    folder."""
    root = tmp_path_factory.mktemp("beyond")
    phantoms = {**PARAMS["simulate"]["acdc"], "training": 1, "testing": 1, "beyond": 2}
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({**PARAMS, "simulate": {"acdc": phantoms}}))
    p = ["--params", str(params)]
    simulate.main([*p, "--dataset", "acdc", "--out", str(root / "raw")])
    prepare.main([*p, "--dataset", "acdc", "--raw", str(root / "raw"), "--store", str(root / "acdc.zarr"),
                  "--index", str(root / "acdc.csv")])  # fmt: skip
    encode.main([*p, "--dataset", "acdc", "--store", str(root / "acdc.zarr"), "--out", str(root / "emb.zarr")])
    return root


def test_whole_volumes_show_the_false_slices_and_presence_rows_count_what_they_empty(trained, beyond, tmp_path):
    """Past the heart the heads draw masks where there is nothing to find: evaluate scores the test volume whole
    (its empty slices too) and counts them; its presence row empties no more than the false and true slices it
    says, and predict --reprompt-from with autoprompt evaluate count the same false slices as evaluate's rows. (How
    many the rule empties depends on the model: bench/studies/presence.py measures it on a trained ensemble.)"""
    from autoprompt.evaluation.folders import evaluate_folder

    data = ["--prepared", str(beyond / "acdc.zarr"), "--index", str(beyond / "acdc.csv"), "--embeddings",
            str(beyond / "emb.zarr")]  # fmt: skip
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({**PARAMS, "reprompt": {"margin": 0.1}}))  # the default fit and presence
    outputs = ["--metrics", str(tmp_path / "m.json"), "--per-image", str(tmp_path / "m.csv"), "--figure",
               str(tmp_path / "m.png")]  # fmt: skip
    evaluate.main(["--params", str(params), "--task", "acdc-lv", *data, "--models", str(trained), *outputs])
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["whole_volumes"] == {"volumes": 1, "slices": 8, "slices_with_structure": 4}
    assert metrics["test_images"] == 4, "the paper's protocol: the slices that hold the structure"
    slices = metrics["slices"]
    assert (slices["tight_box"]["false"], slices["tight_box"]["missed"]) == (0, 0), "no box, no mask"
    before, after = slices["augmented"]["fewshot_volume"], slices["augmented"]["fewshot_presence"]
    assert before["false"] >= 2, f"the heads draw masks past the heart: {before}"
    emptied = metrics["reprompt"]["presence"]["slices_emptied"]["augmented/fewshot"]["whole_volumes"]
    assert emptied == (before["false"] - after["false"]) + (after["missed"] - before["missed"]), (before, after)
    assert "fewshot_presence" in metrics["dice"]["augmented"] and metrics["reprompt"]["presence"]["cues"]
    assert set(metrics["whole_dice_3d"]["augmented"]) >= {"fewshot", "fewshot_volume", "fewshot_presence"}

    volume = beyond / "raw/testing/patient002/patient002_frame01.nii.gz"
    reference = tmp_path / "masks"
    reference.mkdir()
    label = sitk.ReadImage(str(beyond / "raw/testing/patient002/patient002_frame01_gt.nii.gz"))
    sitk.WriteImage(sitk.Cast(label == LV, sitk.sitkUInt8), str(reference / volume.name))
    counts = {}
    for name, presence in (("kept", None), ("emptied", "model")):
        out = tmp_path / name
        predict(
            trained, [volume], out, ON_CPU, post=PostProcessing(presence=presence, reprompt_from=tmp_path / "m.json")
        )
        evaluate_folder(out, reference)
        counts[name] = json.loads((out / "evaluation.json").read_text())["slices"]
    assert counts["kept"]["false"] == before["false"], (counts, before)
    assert counts["emptied"] == {"false": after["false"], "missed": after["missed"]}, (counts, after)


def test_predicts_option_groups_refuse_bad_values_when_built():
    """The command builds each group once; a bad value is refused there, in one line, before any work."""
    from autoprompt.inference import Part

    with pytest.raises(InputError, match=r"on_error is 'ignore'; use stop or skip"):
        Writing(on_error="ignore")
    with pytest.raises(InputError, match=r"--threshold 1\.5: give a probability from 0 to 1"):
        Writing(threshold=1.5)
    with pytest.raises(InputError, match=r"output format 'png'; give one of auto, dicom-seg, nifti"):
        Writing(output_format="png")
    with pytest.raises(InputError, match=r"part 2 of 2: give 0 <= --part-id < --num-parts"):
        Part(2, 2)
    assert Part().suffix == "" and Part(1, 3).suffix == "-part1of3"

"""Table 1's baselines: each learns a handful of phantoms, PerSAM segments one from another's mask, the table puts
every computed row under its paper row."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autoprompt.data import hc18
from autoprompt.data.preprocess import crop_or_pad
from autoprompt.errors import InputError
from autoprompt.evaluation import report
from autoprompt.evaluation.metrics import dice
from autoprompt.model import backbones, runtimes
from autoprompt.model import baselines as methods
from autoprompt.model.baselines import persam
from autoprompt.settings import METHOD_SECTIONS, HeadInit, MethodSettings
from autoprompt.training.baselines import BaselineConfig, make_model, predict_baseline, train_baseline
from tests import helpers
from tests.helpers import RUNTIME_CACHE, prepare_section

SIZE = 128  # the phantoms' label size here
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def phantoms(hc18_phantoms, lite_checkpoint):
    """Five HC18 phantoms at 128 x 128: uint8 images, boolean head masks, tight boxes and LiteMedSAM embeddings."""
    section = prepare_section("hc18")
    cases = [hc18.load(files, section)[0] for files in hc18.find(hc18_phantoms, section)[:5]]
    crops = [(crop_or_pad(c.image, 640), crop_or_pad(c.label, 640)) for c in cases]
    images = F.interpolate(torch.from_numpy(np.stack([i for i, _ in crops]))[:, None].float(), size=(SIZE, SIZE))
    images = images[:, 0].round().clamp(0, 255).to(torch.uint8)
    masks = F.interpolate(torch.from_numpy(np.stack([m for _, m in crops]) > 0)[:, None].float(), size=(SIZE, SIZE))
    masks = masks[:, 0] > 0.5
    boxes = torch.stack([_box(m) for m in masks])
    encoder = runtimes.build_encoder("lite_medsam", lite_checkpoint, runtimes.choose("auto", CPU), CPU, RUNTIME_CACHE)
    embeddings = runtimes.embed(encoder, "lite_medsam", images, 5).float()
    decoder = backbones.build_prompt_decoder("lite_medsam", lite_checkpoint)
    return images, masks, boxes, embeddings, decoder


def _box(mask: torch.Tensor) -> torch.Tensor:
    rows, cols = torch.nonzero(mask.any(1)).flatten(), torch.nonzero(mask.any(0)).flatten()
    return torch.stack([cols[0], rows[0], cols[-1], rows[-1]])


def settings(name: str, epochs: int, lr: float = 1e-3, **extra: object) -> MethodSettings:
    """A tiny ``baseline.<name>`` section."""
    return METHOD_SECTIONS[name].model_validate(
        {
            "epochs": {"fewshot": epochs, "all": epochs},
            "milestones": {"fewshot": [epochs], "all": [epochs]},
            "gamma": 0.1,
            "batch_size": 4,
            "lr": lr,
            "weight_decay": 0.0,
            "augment": {"dihedral": 0.0, "zoom": 0.0, "shift": 0.0},
            **extra,
        }
    )


START = HeadInit()  # train.init's default: the mean training box's prompt


OVERFIT = {
    "unet": settings("unet", 150, input_size=64, channels=[8, 16, 32, 64], strides=[2, 2, 2], res_units=1),
    "transunet": settings("transunet", 60, input_size=64, encoder="vit_tiny_r_s16_p8_224", weights=None),
    "autosam": settings("autosam", 30, lr=3e-3, input_size=64, encoder="resnet18", weights=None),
    "head_masks": settings("head_masks", 12, lr=3e-3),
}
PHANTOMS = {"autosam": 2}  # how many phantoms each fits (default 4): AutoSAM's CNN is the slowest to fit, on two here


@pytest.mark.parametrize("name", sorted(OVERFIT))
def test_each_baseline_learns_a_handful_of_phantoms(name, phantoms):
    """Trained on the masks of a few phantoms (``PHANTOMS``), each baseline segments them with Dice above 0.9."""
    n = PHANTOMS.get(name, 4)
    images, masks, boxes, embeddings = (part[:n] for part in phantoms[:4])
    decoder = phantoms[4]
    section = OVERFIT[name]
    size = getattr(section, "input_size", None)
    model = make_model(name, section, decoder, 0, boxes, SIZE, START)
    before = predict_baseline(name, model, decoder, images, embeddings, SIZE, size, 4, CPU)
    config = BaselineConfig.from_settings(section, "fewshot")
    model = train_baseline(name, model, decoder, images, embeddings, masks, config, 0, CPU)
    after = predict_baseline(name, model, decoder, images, embeddings, SIZE, size, 4, CPU)
    score = float(dice(after > 0.5, masks).mean())
    assert score > 0.9, f"{name}: training Dice {score:.3f} on {n} phantoms"
    assert score > float(dice(before > 0.5, masks).mean()) + 0.05, f"{name} did not learn"


def test_persam_segments_a_phantom_from_one_reference(phantoms):
    """PerSAM, given the first phantom's mask, puts its positive point inside each other phantom's head and its
    negative point outside, and its refined masks overlap every head (no training)."""
    _, masks, _, embeddings, decoder = phantoms
    model = make_model("persam", METHOD_SECTIONS["persam"](references=1), decoder, 0, None, SIZE, START)
    model = train_baseline("persam", model, decoder, None, embeddings[:1], masks[:1], None, 0, CPU)
    assert model.location.norm() == pytest.approx(1.0, abs=1e-5)
    coords, labels = persam.points(persam.confidence(model.location, embeddings[1:], SIZE), decoder.input_size)
    pixels = (coords * SIZE / decoder.input_size).long()
    for i, ((x, y), (xn, yn)) in enumerate(pixels.tolist()):
        assert masks[1 + i, y, x] and not masks[1 + i, yn, xn], f"phantom {i + 1}: points {pixels[i].tolist()}"
    assert labels.tolist() == [[1, 0]] * 4
    probs = predict_baseline("persam", model, decoder, None, embeddings[1:], SIZE, None, 4, CPU)
    scores = dice(probs > 0.5, masks[1:])
    assert bool((scores > 0.2).all()) and float(scores.mean()) > 0.3, f"PerSAM Dice {scores.tolist()}"


def test_baseline_methods_and_recipe_names_are_checked():
    with pytest.raises(InputError, match=r"test params: baseline\.methods\.1 is 'nnunet'; it should be 'unet'"):
        helpers.settings(baseline={"methods": ["unet", "nnunet"], "unet": {}})
    with pytest.raises(InputError, match=r"baseline: method unet has no section; add baseline\.unet"):
        helpers.settings(baseline={"methods": ["unet"]})
    recipe = helpers.TRAIN["recipes"]["workshop"]
    with pytest.raises(InputError, match=r"train\.recipes unet shares a baseline's name"):
        helpers.settings(
            train={"recipe": "unet", "recipes": {"unet": recipe}},
            baseline={"methods": ["unet"], "unet": settings("unet", 1).model_dump()},
        )
    assert methods.title("transunet", settings("transunet", 1)).endswith("(vit_base_r50_s16_224, no pretraining)")
    assert "no pretraining" not in methods.title("autosam", settings("autosam", 1, weights="resnet101.pth"))


def test_autosam_weights_are_local_and_checked(tmp_path, phantoms):
    """AutoSAM's CNN loads a local state dict (weights only) and refuses a missing, foreign or non-dict file by name."""
    decoder = phantoms[4]
    torch.manual_seed(1)
    source = make_model("autosam", OVERFIT["autosam"], decoder, 1, None, SIZE, START)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": source.cnn.state_dict()}, path)
    with_weights = OVERFIT["autosam"].model_copy(update={"weights": str(path)})
    loaded = make_model("autosam", with_weights, decoder, 0, None, SIZE, START)
    assert loaded.pretrained and torch.equal(loaded.cnn.conv1.weight, source.cnn.conv1.weight)
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "foreign.pth")
    torch.save([torch.zeros(3)], tmp_path / "list.pth")  # readable, but not a state dict
    for name in ("missing.pth", "foreign.pth", "list.pth"):
        section = OVERFIT["autosam"].model_copy(update={"weights": str(tmp_path / name)})
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            make_model("autosam", section, decoder, 0, None, SIZE, START)


def _metrics(value: float, methods_: dict | None = None) -> dict:
    summary = {"mean": value, "std": 1.0, "n": 2}
    baselines = {m: {"fewshot": summary, "all": summary} for m in ("unet", "transunet", "autosam", "head_masks")}
    tree = {"tight_box": summary, "workshop": {"fewshot": summary, "all": summary}, **baselines,
            "persam": {"oneshot": summary}}  # fmt: skip
    return {"dice": tree, "nsd": tree, "methods": methods_ or {}}


def test_the_table_puts_every_computed_baseline_under_its_paper_row():
    titles = {"unet": "UNet (MONAI)", "transunet": "TransUNet (vit_tiny_r_s16_p8_224, no pretraining)",
              "autosam": "AutoSAM (resnet18, no pretraining)", "head_masks": "Prompt module trained with masks",
              "persam": "PerSAM"}  # fmt: skip
    table = report.build_table({"hc18": _metrics(80.0, titles)}, {"hc18": "HC"}, ["workshop"], "lite_medsam", 8)
    methods_ = table["method"].tolist()
    for paper, ours, samples in (
        ("UNet", "UNet (MONAI) — ours", "All"),
        ("TransUNet", "TransUNet (vit_tiny_r_s16_p8_224, no pretraining) — ours", "8"),
        ("AutoSAM", "AutoSAM (resnet18, no pretraining) — ours", "All"),
        ("PerSAM", "PerSAM — ours", "1"),
    ):
        rows = table[(table["method"] == paper) & (table["source"] == "paper")]
        assert len(rows), f"no paper row {paper}"
        for index in rows.index:
            below = table.loc[index + 1]
            assert below["source"] == "ours" and below["method"].startswith(ours.split(" — ")[0]), (paper, below)
            assert below["HC"] == "80.00 ± 1.00"
        assert any(m.startswith(ours) for m in methods_)
        assert ((table["method"].str.startswith(ours)) & (table["samples"] == samples)).any(), (ours, samples)
    # the head trained with masks is not in the paper: our rows only, no empty paper row
    assert not ((table["source"] == "paper") & table["method"].str.startswith("Prompt module trained")).any()
    assert (table["method"].str.startswith("Prompt module trained with masks — ours")).sum() == 2
    surface = report.surface_table({"hc18": _metrics(80.0, titles)}, {"hc18": "HC"}, ["workshop"], "lite_medsam", 8)
    assert surface["method"].str.startswith("PerSAM").any()


def test_the_table_opens_with_the_rows_to_compare_in_the_columns_run():
    """table.md first shows the tight box, the paper's few-shot row beside our best recipe re-prompted, and our best
    few-mask baseline beside the paper's; every row follows. A one-task pipeline gets its one column."""
    metrics = _metrics(70.0)
    metrics["dice"]["unet"]["fewshot"] = {"mean": 75.0, "std": 1.0, "n": 2}
    metrics["dice"]["unet"]["all"] = {"mean": 99.0, "std": 0.0, "n": 1}  # All masks: not the few-shot comparison
    for recipe, value in (("workshop", 80.0), ("augmented", 86.0)):
        metrics["dice"][recipe] = {"fewshot_reprompted": {"mean": value, "std": 5.0, "n": 7}}
    table = report.build_table({"hc18": metrics}, {"hc18": "HC"}, ["workshop", "augmented"], "lite_medsam", 10)
    assert [c for c in table.columns if c not in report.HIDDEN] == ["method", "samples", "labels", "HC"]
    first = report.headline(table)
    assert first["method"].tolist() == [
        "MedSAM (tight box prompt)",
        "LiteMedSAM (tight box prompt) — ours",
        "Prompt module",
        "Prompt module, follow-up losses, zoom/shift augmentation, re-prompted with its mask's box — ours, LiteMedSAM",
        "UNet",
        "unet — ours, LiteMedSAM",
    ]
    assert first["samples"].tolist() == ["-", "-", "10", "10", "10", "10"]
    page = report.to_markdown(table, "Table 1", "note", first)
    top, rest = page.split("## Every row")
    assert "**86.00 ± 5.00**" in top and "**80.00 ± 5.00**" not in top and "**80.00 ± 5.00**" in rest
    assert len(rest.splitlines()) > len(top.splitlines()), "every row below the headline"

"""Run plans, the training loop's determinism and start check, and saved runs."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from autoprompt.data import hc18
from autoprompt.data.prepared import task_table
from autoprompt.data.preprocess import crop_or_pad
from autoprompt.errors import InputError
from autoprompt.model import backbones, runtimes
from autoprompt.model.decoding import decode
from autoprompt.model.head import PromptHead
from autoprompt.settings import TrainSettings
from autoprompt.sources import sources_sha256
from autoprompt.training import runs
from autoprompt.training.fewshot import ALL, FEWSHOT, box_areas, draw_areas, draw_subset, fewshot_ids, plan_runs
from autoprompt.training.loop import check_start, live_fraction, make_head, train_head
from autoprompt.training.validation import ValidationSet, score
from tests.helpers import TRAIN, prepare_section, sources_of, train_config

IDS = [f"{i:03d}_HC" for i in range(30)]


@pytest.fixture(scope="module")
def lite_decoder(lite_checkpoint):
    return backbones.build_prompt_decoder("lite_medsam", lite_checkpoint)


def test_plan_is_subsets_x_seeds_then_all_images():
    plan = plan_runs(IDS, 10, subsets=3, seeds=[0, 1, 2], subset_seed=0, all_images=True)
    fewshot = [r for r in plan if r.regime == FEWSHOT]
    assert len(fewshot) == 9 and all(len(r.ids) == 10 for r in fewshot)
    assert len({r.ids for r in fewshot}) == 3, "three subsets, shared by the three seeds"
    assert [r.key for r in plan if r.regime == ALL] == ["all/seed0", "all/seed1", "all/seed2"]
    assert all(len(r.ids) == 30 for r in plan if r.regime == ALL)
    assert plan == plan_runs(list(reversed(IDS)), 10, 3, [0, 1, 2], 0, True), "independent of row order"
    assert [r.regime for r in plan_runs(IDS, "all", 3, [0], 0, False)] == [ALL]


def test_subsets_are_reproducible_and_seeded():
    assert draw_subset(IDS, 10, 1, 0) == draw_subset(IDS, 10, 1, 0)
    assert draw_subset(IDS, 10, 1, 0) != draw_subset(IDS, 10, 2, 0)
    assert draw_subset(IDS, 10, 1, 0) != draw_subset(IDS, 10, 1, 7)
    with pytest.raises(InputError, match=r"train\.shots is 31, more than the 30 training images"):
        plan_runs(IDS, 31, 3, [0], 0, False)


def test_a_box_area_draw_takes_one_shot_from_each_stratum_of_sizes():
    areas = {i: float(n) for n, i in enumerate(reversed(IDS))}  # 30 areas, largest first by id
    strata = [set(sorted(IDS, key=areas.get)[k : k + 3]) for k in range(0, 30, 3)]  # 10 strata of 3 by area
    for subset in range(5):
        drawn = draw_subset(IDS, 10, subset, 0, areas)
        assert sorted(len(stratum & set(drawn)) for stratum in strata) == [1] * 10, drawn
    assert len({draw_subset(IDS, 10, s, 0, areas) for s in range(5)}) == 5, "subsets differ within the strata"
    uniform = [draw_subset(IDS, 10, s, 0) for s in range(50)]
    assert any(sum(bool(stratum & set(d)) for stratum in strata) < 10 for d in uniform), "uniform leaves gaps"
    plan = plan_runs(IDS, 10, 2, [0], 0, False, areas=areas)
    assert [r.ids for r in plan] == [draw_subset(IDS, 10, s, 0, areas) for s in range(2)]
    rows = pd.DataFrame({"id": ["a", "b"], "x0": [0, 10], "y0": [0, 10], "x1": [4, 30], "y1": [2, 20]})
    assert box_areas(rows) == {"a": 15.0, "b": 231.0}, "inclusive pixel corners"


def test_the_views_are_encoded_for_the_shots_that_each_draw_trains_on():
    """augment encodes the views of ``fewshot_ids``; the train stage's runs must draw from exactly those."""
    sizes = [10 + 3 * n for n in range(30)]
    table = pd.DataFrame({"id": IDS, "subject": IDS, "split": ["train"] * 24 + ["test"] * 6, "head_area": 500})
    table = table.assign(head_x0=0, head_y0=0, head_x1=sizes, head_y1=sizes)
    rows = task_table(table, "head", 10)
    rows = rows[rows["split"] == "train"]
    for draw in ("uniform", "box_area"):
        train = TrainSettings(shots=4, subsets=3, draw=draw)
        plan = plan_runs(rows["id"].tolist(), 4, 3, [0], 0, False, areas=draw_areas(rows, train))
        drawn = sorted({i for run in plan for i in run.ids})
        assert fewshot_ids(table, {"hc18": "head"}, 10, train) == drawn, draw
    assert draw_areas(rows, TrainSettings(draw="uniform")) is None


def test_training_is_deterministic_and_moves_the_head(lite_decoder):
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(4, 256, 64, 64, generator=generator).half()
    boxes = torch.tensor([[20, 30, 90, 100], [10, 10, 60, 80], [40, 40, 120, 110], [5, 50, 70, 120]])
    pseudo = decode(lite_decoder, embeddings, 128, 4, torch.device("cpu"), boxes=boxes) > 0.5
    for recipe in ("workshop", "followup", "augmented"):
        settings = train_config(recipe)
        heads = [
            train_head(embeddings, boxes, 128, lite_decoder, settings, 3, torch.device("cpu"), pseudo=pseudo).head
            for _ in range(2)
        ]
        start = make_head(lite_decoder, settings.init_prompt, settings.init_scale, 3).state_dict()
        for name, value in heads[0].state_dict().items():
            assert torch.equal(value, heads[1].state_dict()[name]), f"{recipe}: {name} differs between identical runs"
        assert any(not torch.equal(v, start[k]) for k, v in heads[0].state_dict().items()), f"{recipe}: no change"


@pytest.fixture(scope="module")
def phantom_embedding(hc18_phantoms, lite_checkpoint):
    """1 x 256 x 64 x 64: LiteMedSAM's embedding of one phantom, prepared as the pipeline prepares it."""
    section = prepare_section("hc18")
    case = hc18.load(hc18.find(hc18_phantoms, section)[0], section)[0]
    image = torch.from_numpy(crop_or_pad(case.image, 640))[None]
    encoder = runtimes.TorchEncoder(backbones.build_image_encoder("lite_medsam", lite_checkpoint), torch.device("cpu"))
    return runtimes.embed(encoder, "lite_medsam", image, 1).float()


@pytest.mark.parametrize("prompt", ["mean_box", "whole_box"])
def test_first_predictions_are_not_saturated(prompt, lite_decoder, phantom_embedding, vit_b_checkpoint):
    """Both backbones' decoders, started at a box prompt, give predictions the box losses can move."""
    boxes = torch.tensor([[60.0, 50.0, 190.0, 200.0]])
    lite = make_head(lite_decoder, prompt, 0.01, 0, boxes)
    assert check_start(lite, lite_decoder, phantom_embedding, 640) > 0.1
    vit_b = backbones.build_prompt_decoder("medsam_vit_b", vit_b_checkpoint)
    random_embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(1))
    assert check_start(make_head(vit_b, prompt, 0.01, 0, boxes * 4), vit_b, random_embedding, 640) > 0.1


def test_a_saturated_start_is_refused(lite_decoder, phantom_embedding):
    """PyTorch's own initialisation drives LiteMedSAM's decoder to p ~ 1e-11 everywhere: refused, not trained."""
    head = make_head(lite_decoder, "random", 1.0, 0)
    probs = decode(lite_decoder, phantom_embedding, 640, 1, torch.device("cpu"), head=head)
    assert live_fraction(probs) < 0.01 and float(probs.max()) < 1e-3
    with pytest.raises(InputError, match="saturated"):
        check_start(head, lite_decoder, phantom_embedding, 640)


def test_saved_runs_are_skipped_only_while_their_config_is_unchanged(tmp_path):
    config = {"run": "fewshot/subset0-seed0", "ids": ["a", "b"], "train": {"lr": 1e-3}}
    folder = tmp_path / "fewshot" / "subset0-seed0"
    folder.mkdir(parents=True)
    assert not runs.is_done(folder, config)
    runs.save_head(folder, PromptHead(), config)
    assert runs.is_done(folder, config)
    assert not runs.is_done(folder, {**config, "train": {"lr": 1e-2}})
    head, saved = runs.load_head(folder)
    assert saved == config and isinstance(head, PromptHead)
    (folder / runs.WEIGHTS).write_bytes(b"truncated")
    assert not runs.is_done(folder, config), "a damaged run is trained again"
    with pytest.raises(InputError, match=r"head\.pt"):
        runs.load_head(folder)


def test_stale_runs_are_removed(tmp_path):
    """Runs, regimes and recipes no longer planned go; so does a run folder of the older two-level layout."""
    keep = {"workshop/fewshot/subset0-seed0", "workshop/all/seed0", "followup/fewshot/subset0-seed0"}
    stale = ["workshop/fewshot/subset5-seed0", "followup/all/seed0", "oldrecipe/fewshot/subset0-seed0"]
    for key in [*keep, *stale, "fewshot/subset0-seed0"]:
        (tmp_path / key).mkdir(parents=True)
    removed = runs.remove_stale(tmp_path, keep)
    assert sorted(removed) == sorted(["fewshot", "oldrecipe", "followup/all", "workshop/fewshot/subset5-seed0"])
    assert sorted(runs.run_key(p) for p in tmp_path.glob("*/*/*")) == sorted(keep)


def test_a_new_shot_count_leaves_the_all_images_runs_alone():
    ten, five = (plan_runs(IDS, shots, 3, [0, 1], 0, True) for shots in (10, 5))
    assert [r for r in ten if r.regime == ALL] == [r for r in five if r.regime == ALL]
    assert {r.ids for r in ten if r.regime == FEWSHOT}.isdisjoint({r.ids for r in five if r.regime == FEWSHOT})


def test_mean_box_start_is_the_prompt_of_the_mean_box(lite_decoder):
    boxes = torch.tensor([[10.0, 20.0, 110.0, 120.0], [30.0, 40.0, 130.0, 160.0]])
    head = make_head(lite_decoder, "mean_box", 0.01, 0, boxes)
    sparse, _ = head(torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(4)))
    expected, _ = lite_decoder.box_prompt(torch.tensor([[20.0, 30.0, 120.0, 140.0]]))
    assert torch.allclose(sparse, expected, atol=0.05), "sparse tokens start at the mean box's prompt"
    with pytest.raises(InputError, match=r"train\.init\.prompt is 'centre'; it should be 'mean_box', 'whole_box'"):
        train_config(init={"prompt": "centre", "scale": 0.01})


def test_other_training_code_gives_another_fingerprint(tmp_path):
    """A run's code hash covers every file of its import closure, its path included."""
    files = {"autoprompt/__init__.py": "", "autoprompt/a.py": "import autoprompt.b\n", "autoprompt/b.py": "x = 1\n"}
    first, root = sources_of(tmp_path / "one", files), sources_of(tmp_path / "two", files)
    assert sources_sha256("autoprompt.a", first) == sources_sha256("autoprompt.a", root), "same files, same hash"
    (root / "autoprompt" / "b.py").write_text("x = 2\n")
    assert sources_sha256("autoprompt.a", first) != sources_sha256("autoprompt.a", root), "an imported module changed"


def test_best_selection_keeps_the_epoch_of_the_highest_validation_dice(lite_decoder):
    """Validation every epoch; ``best`` returns the head of the epoch whose Dice against the box-prompted masks is
    highest, ``last`` the final head; the history logs both references."""
    generator = torch.Generator().manual_seed(5)
    embeddings = torch.randn(4, 256, 64, 64, generator=generator).half()
    boxes = torch.tensor([[20, 30, 90, 100], [10, 10, 60, 80], [40, 40, 120, 110], [5, 50, 70, 120]])
    box_masks = decode(lite_decoder, embeddings, 128, 4, torch.device("cpu"), boxes=boxes) > 0.5
    val = ValidationSet(embeddings[:2], box_masks[:2], masks=box_masks[:2] & False, batch_size=2)
    settings = train_config(select="best", validate_every=1, recipes=settings_recipes(4))
    result = train_head(embeddings, boxes, 128, lite_decoder, settings, 0, torch.device("cpu"), validation=val)
    scores = [h["dice_box"] for h in result.history]
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4] and all("dice_mask" in h for h in result.history)
    assert result.epoch == 1 + scores.index(max(scores))
    assert score(result.head, lite_decoder, val, 128, torch.device("cpu"))["dice_box"] == pytest.approx(max(scores))
    last = train_config(validate_every=1, recipes=settings_recipes(4))
    final = train_head(embeddings, boxes, 128, lite_decoder, last, 0, torch.device("cpu"), validation=val)
    assert final.epoch == 4 and final.head is final.last
    for name, value in final.last.state_dict().items():
        assert torch.equal(value, result.last.state_dict()[name]), "selection does not change the training itself"
    with pytest.raises(InputError, match=r"train\.select is best, which needs validation images"):
        train_head(embeddings, boxes, 128, lite_decoder, settings, 0, torch.device("cpu"))


def settings_recipes(epochs: int) -> dict:
    workshop = TRAIN["recipes"]["workshop"]
    return {**TRAIN["recipes"], "workshop": {**workshop, "epochs": {"fewshot": epochs, "all": 1}}}

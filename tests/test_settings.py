"""The settings layer: every params file of the repository reads; typos, wrong types and values out of range are
refused in one line naming the real file, the key and what is allowed; sections know where they came from."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from autoprompt import settings as layer
from autoprompt.errors import InputError
from autoprompt.model.backbones import BACKBONES
from autoprompt.model.baselines import METHODS
from autoprompt.settings import AUGMENTED, Recipe, Settings, json_schema, load_settings
from tests.helpers import REPO

PARAMS_FILES = ("params.yaml", "demo/params.yaml", "demo/cardiac/params.yaml", "examples/own-data/params.yaml")
SCHEMA = REPO / "autoprompt" / "reference" / "params.schema.json"


@pytest.mark.parametrize("name", PARAMS_FILES)
def test_every_params_file_of_the_repository_reads(name: str) -> None:
    settings = load_settings(REPO / name)
    assert settings.prepare.datasets and settings.train.recipes
    for task in settings.tasks.values():
        assert task.dataset in settings.prepare.datasets, "every task's dataset has a prepare section"
    assert settings.train.key("shots") == f"{REPO / name}: train.shots"


def test_the_paper_configuration_spells_out_the_default_recipe() -> None:
    """``autoprompt train``'s default recipe is params.yaml's augmented recipe, value for value."""
    assert load_settings(REPO / "params.yaml").train.recipes["augmented"] == Recipe.model_validate(AUGMENTED)


def test_the_names_the_settings_accept_are_the_registries() -> None:
    from autoprompt.data.readers import READERS

    assert set(layer.BACKBONES) == set(BACKBONES) and set(layer.METHODS) == set(METHODS)
    assert set(layer.READERS) == set(READERS)


def _demo() -> dict:
    return yaml.safe_load((REPO / "demo/params.yaml").read_text())


def _refused(tmp_path: Path, change, message: str) -> str:
    """Write the demo's params with ``change`` applied under tmp_path, read them, return the one-line refusal."""
    params = copy.deepcopy(_demo())
    change(params)
    path = tmp_path / "sub" / "params.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(InputError) as error:
        load_settings(path)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and "\n" not in text, text
    assert message in text, text
    return text


def test_misspelt_keys_are_refused_with_the_known_keys(tmp_path: Path) -> None:
    recipes = "train", "recipes"
    _refused(
        tmp_path,
        lambda p: p[recipes[0]][recipes[1]]["augmented"]["augment"]["inputs"].update(veiws=0.8),
        "train.recipes.augmented.augment.inputs: unknown key 'veiws' (did you mean 'views'?); known keys: dihedral",
    )
    _refused(
        tmp_path,
        lambda p: p["train"]["recipes"]["workshop"].update(weight_decy=1.0e-4),
        "train.recipes.workshop: unknown key 'weight_decy' (did you mean 'weight_decay'?)",
    )
    _refused(tmp_path, lambda p: p["prepare"]["hc18"].update(fitt="resize"), "prepare.hc18: unknown key 'fitt'")
    _refused(tmp_path, lambda p: p.update(trian={}), "unknown key 'trian' (did you mean 'train'?)")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["train"].update(subsets=0), "train.subsets is 0; it should be greater than 0"),
        (lambda p: p["train"].update(seeds=[]), "train.seeds is []; it should have at least 1 item"),
        (lambda p: p["train"].update(seeds=[0, 0]), "train: seeds (0, 0) repeat a seed"),
        (lambda p: p["train"]["recipes"]["workshop"]["epochs"].update(fewshot=0), "epochs.fewshot is 0"),
        (lambda p: p["train"]["recipes"]["workshop"].update(batch_size=0), "workshop.batch_size is 0"),
        (lambda p: p["train"]["recipes"]["workshop"].update(lr="fast"), "workshop.lr is 'fast'; it should be a valid"),
        (lambda p: p["train"]["recipes"]["workshop"].pop("lr"), "train.recipes.workshop.lr: missing"),
        (lambda p: p["train"].update(recipe=["agumented"]), "train: recipe 'agumented' is not under train.recipes"),
        (lambda p: p["train"].update(subsets=True), "train.subsets: give a number, not true"),
        (lambda p: p["prepare"]["hc18"].update(fit="stretch"), "fit is 'stretch'; it should be 'crop' or 'resize'"),
        (lambda p: p["prepare"]["hc18"].update(crop=3), "prepare.hc18.crop is 3; it should be greater than or equal"),
        (lambda p: p["encode"].update(device="gpu"), "encode.device: 'gpu' is not a device; give auto"),
        (lambda p: p["encode"].update(backbone="vit_h"), "encode.backbone is 'vit_h'; it should be 'medsam_vit_b'"),
        (lambda p: p["reprompt"].update(margin="big"), "reprompt.margin: 'big' is not a margin"),
        (lambda p: p["tasks"]["hc18"].update(dataset="hc81"), "task hc18's dataset 'hc81' is not in datasets"),
        (lambda p: p["prepare"].update(ours={"crop": 64}), "no reader for dataset ours; give prepare.ours a reader"),
        (lambda p: p["baseline"].pop("unet"), "baseline: method unet has no section"),
        (lambda p: p["evaluate"].update(threshold=1.5), "evaluate.threshold is 1.5; it should be less than 1"),
        (
            lambda p: p["train"].update(self_training={"enabled": "sometimes"}),
            "train.self_training.enabled: 'sometimes' is not true, false or auto; give one of them",
        ),
    ],
)
def test_wrong_values_are_refused_naming_the_key(tmp_path: Path, change, message: str) -> None:
    _refused(tmp_path, change, message)


def test_a_file_that_is_not_params_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    with pytest.raises(InputError, match=r"params file not found"):
        load_settings(path)
    path.write_text("train:\n  shots: [\n")
    with pytest.raises(InputError, match=r"params\.yaml: not valid YAML \(line 3\)"):
        load_settings(path)
    path.write_text("- a list\n")
    with pytest.raises(InputError, match=r"expected sections \(datasets, tasks, prepare, \.\.\.\), got a list"):
        load_settings(path)


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path: Path) -> None:
    """PyYAML reads ``1e-3`` as a string; the settings read it as the number a user meant."""
    path = tmp_path / "params.yaml"
    params = _demo()
    path.write_text(yaml.safe_dump(params).replace("lr: 0.001", "lr: 1e-3"))
    assert load_settings(path).train.recipes["workshop"].lr == 1e-3


def test_an_empty_file_is_every_default() -> None:
    """The defaults are ``autoprompt train``'s: LiteMedSAM, three runs of the augmented recipe, views, auto margin."""
    settings = Settings()
    assert settings.encode.backbone == "lite_medsam" and settings.train.recipe == ("augmented",)
    assert settings.train.seeds == (0, 1, 2) and settings.augment.count == 8 and settings.reprompt.auto
    assert settings.train.self_training.enabled == "auto", "a second round where the folder has unboxed images"


def test_the_committed_json_schema_is_current() -> None:
    """Editors check params files against autoprompt/reference/params.schema.json (the modeline atop each file)."""
    assert json.loads(SCHEMA.read_text()) == json_schema(), "python -m autoprompt.settings > " + str(SCHEMA)
    for name in PARAMS_FILES:
        first = (REPO / name).read_text().splitlines()[0]
        assert (
            first.startswith("# yaml-language-server: $schema=")
            and ((REPO / name).parent / first.split("=", 1)[1]).resolve() == SCHEMA.resolve()
        ), name

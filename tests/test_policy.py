"""The post-processing policy: written by train (model file) and evaluate (metrics JSON), read by predict with one
precedence: an explicit option, then --reprompt-from's metrics JSON, then the model file, then the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoprompt.errors import InputError
from autoprompt.inference.policy import Policy, from_settings, metrics_record, resolve
from autoprompt.inference.presence import Presence
from autoprompt.settings import RepromptSettings

GROUP = "augmented/fewshot"
MODEL = Policy(0.1, "auto, on the 10 training boxes", 0.5, Presence(("iou",), min_iou=0.8))


def _metrics(tmp_path: Path, settings: RepromptSettings, margin: float | None) -> Path:
    """A metrics JSON as evaluate writes it for one group."""
    path = tmp_path / "metrics.json"
    block = {"margin": "auto", "groups": {GROUP: {"margin": margin}}, **metrics_record(settings, volumes=True)}
    path.write_text(json.dumps({"reprompt": block}))
    return path


def test_a_policy_survives_the_model_file_and_old_files_keep_their_behaviour() -> None:
    assert Policy.from_record(MODEL.record()) == MODEL
    old = Policy.from_record({"margin": 0.05, "how": "set"})  # version 2 files before the volume fit and presence
    assert old == Policy(0.05, "set", 0.5, None), "the default fit, no presence: what predict did then"
    assert Policy.from_record(None) == Policy(None, "", 0.5, None), "version 1: no reprompt block"


def test_train_writes_the_settings_policy() -> None:
    settings = RepromptSettings.model_validate({"volume": None, "presence": {"cues": ["iou", "sequence"]}})
    policy = from_settings(settings, 0.2, "auto")
    assert policy.margin == 0.2 and policy.volume_min_iou is None
    assert policy.presence.cues == ("iou", "sequence")
    assert from_settings(RepromptSettings.model_validate({"presence": None}), None, "").presence is None


def test_each_setting_takes_the_option_then_the_metrics_json_then_the_model(tmp_path: Path) -> None:
    settings = RepromptSettings.model_validate({"volume": {"min_iou": 0.3}, "presence": {"cues": ["sequence"]}})
    metrics = _metrics(tmp_path, settings, 0.2)
    chosen, sources = resolve(MODEL, GROUP)
    assert chosen == MODEL and set(sources.values()) == {"the model's"}
    chosen, sources = resolve(MODEL, GROUP, reprompt_from=metrics)
    assert (chosen.margin, chosen.volume_min_iou, chosen.presence.cues) == (0.2, 0.3, ("sequence",))
    assert sources["presence"] == f"as {metrics} records" and chosen.how == f"as {metrics} records"
    chosen, sources = resolve(MODEL, GROUP, margin=0.05, presence=None, reprompt_from=metrics)
    assert (chosen.margin, chosen.volume_min_iou, chosen.presence) == (0.05, 0.3, None)
    assert sources == {"margin": "as asked", "volume_min_iou": f"as {metrics} records", "presence": "as asked"}


def test_a_metrics_json_without_presence_leaves_the_models(tmp_path: Path) -> None:
    """Metrics written before presence was recorded (or of 2D tasks, without a volume fit) say nothing of it."""
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"reprompt": {"margin": 0.1, "groups": {GROUP: {"margin": None}}}}))
    chosen, sources = resolve(MODEL, GROUP, reprompt_from=path)
    assert chosen.margin is None and chosen.presence == MODEL.presence and sources["presence"] == "the model's"
    with pytest.raises(InputError, match=r"old\.json: no margin recorded for other/fewshot; evaluate"):
        resolve(MODEL, "other/fewshot", reprompt_from=path)


def test_the_box_threshold_goes_with_the_margin(tmp_path: Path) -> None:
    """Chosen together, kept together: the model's with the model's margin, the metrics JSON's with its margin, and
    the mask's own boxes (None) with a margin asked for, which was chosen with no box threshold."""
    model = Policy(0.15, "auto", 0.5, None, box_threshold=0.8)
    assert Policy.from_record(model.record()) == model
    assert Policy.from_record({"margin": 0.05, "how": "set"}).box_threshold is None, "files before it: the mask's"
    assert "above 0.8" in model.describe()
    assert resolve(model, GROUP)[0].box_threshold == 0.8
    assert resolve(model, GROUP, margin=0.1)[0].box_threshold is None
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"reprompt": {"groups": {GROUP: {"margin": 0.1, "box_threshold": 0.9}}}}))
    assert resolve(model, GROUP, reprompt_from=metrics)[0].box_threshold == 0.9
    metrics.write_text(json.dumps({"reprompt": {"groups": {GROUP: {"margin": 0.1}}}}))
    assert resolve(model, GROUP, reprompt_from=metrics)[0].box_threshold is None, "absent: the mask's threshold"
    assert from_settings(RepromptSettings(), 0.1, "auto", 0.9).box_threshold == 0.9

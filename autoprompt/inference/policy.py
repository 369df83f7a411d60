"""The post-processing policy: what is done to the heads' masks after decoding, as one record.

Three rules follow the heads, in this order: re-prompting with the masks' loosened boxes (``margin``, the boxes
taken above ``box_threshold``, ``autoprompt.inference.reprompt``), the boxes fitted across a volume's slices
(``volume_min_iou``, ``autoprompt.inference.volume``; it needs re-prompting) and presence, the slices judged not to
hold the structure emptied (``presence``, ``autoprompt.inference.presence``). ``train`` writes the policy into the
model file, ``evaluate`` into the metrics JSON (its margins per recipe and regime), and ``predict`` reads it through
``resolve``, with one precedence for each of the three: an explicit option, then ``--reprompt-from``'s metrics JSON,
then the model file, then the default. The box threshold goes with the margin, chosen with it: from where the
margin comes, or the mask's threshold for a margin asked for.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from autoprompt.errors import InputError
from autoprompt.inference.presence import Presence
from autoprompt.settings import PresenceSettings, RepromptSettings, VolumeFit

log = logging.getLogger(__name__)

FROM_MODEL = "model"  # an option left to the policy's precedence (the metrics JSON's, else the model's)
DEFAULT_VOLUME_MIN_IOU = VolumeFit().min_iou  # a model file that records no volume fit (written before it was)


@dataclass(frozen=True)
class Policy:
    """``margin``: the re-prompt margin (None: not re-prompted) and ``how`` it was chosen; ``box_threshold``: the
    heads' probability above which the boxes are taken (None: the mask's threshold); ``volume_min_iou``: the volume
    fit's box IoU (None: off); ``presence``: the presence rule (None: every mask kept)."""

    margin: float | None = None
    how: str = ""
    volume_min_iou: float | None = DEFAULT_VOLUME_MIN_IOU
    presence: Presence | None = None
    box_threshold: float | None = None

    def record(self) -> dict:
        """The model file's ``reprompt`` block: plain types only."""
        return {
            "margin": self.margin,
            "how": self.how,
            "box_threshold": self.box_threshold,
            "volume_min_iou": self.volume_min_iou,
            "presence": self.presence.as_dict() if self.presence is not None else None,
        }

    @classmethod
    def from_record(cls, record: dict | None) -> Policy:
        """A model file's ``reprompt`` block (absent in version 1 files); a file that records no volume fit fits at
        the default IoU, one that records no presence rule keeps every mask, one with no box threshold takes the
        mask's boxes, as ``predict`` did when it was written."""
        record = record or {}
        presence = record.get("presence")
        return cls(
            margin=record.get("margin"),
            how=str(record.get("how", "")),
            volume_min_iou=record.get("volume_min_iou", DEFAULT_VOLUME_MIN_IOU),
            presence=Presence.from_dict(presence) if presence else None,
            box_threshold=record.get("box_threshold"),
        )

    def describe(self) -> str:
        margin = f"re-prompted at margin {self.margin:g}" if self.margin is not None else "not re-prompted"
        if self.margin is not None and self.box_threshold is not None:
            margin += f" from the boxes of the heads' masks above {self.box_threshold:g}"
        fit = "volume fit off" if self.volume_min_iou is None else f"volume fit below box IoU {self.volume_min_iou:g}"
        if self.margin is None and self.volume_min_iou is not None:
            fit += " (inactive: it needs re-prompting)"
        presence = "presence off" if self.presence is None else f"absent where {self.presence.describe()}"
        return f"{margin}; {fit}; {presence}"


def presence_rule(settings: PresenceSettings | None) -> Presence | None:
    """The ``reprompt.presence`` section as a rule (None: off)."""
    if settings is None:
        return None
    return Presence(
        tuple(settings.cues),
        settings.min_iou,
        settings.min_agreement,
        settings.min_box_iou,
        settings.max_growth,
        settings.images,
    )


def from_settings(
    settings: RepromptSettings, margin: float | None, how: str, box_threshold: float | None = None
) -> Policy:
    """The policy that ``train`` writes: the margin it chose (``how``) and its box threshold (None: the mask's), the
    ``reprompt`` section's volume fit and presence rule."""
    fit = settings.volume.min_iou if settings.volume is not None else None
    return Policy(margin, how, fit, presence_rule(settings.presence), box_threshold)


def metrics_record(settings: RepromptSettings, volumes: bool) -> dict:
    """What ``evaluate`` adds to its metrics JSON's ``reprompt`` block beside the margins per group: the volume fit
    (only for slices of volumes; None: off) and the presence rule (None: off)."""
    out: dict = {}
    if volumes:
        out["volume"] = {"min_iou": settings.volume.min_iou} if settings.volume is not None else None
    rule = presence_rule(settings.presence)
    out["presence"] = rule.as_dict() if rule is not None else None
    return out


def _recorded(metrics: Path, group: str | None) -> dict:
    """The policy ``evaluate``'s metrics JSON records for ``group`` (``recipe/regime``): ``margin`` with its
    ``box_threshold``, and where it records them, ``volume_min_iou`` and ``presence``."""
    try:
        recorded = json.loads(Path(metrics).read_text())["reprompt"]
        groups = dict(recorded["groups"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(
            f"{metrics}: no re-prompt margins in it ({error.__class__.__name__}); give evaluate's metrics JSON "
            "of a run with reprompt.margin set, or --reprompt-margin"
        ) from error
    if group is None:
        raise InputError(f"{metrics}: its margins are per recipe and regime; give a model of one (e.g. one folder)")
    if group not in groups:
        raise InputError(f"{metrics}: no margin recorded for {group}; evaluate the model's task with it first")
    out = {"margin": groups[group]["margin"], "box_threshold": groups[group].get("box_threshold")}
    if "volume" in recorded:
        out["volume_min_iou"] = (recorded["volume"] or {}).get("min_iou")
    if "presence" in recorded:
        presence = recorded["presence"]
        out["presence"] = Presence.from_dict(presence) if presence else None
    return out


def resolve(
    model: Policy,
    group: str | None,
    *,
    margin: float | str | None = FROM_MODEL,
    volume_min_iou: float | str | None = FROM_MODEL,
    presence: Presence | str | None = FROM_MODEL,
    reprompt_from: Path | str | None = None,
) -> tuple[Policy, dict[str, str]]:
    """The policy ``predict`` applies, and where each of its three settings came from. For each: the value asked for
    (anything but ``FROM_MODEL``; None turns it off), else what ``reprompt_from`` (evaluate's metrics JSON, for the
    model's ``group``) records, else the ``model``'s own. The box threshold follows the margin's source: a margin
    asked for takes the masks' own boxes (None)."""
    recorded = _recorded(Path(reprompt_from), group) if reprompt_from is not None else {}
    chosen, sources = {}, {}
    asked = {"margin": margin, "volume_min_iou": volume_min_iou, "presence": presence}
    for key, value in asked.items():
        if value != FROM_MODEL:
            chosen[key], sources[key] = value, "as asked"
        elif key in recorded:
            chosen[key], sources[key] = recorded[key], f"as {reprompt_from} records"
        else:
            chosen[key], sources[key] = getattr(model, key), "the model's"
    how = model.how if sources["margin"] == "the model's" else sources["margin"]
    if sources["margin"] == "as asked":
        chosen["box_threshold"] = None  # the model's was chosen with its own margin, not with this one
    elif sources["margin"] != "the model's":
        chosen["box_threshold"] = recorded["box_threshold"]
    return replace(model, how=how, **chosen), sources

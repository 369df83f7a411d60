"""A model that ``predict`` can use: one trained head or an ensemble, with what its training data and backbone were.

Loaded from a run folder (``models/<task>/<recipe>/<regime>/<run>``), from any folder above runs (every run under it, an
ensemble: ``models/<task>/augmented/fewshot`` is one recipe's few-shot ensemble), or from a file written by
``export_model``: one file with the heads' weights, the backbone's name and checkpoint sha256, the preprocessing record,
the label frame, the training params of each run, and the post-processing policy (``autoprompt.inference.policy``:
the re-prompt margin, the volume fit's threshold, the presence rule). Every file is read with ``weights_only=True``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from autoprompt.data.preprocess import Preprocessing
from autoprompt.errors import InputError
from autoprompt.inference.policy import Policy
from autoprompt.inference.presence import Presence
from autoprompt.io import save_torch
from autoprompt.model.head import PromptHead
from autoprompt.outputs import refuse_foreign
from autoprompt.training import runs

log = logging.getLogger(__name__)

FORMAT = "autoprompt-model"
VERSION = 3  # 2: the re-prompt margin; 3: its box threshold; files of versions 1 and 2 (without them) still load
SHARED = (
    "task",
    "class",
    "label_value",
    "label_size",
    "backbone",
    "checkpoint_sha256",
    "runtime",
    "precision",
    "preprocessing",
)


@dataclass
class Model:
    """Heads (state dicts of ``PromptHead``, one per run: several make an ensemble, their probabilities averaged)
    and what they were trained on: the task and class with its label value in the training labels, the label frame
    side ``label_size`` (S), the backbone's name, its checkpoint's sha256 and configured path (None for packaged
    weights), the runtime and precision of the training embeddings' encoder, the preprocessing of the training
    images, and each run's config (params, inputs' hashes, fingerprint); the margin ``predict`` re-prompts with by
    default (None: not re-prompted), how it was chosen and the probability its boxes are taken above
    (``reprompt_box_threshold``; None: the mask's threshold), and the box IoU under which it refits a volume's slices
    (``volume_min_iou``, ``autoprompt.inference.volume``; None: not refitted), and the rule that empties the slices
    judged absent (``presence``, ``autoprompt.inference.presence``; None: none): together its ``policy``."""

    heads: list[dict[str, Tensor]]
    runs: list[str]
    task: str
    class_name: str
    label_value: int
    label_size: int
    backbone: str
    checkpoint_sha256: str
    checkpoint: str | None
    runtime: str
    precision: str
    preprocessing: Preprocessing
    configs: list[dict]
    reprompt_margin: float | None = None
    reprompt_how: str = ""
    volume_min_iou: float | None = Policy().volume_min_iou
    presence: Presence | None = None
    reprompt_box_threshold: float | None = None

    def build_heads(self) -> list[PromptHead]:
        """The heads, built and loaded, in eval mode."""
        built = []
        for state in self.heads:
            head = PromptHead()
            head.load_state_dict(state)
            built.append(head.eval().requires_grad_(False))
        return built

    def record(self) -> dict:
        """The export file's content: plain types and tensors only, so it loads with ``weights_only=True``."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "heads": self.heads,
            "runs": self.runs,
            "task": self.task,
            "class": self.class_name,
            "label_value": self.label_value,
            "label_size": self.label_size,
            "backbone": self.backbone,
            "checkpoint_sha256": self.checkpoint_sha256,
            "checkpoint": self.checkpoint,
            "runtime": self.runtime,
            "precision": self.precision,
            "preprocessing": self.preprocessing.as_dict(),
            "configs": self.configs,
            "reprompt": self.policy.record(),
        }

    @property
    def policy(self) -> Policy:
        """The post-processing the model applies by default (``autoprompt.inference.policy``)."""
        return Policy(
            self.reprompt_margin, self.reprompt_how, self.volume_min_iou, self.presence, self.reprompt_box_threshold
        )

    def group(self) -> str | None:
        """``recipe/regime`` of the runs when they all share one (the key of evaluate's rows), else None."""
        groups = {runs.group_key(key) for key in self.runs}
        return groups.pop() if len(groups) == 1 else None

    def describe(self) -> str:
        kind = f"an ensemble of {len(self.heads)} runs" if len(self.heads) > 1 else f"run {self.runs[0]}"
        return f"{self.task} ({self.class_name}), {kind}, {self.backbone}"

    def with_policy(self, policy: Policy) -> Model:
        """This model, post-processing its masks by default as ``policy`` says."""
        return replace(
            self,
            reprompt_margin=policy.margin,
            reprompt_how=policy.how,
            volume_min_iou=policy.volume_min_iou,
            presence=policy.presence,
            reprompt_box_threshold=policy.box_threshold,
        )


def run_folders(path: Path) -> list[Path]:
    """The run folders at or under ``path``: itself if it holds ``head.pt``, else every folder below that does."""
    if (path / runs.WEIGHTS).is_file():
        return [path]
    found = (p for p in path.rglob(runs.WEIGHTS) if not any(s.startswith(".") for s in p.relative_to(path).parts))
    return sorted(p.parent for p in found)  # below path, hidden folders (a run being written) are left out


def from_runs(folders: list[Path]) -> Model:
    """The model of one run or the ensemble of several; they must share task, backbone and preprocessing."""
    heads, configs, checkpoint = [], [], None
    for folder in folders:
        head, config = runs.load_head(folder)
        if "preprocessing" not in config or config["preprocessing"] is None:
            raise InputError(f"{folder / runs.WEIGHTS}: trained before runs recorded their preprocessing; train again")
        first = configs[0] if configs else config
        for key in SHARED:
            if config.get(key) != first.get(key):
                raise InputError(
                    f"{folder}: its {key} differs from that of {folders[0]}; an ensemble needs runs of one task, "
                    "backbone and preprocessing: point -m at a narrower folder"
                )
        heads.append(head.state_dict())
        configs.append(config)
        checkpoint = runs.load_record(folder).get("checkpoint", checkpoint)
    first = configs[0]
    return Model(
        heads=heads,
        runs=[runs.run_key(f) for f in folders],
        task=str(first["task"]),
        class_name=str(first["class"]),
        label_value=int(first["label_value"]),
        label_size=int(first["label_size"]),
        backbone=str(first["backbone"]),
        checkpoint_sha256=str(first["checkpoint_sha256"]),
        checkpoint=checkpoint,
        runtime=str(first.get("runtime", "torch")),
        precision=str(first.get("precision", "float32")),
        preprocessing=Preprocessing.from_dict(first["preprocessing"]),
        configs=configs,
    )


def from_file(path: Path) -> Model:
    """A model written by ``export_model``."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle refusals and truncated files alike
        raise InputError(f"{path}: not a readable model file ({error.__class__.__name__}); export it again") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(f"{path}: not an exported autoprompt model; give a run folder or `autoprompt export` output")
    if record.get("version") not in range(1, VERSION + 1):
        raise InputError(
            f"{path}: model format version {record.get('version')}, this autoprompt reads 1 to {VERSION}; export it "
            "again, or update autoprompt"
        )
    policy = Policy.from_record(record.get("reprompt"))
    return Model(
        heads=list(record["heads"]),
        runs=list(record["runs"]),
        task=record["task"],
        class_name=record["class"],
        label_value=int(record["label_value"]),
        label_size=int(record["label_size"]),
        backbone=record["backbone"],
        checkpoint_sha256=record["checkpoint_sha256"],
        checkpoint=record.get("checkpoint"),
        runtime=record.get("runtime", "torch"),
        precision=record.get("precision", "float32"),
        preprocessing=Preprocessing.from_dict(record["preprocessing"]),
        configs=list(record["configs"]),
        reprompt_margin=policy.margin,
        reprompt_how=policy.how,
        volume_min_iou=policy.volume_min_iou,
        presence=policy.presence,
        reprompt_box_threshold=policy.box_threshold,
    )


def load_model(path: Path | str) -> Model:
    """A model from a run folder, a folder of runs (an ensemble) or an exported file."""
    path = Path(path)
    if path.is_file():
        return from_file(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such model; give a run folder, a task's model folder or an exported model file")
    folders = run_folders(path)
    if not folders:
        raise InputError(f"{path}: no trained run (head.pt) under it; run the train stage first (dvc repro)")
    return from_runs(folders)


def is_model_file(path: Path) -> bool:
    """Whether ``path`` is a file that ``export_model`` wrote (of any version)."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # anything else: an image, a CSV, a damaged file
        return False
    return isinstance(record, dict) and record.get("format") == FORMAT


def export_model(model: Model, out: Path | str) -> Path:
    """Write ``model`` to one file (whole or not at all, read back first); only a model file is replaced, never a
    folder or another file (``outputs.refuse_foreign``), and a failed write keeps what stood there."""
    out = Path(out)
    refuse_foreign(out, is_model_file, "model file", "give a new file name (model.pt), or move that file away")
    save_torch(model.record(), out)
    log.info("exported %s to %s", model.describe(), out)
    return out

"""The params file, read once into frozen, typed sections, and checked in one place.

``load_settings(path)`` reads a params file (``params.yaml``, ``demo/params.yaml``, a user's own) into ``Settings``:
one pydantic model per section (``tasks``, ``simulate``, ``prepare``, ``encode``, ``augment``, ``train`` with its
recipes, ``baseline``, ``reprompt``, ``evaluate``). One policy holds everywhere: an unknown key, a value of the wrong
type or out of range, and a name that points nowhere (a recipe, a task's dataset) are refused with one line that names
the file, the key and what is allowed::

    demo/params.yaml: train.recipes.augmented.augment.inputs: unknown key 'veiws' (did you mean 'views'?); ...

A stage passes each library function the section it needs; a section knows where it came from (``Section.key``), so
the checks that need data (``train.shots`` against the training images, say) name the real file too.

Every key has a default: the settings of ``autoprompt train`` on a user's folder (LiteMedSAM, the ``augmented``
recipe, three runs, the re-prompt margin chosen from boxes). The pipeline's params files spell every section out.
``python -m autoprompt.settings`` writes the JSON schema that editors can check a params file against.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from autoprompt.errors import InputError

BACKBONES = ("medsam_vit_b", "lite_medsam")  # the keys of autoprompt.model.backbones.BACKBONES
READERS = ("hc18", "camus", "acdc", "folder")  # the keys of autoprompt.data.READERS
METHODS = ("unet", "transunet", "autosam", "head_masks", "persam")  # the keys of autoprompt.model.baselines.METHODS
AUTO = "auto"


def _number(value: Any) -> Any:
    """Refuse ``true``/``false`` where a number is expected (pydantic would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_not_bool", "give a number, not {value}", {"value": str(value).lower()})
    return value


Int = Annotated[int, BeforeValidator(_number)]
Count = Annotated[int, BeforeValidator(_number), Field(ge=0)]
Positive = Annotated[int, BeforeValidator(_number), Field(gt=0)]
Fraction = Annotated[float, BeforeValidator(_number), Field(ge=0)]
PositiveReal = Annotated[float, BeforeValidator(_number), Field(gt=0)]
MIN_CROP = 32  # pixels: the smallest prepared frame; a frame of a few pixels (crop: 3) holds no box worth prompting,
# and used to surface much later as saturated first predictions (a train.init refusal)
Crop = Annotated[int, BeforeValidator(_number), Field(ge=MIN_CROP)]
Probability = Annotated[float, BeforeValidator(_number), Field(ge=0, le=1)]
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _device(value: Any) -> Any:
    if isinstance(value, str) and DEVICE.match(value):
        return value
    raise PydanticCustomError(
        "device", "{value} is not a device; give auto (the GPU when there is one), cpu, cuda or cuda:N",
        {"value": repr(value)},
    )  # fmt: skip


Device = Annotated[str, BeforeValidator(_device)]


class Section(BaseModel):
    """A frozen part of the params file that refuses keys it does not know. ``key(name)`` says where a key is:
    ``demo/params.yaml: train.shots``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    _where: str = PrivateAttr(default="params")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = [field.alias or name for name, field in cls.model_fields.items()]
            unknown = [key for key in data if key not in known]
            if unknown:
                close = difflib.get_close_matches(str(unknown[0]), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise PydanticCustomError(
                    "unknown_key", "unknown key {key}{hint}; known keys: {known}", {
                        "key": repr(unknown[0]), "hint": hint, "known": ", ".join(known)
                    }
                )  # fmt: skip
        elif data is None:
            return {}  # an empty section in YAML: every default
        return data

    def key(self, name: str | None = None) -> str:
        """``<file>: <section>.<name>``, for messages about this section's keys."""
        file, _, path = self._where.partition(": ")
        dotted = ".".join(p for p in (path, name) if p)
        return f"{file}: {dotted}" if dotted else file


# ----------------------------------------------------------------------------------------------------------- tasks
class TaskSpec(Section):
    """A task: one class (a structure) of one dataset; ``column``: its column in Table 1 (the task's name if none)."""

    dataset: str
    class_name: str = Field(alias="class")
    column: str | None = None


# -------------------------------------------------------------------------------------------------------- simulate
class Hc18Phantoms(Section):
    subjects: Positive
    size: tuple[Positive, Positive]
    seed: Int = 0
    second_image: Probability = 0.25


class CamusPhantoms(Section):
    subjects: Positive
    size: tuple[Positive, Positive]
    seed: Int = 0
    layout: Literal["nifti", "mhd"] = "nifti"
    split_files: bool = False


class AcdcPhantoms(Section):
    """``anatomy``: ``classic``, the cavity and the RV shrink smoothly from base to apex (the phantoms of earlier
    releases, file for file); ``tail``, the most apical slice's LV covers a few dozen pixels and the most basal
    slice's RV is a thin crescent along the septum, where real scans' misses gather (docs/volumes.md). ``beyond``:
    unlabelled slices added at each end of a volume, the atria and great vessels above the base and the apical cap
    and liver below the apex, where a head's masks have no structure to find (0: none, the volumes of earlier
    releases)."""

    training: Positive
    testing: Count
    size: tuple[Positive, Positive]
    slices: tuple[Positive, Positive]
    seed: Int = 0
    anatomy: Literal["classic", "tail"] = "classic"
    beyond: Count = 0


class SimulateSettings(Section):
    """Phantoms written in each dataset's official layout (the offline demo's raw data)."""

    hc18: Hc18Phantoms | None = None
    camus: CamusPhantoms | None = None
    acdc: AcdcPhantoms | None = None


# --------------------------------------------------------------------------------------------------------- prepare
class Proportions(Section):
    """Split weights (not image counts), normalised over the images."""

    train: Fraction = 0.0
    val: Fraction = 0.0
    test: Fraction = 0.0

    @model_validator(mode="after")
    def _positive(self) -> Proportions:
        if self.train + self.val + self.test <= 0:
            raise PydanticCustomError("proportions", "give proportions with a positive sum, e.g. {train: 7, test: 2}")
        return self

    def weights(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


SPLIT_WORDS = ("authors", "boxes")


def _split_kind(value: Any) -> str:
    return "~proportions" if isinstance(value, dict | Proportions) else "~words"


def _split_word(value: Any) -> Any:
    if value in SPLIT_WORDS:
        return value
    raise PydanticCustomError(
        "split", "{value} is not a split; use authors, boxes (reader: folder) or proportions such as "
        "{train: 7, val: 1, test: 2}", {"value": repr(value)}
    )  # fmt: skip


Split = Annotated[
    Annotated[str, BeforeValidator(_split_word), Tag("~words")] | Annotated[Proportions, Tag("~proportions")],
    Discriminator(_split_kind),
]


class DatasetPrepare(Section):
    """``prepare.<dataset>``: how its images reach the ``crop`` x ``crop`` frame (``fit``: ``crop`` centre-crops or
    pads, ``resize`` scales the longest side to ``crop``), and how its subjects are split (the authors' lists, the
    boxes of a user's folder, or proportions; ``proportions`` deals the subjects the lists do not name). The official
    datasets default to the paper's frame sides and the authors' lists. ``crop`` is at least ``MIN_CROP``."""

    reader: str
    crop: Crop
    fit: Literal["crop", "resize"] = "crop"
    split: Split = "authors"
    proportions: Proportions | None = None

    @model_validator(mode="after")
    def _one_split(self) -> DatasetPrepare:
        if self.split == "boxes" and self.reader != "folder":
            raise PydanticCustomError(
                "split", "split: boxes needs reader: folder (the images with boxes train); give authors or proportions"
            )
        if self.proportions is not None and self.split != "authors":
            raise PydanticCustomError(
                "proportions", "proportions deal the subjects the authors' lists leave out; with split: {split} remove "
                "it", {"split": self.split if isinstance(self.split, str) else "{train: .., val: .., test: ..}"},
            )  # fmt: skip
        return self

    @property
    def spacing_mm(self) -> float | None:
        """The in-plane spacing slices are resampled to (None: kept on their grid)."""
        return None


class Hc18Prepare(DatasetPrepare):
    reader: Literal["hc18"] = "hc18"
    crop: Crop = 640
    images: Literal["first", "all"] = "all"


class CamusPrepare(DatasetPrepare):
    reader: Literal["camus"] = "camus"
    crop: Crop = 512
    view: Literal["2CH", "4CH"] | tuple[Literal["2CH", "4CH"], ...] = "4CH"
    official_split: bool = True

    @property
    def views(self) -> tuple[str, ...]:
        return (self.view,) if isinstance(self.view, str) else self.view


class AcdcPrepare(DatasetPrepare):
    """``drop_empty``: leave out the training patients' slices without any labelled structure (the test patients
    keep every slice, for the whole-volume scores)."""

    reader: Literal["acdc"] = "acdc"
    crop: Crop = 256
    spacing: PositiveReal = 1.0
    drop_empty: bool = True

    @property
    def spacing_mm(self) -> float | None:
        return self.spacing


class FolderPrepare(DatasetPrepare):
    """A user's folder: ``images/``, the boxes (``boxes``: ``boxes.csv``, or a COCO or Label Studio JSON export, of
    which ``label`` picks one label; relative to the dataset's folder, or to ``autoprompt train``'s DATA; a label
    with a ``boxes.csv`` is refused, it having none) and optional ``masks/``; ``class``: the structure's name. By
    default the longest side of each image is scaled to 512 (nothing is cut) and volumes stay on their own grid."""

    reader: Literal["folder"] = "folder"
    class_name: str = Field("structure", alias="class", min_length=1)
    boxes: str = Field("boxes.csv", min_length=1)
    label: str | None = None
    crop: Crop = 512
    fit: Literal["crop", "resize"] = "resize"
    spacing: PositiveReal | None = None
    split: Split = "boxes"

    @model_validator(mode="after")
    def _label_needs_an_export(self) -> FolderPrepare:
        if self.label is not None and self.boxes.lower().endswith(".csv"):
            raise PydanticCustomError(
                "label", "{boxes} has no labels; remove label, or give a COCO or Label Studio export as boxes",
                {"boxes": self.boxes},
            )  # fmt: skip
        return self

    @property
    def spacing_mm(self) -> float | None:
        return self.spacing


DATASET_SECTIONS: dict[str, type[DatasetPrepare]] = {
    "hc18": Hc18Prepare,
    "camus": CamusPrepare,
    "acdc": AcdcPrepare,
    "folder": FolderPrepare,
}
DatasetSection = Annotated[Hc18Prepare | CamusPrepare | AcdcPrepare | FolderPrepare, Field(discriminator="reader")]
PREPARE_KEYS = ("seed", "on_error", "min_foreground")


class PrepareSettings(Section):
    """``seed`` deals the subjects split by proportions; ``on_error``: ``stop`` at the first bad case, or ``skip``
    it and go on; a task uses an image only where its class covers ``min_foreground`` pixels. Every other key is a
    dataset's section, read by the reader of its name (or its ``reader``)."""

    seed: Int = 0
    on_error: Literal["stop", "skip"] = "stop"
    min_foreground: Count = 10
    datasets: dict[str, DatasetSection] = {}

    @model_validator(mode="before")
    @classmethod
    def _dataset_sections(cls, data: Any) -> Any:
        """The file's ``prepare.<dataset>`` keys -> ``datasets``, each with its ``reader`` (by default its name)."""
        if not isinstance(data, dict) or "datasets" in data:
            return data
        out: dict[str, Any] = {k: v for k, v in data.items() if k in PREPARE_KEYS}
        datasets = {}
        for name, section in data.items():
            if name in PREPARE_KEYS:
                continue
            if not isinstance(section, dict):
                raise PydanticCustomError(
                    "dataset_section", "{name} is {value}; give a dataset's section (crop, fit, split, ...)",
                    {"name": name, "value": repr(section)},
                )  # fmt: skip
            reader = section.get("reader", name)
            if reader not in DATASET_SECTIONS:
                raise PydanticCustomError(
                    "reader", "no reader for dataset {name}; give prepare.{name} a reader: one of {readers} (folder: "
                    "your own images with boxes)", {"name": name, "readers": ", ".join(READERS)},
                )  # fmt: skip
            datasets[name] = {**section, "reader": reader}
        out["datasets"] = datasets
        return out

    def dataset(self, name: str) -> DatasetPrepare:
        if name not in self.datasets:
            raise InputError(f"{self.key(name)}: no such section; add prepare.{name} (crop, fit, split, ...)")
        return self.datasets[name]


# ---------------------------------------------------------------------------------------------------------- encode
class EncodeSettings(Section):
    """The backbone and how its image encoder runs: ``device`` (``auto``: the GPU when there is one), ``runtime``
    (``auto``: torch on a GPU, OpenVINO on a CPU), the CPU's and the GPU's compute precision, ``compile`` (a GPU only),
    where converted encoders are cached, images per encoder call and per shard (the unit of resumption), threads."""

    backbone: Literal["medsam_vit_b", "lite_medsam"] = "lite_medsam"
    checkpoint: str | None = None
    device: Device = AUTO
    runtime: Literal["auto", "torch", "openvino"] = AUTO
    cpu_precision: Literal["float32", "bfloat16"] = "float32"
    gpu_autocast: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    compile: bool = True
    runtime_cache: str = "models/backbones"
    batch_size: Positive = 16
    shard_size: Positive = 16
    threads: Positive | None = None


# --------------------------------------------------------------------------------------------------------- augment
class AugmentSettings(Section):
    """Encoded views of each few-shot training image (``autoprompt.data.views``): ``count`` per image (0: none), the
    probability of a left-right flip, the largest zoom and gamma as log factors, the largest shift (a fraction of
    the half side), contrast change (a fraction) and brightness change (grey levels); ``seed`` draws them."""

    count: Count = 8
    hflip: Probability = 0.5
    zoom: Fraction = 0.5
    shift: Fraction = 0.1
    gamma: Fraction = 0.3
    contrast: Fraction = 0.2
    brightness: Fraction = 10.0
    seed: Int = 0


# ----------------------------------------------------------------------------------------------------------- train


class Epochs(Section):
    fewshot: Positive
    all: Positive


class Milestones(Section):
    """Epochs after which the learning rate is multiplied by ``gamma``, per regime."""

    fewshot: tuple[Positive, ...] = ()
    all: tuple[Positive, ...] = ()


class Schedule(Section):
    """Adam with weight decay and a multi-step schedule, per regime (``fewshot``, ``all``)."""

    epochs: Epochs
    milestones: Milestones = Milestones()
    gamma: PositiveReal = 0.1
    batch_size: Positive
    lr: PositiveReal
    weight_decay: Fraction = 0.0


class Tightness(Section):
    weight: Fraction
    d: Positive = 5


class SizePrior(Section):
    weight: Fraction
    bounds: tuple[Probability, Probability] = (0.5, 0.9)

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if bounds[0] > bounds[1]:
            raise PydanticCustomError("bounds", "lower bound above the upper one; give [lower, upper]")
        return bounds


class Barrier(Section):
    """The log-barrier's ``t``, multiplied by ``factor`` every ``every`` epochs."""

    t: PositiveReal = 5.0
    factor: PositiveReal = 1.0
    every: Positive = 1


class Loss(Section):
    """A recipe's loss weights (a zero weight leaves its loss out)."""

    outer_bce: Fraction
    tightness: Tightness
    size: SizePrior
    pseudo_label: Fraction
    consistency: Fraction
    barrier: Barrier = Barrier()


class InputMoves(Section):
    """A training image flipped or turned (probability), zoomed by up to exp(±zoom), shifted by up to ``shift`` of the
    half side; ``views``: the probability that it is replaced by one of its encoded views."""

    dihedral: Probability = 0.0
    zoom: Fraction = 0.0
    shift: Fraction = 0.0
    views: Probability = 0.0


class ConsistencyMoves(Section):
    """The follow-up's weak transforms for the consistency loss: flip, quarter turns, small rotation (radians)."""

    flip: Probability = 0.75
    rot90: Probability = 0.75
    rotate: Probability = 0.75
    angle: Fraction = 0.25


class RecipeAugment(Section):
    inputs: InputMoves = InputMoves()
    consistency: ConsistencyMoves = ConsistencyMoves()


class Recipe(Schedule):
    """Every weight, bound and schedule of one way to train the head."""

    clip_grad_norm: Fraction = 0.0
    loss: Loss
    augment: RecipeAugment = RecipeAugment()


# The best recipe measured on real images (docs/results.md), the one ``autoprompt train`` uses by default;
# params.yaml spells it out as train.recipes.augmented (tests/test_settings.py keeps the two equal).
AUGMENTED = {
    "epochs": {"fewshot": 100, "all": 100},
    "milestones": {"fewshot": [50], "all": [50]},
    "gamma": 0.1,
    "batch_size": 4,
    "lr": 1.0e-3,
    "weight_decay": 1.0e-4,
    "clip_grad_norm": 1.0,
    "loss": {
        "outer_bce": 1.0,
        "tightness": {"weight": 0.0, "d": 5},
        "size": {"weight": 1.0e-2, "bounds": [0.7, 0.9]},
        "pseudo_label": 1.0,
        "consistency": 0.0,
        "barrier": {"t": 5.0, "factor": 1.1, "every": 5},
    },
    "augment": {
        "inputs": {"dihedral": 0.0, "zoom": 0.3, "shift": 0.1, "views": 0.8},
        "consistency": {"flip": 0.75, "rot90": 0.75, "rotate": 0.75, "angle": 0.25},
    },
}


def _names(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class HeadInit(Section):
    """Where a head starts: the prompt of the mean training box, of a box around the whole image, or none
    (``random``); ``scale`` of its output layers."""

    prompt: Literal["mean_box", "whole_box", "random"] = "mean_box"
    scale: PositiveReal = 0.01


def _on_off_auto(value: Any) -> Any:
    """true, false or ``auto``, as given; anything else refused in one line (YAML's yes and no are true and false)."""
    if isinstance(value, bool) or value == AUTO:
        return value
    message = "{value} is not true, false or auto; give one of them"
    raise PydanticCustomError("on_off_auto", message, {"value": repr(value)})


class SelfTraining(Section):
    """A second round on a folder's unboxed images (``autoprompt train`` only; the pipeline's stages leave it
    aside). The first round's ensemble, post-processed as ``predict`` would (re-prompted, volumes fitted), segments
    every unboxed image and slice; a slice whose runs agree (mean Dice of each run's mask with the ensemble's at
    least ``min_agreement``), whose mask is not empty and, in a volume, whose box fits the sequence (the presence
    rule's ``sequence`` cue, ``min_box_iou`` and ``max_growth``) gives a pseudo-box: its mask's box. A second
    ensemble of the same recipe and seeds then trains on the drawn boxes and, each epoch, ``per_epoch`` pseudo-boxed
    images more (null: as many as the drawn boxes), each counting ``weight`` in the losses (a drawn box counts 1).
    Masks are never read. ``enabled``: true, false, or ``auto``: on where the folder holds at least ``min_unboxed``
    images and slices without a box (``wants_second_round``). On real HC18 the round never lowered Dice and lifted
    each ten towards the tight box (``bench/results/own_data_self_training.json``, ``draws_authors.json``); a folder
    of a few unboxed images would give the second round the same few pseudo-boxes every epoch."""

    enabled: Annotated[bool | Literal["auto"], BeforeValidator(_on_off_auto)] = AUTO
    min_unboxed: Positive = 20
    min_agreement: Probability = 0.9
    min_box_iou: Probability = 0.3
    max_growth: PositiveReal = 1.5
    weight: Annotated[float, BeforeValidator(_number), Field(gt=0, le=1)] = 0.5
    per_epoch: Positive | None = None

    def wants_second_round(self, unboxed: int) -> bool:
        """Whether the second round runs on a folder with ``unboxed`` images and slices without a box."""
        return self.enabled is True or (self.enabled == AUTO and unboxed >= self.min_unboxed)


class TrainSettings(Section):
    """The head's runs: ``subsets`` x ``seeds`` few-shot runs of ``shots`` images (or ``all``), and with
    ``all_images`` (true, or a list of recipes) runs on every training image; each recipe of ``recipe`` trains
    them. ``draw``: the few shots drawn ``uniform``-ly, one from each of ``shots`` strata of tight-box area
    (``box_area``), or over the split's embeddings as ``autoprompt suggest`` chooses the images to box
    (``suggest``: the central image of each of ``shots`` k-means clusters), or by greedy k-center on them
    (``kcenter``, as ``autoprompt suggest --method kcenter``). ``select``: the ``last`` epoch's head
    or the ``best`` by validation Dice against the box-prompted masks. ``self_training``: ``autoprompt train``'s
    second round on the unboxed images (``SelfTraining``)."""

    shots: Positive | Literal["all"] = 10
    subsets: Positive = 1
    subset_seed: Int = 0
    draw: Literal["uniform", "box_area", "suggest", "kcenter"] = "uniform"
    seeds: tuple[Int, ...] = Field((0, 1, 2), min_length=1)
    all_images: bool | tuple[str, ...] = False
    recipe: Annotated[tuple[str, ...], BeforeValidator(_names), Field(min_length=1)] = ("augmented",)
    select: Literal["last", "best"] = "last"
    validate_every: Count = 0
    predict_batch_size: Positive = 16
    init: HeadInit = HeadInit()
    device: Device = AUTO
    threads: Positive | None = None
    recipes: dict[str, Recipe] = Field(default_factory=lambda: {"augmented": Recipe.model_validate(AUGMENTED)})
    self_training: SelfTraining = SelfTraining()

    @model_validator(mode="after")
    def _known_recipes(self) -> TrainSettings:
        unknown = [n for n in (*self.recipe, *self.all_images_list) if n not in self.recipes]
        if unknown:
            raise PydanticCustomError(
                "recipe", "recipe {name} is not under train.recipes ({known})",
                {"name": repr(unknown[0]), "known": ", ".join(self.recipes) or "none"},
            )  # fmt: skip
        if len(set(self.seeds)) < len(self.seeds):
            raise PydanticCustomError("seeds", "seeds {seeds} repeat a seed; give each once", {"seeds": self.seeds})
        return self

    @property
    def all_images_list(self) -> tuple[str, ...]:
        return () if isinstance(self.all_images, bool) else self.all_images

    def trains_all_images(self, recipe: str) -> bool:
        """Whether ``recipe`` also trains on every training image (``all_images``: true, or a list naming it)."""
        return self.all_images if isinstance(self.all_images, bool) else recipe in self.all_images


# -------------------------------------------------------------------------------------------------------- baseline
class Moves(Section):
    """The training images, masks and embeddings moved together: flip/turn probability, zoom, shift."""

    dihedral: Probability = 0.0
    zoom: Fraction = 0.0
    shift: Fraction = 0.0


class MethodSchedule(Schedule):
    augment: Moves = Moves()


class UNetSettings(MethodSchedule):
    input_size: Positive = 256
    channels: tuple[Positive, ...] = (32, 64, 128, 256, 512)
    strides: tuple[Positive, ...] = (2, 2, 2, 2)
    res_units: Count = 2

    @model_validator(mode="after")
    def _levels(self) -> UNetSettings:
        if len(self.strides) != len(self.channels) - 1:
            raise PydanticCustomError("levels", "give one stride fewer than channels")
        return self


class TransUNetSettings(MethodSchedule):
    encoder: str = "vit_base_r50_s16_224"
    weights: str | None = None
    input_size: Positive = 224


class AutoSamSettings(MethodSchedule):
    encoder: str = "resnet101"
    weights: str | None = None
    input_size: Positive = 256


class HeadMasksSettings(MethodSchedule):
    pass


class PerSamSettings(Section):
    references: Positive = 3


METHOD_SECTIONS: dict[str, type[Section]] = {
    "unet": UNetSettings,
    "transunet": TransUNetSettings,
    "autosam": AutoSamSettings,
    "head_masks": HeadMasksSettings,
    "persam": PerSamSettings,
}
MethodSettings = UNetSettings | TransUNetSettings | AutoSamSettings | HeadMasksSettings | PerSamSettings


class BaselineSettings(Section):
    """Table 1's other rows, trained on masks: ``methods`` (each with its section), also on every training image
    with ``all_images``."""

    methods: tuple[Literal["unet", "transunet", "autosam", "head_masks", "persam"], ...] = ()
    all_images: bool = True
    device: Device = AUTO
    threads: Positive | None = None
    unet: UNetSettings | None = None
    transunet: TransUNetSettings | None = None
    autosam: AutoSamSettings | None = None
    head_masks: HeadMasksSettings | None = None
    persam: PerSamSettings | None = None

    @model_validator(mode="after")
    def _sections(self) -> BaselineSettings:
        missing = [m for m in self.methods if getattr(self, m) is None]
        if missing:
            raise PydanticCustomError(
                "method", "method {name} has no section; add baseline.{name} (copy it from params.yaml)",
                {"name": missing[0]},
            )  # fmt: skip
        return self

    def method(self, name: str) -> MethodSettings:
        return getattr(self, name)


# -------------------------------------------------------------------------------------------------------- reprompt
def _margin(value: Any) -> Any:
    if value is None or value == AUTO:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return value
    raise PydanticCustomError(
        "margin", "{value} is not a margin; give null (off), a fraction >= 0 of the box's side, or auto",
        {"value": repr(value)},
    )  # fmt: skip


class VolumeFit(Section):
    """Slices of volumes, after re-prompting: the boxes fitted across each volume's slices; a slice whose box
    overlaps neither neighbour's by ``min_iou`` (box IoU), or whose mask is empty between two found ones, is prompted
    again with the box interpolated between its neighbours' (``autoprompt.inference.volume``)."""

    min_iou: Annotated[float, BeforeValidator(_number), Field(ge=0, le=1)] = 0.5


class PresenceSettings(Section):
    """Whole volumes (and 2D images, with ``images``): a slice judged not to hold the structure gets an empty mask,
    walking in from each end of a volume while its end slice is judged absent (``autoprompt.inference.presence``).
    ``cues``: which
    evidence judges (``iou``: the decoder's predicted IoU under ``min_iou``; ``agreement``: the runs' mean Dice with
    the ensemble under ``min_agreement``; ``sequence``: the mask's box overlaps the next slice in by less than
    ``min_box_iou``, or its area is more than ``max_growth`` times that slice's). The defaults are the rule measured
    on cardiac phantoms (``bench/studies/presence.py``, docs/volumes.md: Presence); ``agreement`` needs an ensemble.
    ``images``: 2D images are judged too (off: the rule was measured on volumes, and an emptied picture that holds
    the structure is a miss)."""

    cues: tuple[Literal["iou", "agreement", "sequence"], ...] = ("agreement", "sequence")
    min_iou: Probability = 0.8
    min_agreement: Probability = 0.85
    min_box_iou: Probability = 0.3
    max_growth: PositiveReal = 1.5
    images: bool = False


def _box_threshold(value: Any) -> Any:
    if value == AUTO or (isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1):
        return value
    raise PydanticCustomError(
        "box_threshold", "{value} is not a box threshold; give a probability between 0 and 1, or auto",
        {"value": repr(value)},
    )  # fmt: skip


class RepromptSettings(Section):
    """The ensemble's masks -> their boxes, each side moved out by ``margin`` x the box's side -> the decoder prompted
    again. ``margin``: null (off), a fraction, or ``auto``: per task and recipe, the one of ``candidates`` (or none)
    whose masks' boxes best match the validation images' tight boxes; ``fallback`` where there are none.
    ``box_threshold``: the heads' probability above which a pixel counts towards the box (where no pixel does, the
    mask's threshold, ``evaluate.threshold``); ``auto``: chosen with an ``auto`` margin from ``box_thresholds``, the
    pair whose boxes match best (a set margin, or none to choose on: the mask's threshold). ``volume``: the boxes
    fitted across each volume's slices (``VolumeFit``; null: off). ``presence``: last, the slices judged not to hold
    the structure emptied (``PresenceSettings``; null: off)."""

    margin: Annotated[Literal["auto"] | float | None, BeforeValidator(_margin)] = AUTO
    candidates: tuple[Fraction, ...] = Field((0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2), min_length=1)
    fallback: Fraction | None = 0.1
    box_threshold: Annotated[Literal["auto"] | float, BeforeValidator(_box_threshold)] = AUTO
    box_thresholds: tuple[Annotated[float, BeforeValidator(_number), Field(gt=0, lt=1)], ...] = Field(
        (0.5, 0.7, 0.8, 0.9, 0.95), min_length=1
    )

    @field_validator("box_thresholds")
    @classmethod
    def _distinct(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(set(value)) != len(value):
            raise PydanticCustomError("distinct", "{value} repeats a value; give each once", {"value": list(value)})
        return value

    volume: VolumeFit | None = VolumeFit()
    presence: PresenceSettings | None = PresenceSettings()

    @property
    def auto(self) -> bool:
        return self.margin == AUTO

    def thresholds(self, mask_threshold: float) -> list[float]:
        """The box thresholds to choose among (one: no choice): ``box_thresholds`` where both ``box_threshold`` and
        the margin are ``auto``, the ``box_threshold`` set, else ``mask_threshold`` (``evaluate.threshold``)."""
        if self.box_threshold != AUTO:
            return [float(self.box_threshold)]
        return list(self.box_thresholds) if self.auto else [mask_threshold]


# -------------------------------------------------------------------------------------------------------- evaluate
class EvaluateSettings(Section):
    threshold: Annotated[float, BeforeValidator(_number), Field(gt=0, lt=1)] = 0.5
    batch_size: Positive = 16
    nsd_tolerance_mm: PositiveReal = 2.0
    examples: Count = 4
    device: Device = AUTO
    threads: Positive | None = None


# ------------------------------------------------------------------------------------------------------------ file
class Settings(Section):
    """Every section of a params file. ``datasets``: the datasets the pipeline prepares (its DVC stages' loop)."""

    datasets: tuple[str, ...] = ()
    tasks: dict[str, TaskSpec] = {}
    simulate: SimulateSettings = SimulateSettings()
    prepare: PrepareSettings = PrepareSettings()
    encode: EncodeSettings = EncodeSettings()
    augment: AugmentSettings = AugmentSettings()
    train: TrainSettings = TrainSettings()
    baseline: BaselineSettings = BaselineSettings()
    reprompt: RepromptSettings = RepromptSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    _source: str = PrivateAttr(default="params")

    @model_validator(mode="after")
    def _names_resolve(self) -> Settings:
        for name, task in self.tasks.items():
            if self.datasets and task.dataset not in self.datasets:
                raise PydanticCustomError(
                    "dataset", "task {task}'s dataset {dataset} is not in datasets ({known})",
                    {"task": name, "dataset": repr(task.dataset), "known": ", ".join(self.datasets)},
                )  # fmt: skip
        clash = sorted(set(self.baseline.methods) & set(self.train.recipes))
        if clash:
            raise PydanticCustomError(
                "clash", "train.recipes {name} shares a baseline's name; rename the recipe", {"name": clash[0]}
            )
        return self

    @property
    def source(self) -> str:
        return self._source

    def task(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            raise InputError(
                f"{self._source}: task {name!r} is not under tasks; add it or pick one of {sorted(self.tasks)}"
            )
        return self.tasks[name]


def same_place(section: Section, like: Section) -> None:
    """Let ``section``'s messages name the keys of ``like``'s place in its file: a section copied under another name
    (``autoprompt train``'s folder section, renamed ``data``) still names the user's keys."""
    _place(section, like._where)


def _place(section: BaseModel, where: str) -> None:
    """Tell ``section`` and every section inside it where it sits in the file (``Section.key``)."""
    if isinstance(section, Section):
        object.__setattr__(section, "_where", where)
    for name in type(section).model_fields:
        value = getattr(section, name)
        inner = where if (isinstance(section, PrepareSettings) and name == "datasets") else _join(where, name)
        if isinstance(value, BaseModel):
            _place(value, inner)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    _place(item, _join(inner, key))


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if ": " in where else f"{where}: {name}"


def _location(loc: tuple) -> str:
    """pydantic's error location as the file's dotted key: the union tag and ``prepare.datasets`` are not keys."""
    parts = [str(p) for p in loc]
    if parts[:2] == ["prepare", "datasets"]:
        parts = ["prepare", *parts[2:]]
        if len(parts) > 2 and parts[2] in DATASET_SECTIONS:  # the reader's tag
            del parts[2]
    parts = [p for p in parts if not p.startswith(("~", "function-", "literal["))]
    return ".".join(parts)


SHOULD = re.compile(r"^(Input|Tuple|List|String|Value|Dictionary) should ")


def describe(error: ValidationError, source: str) -> str:
    """The first problem of a validation error as one line: the file, the dotted key, what is wrong and allowed."""
    first = error.errors()[0]
    where = _location(first["loc"])
    kind, message = first["type"], first["msg"]
    if kind == "missing":
        return f"{source}: {where}: missing; add it (params.yaml has every key)"
    if SHOULD.match(message):  # pydantic's own checks: "<key> is <value>; it should be ..."
        message = re.sub(r" after validation, not \d+$", "", SHOULD.sub("it should ", message))
        return f"{source}: {where} is {first['input']!r}; {message}"
    return f"{source}: {where}: {message}" if where else f"{source}: {message}"


def settings_from(data: dict | None, source: str) -> Settings:
    """``Settings`` of a parsed params mapping; ``source`` names it in messages (a path, or a command's options)."""
    try:
        settings = Settings.model_validate(data or {})
    except ValidationError as error:
        raise InputError(describe(error, source)) from None
    _place(settings, source)
    object.__setattr__(settings, "_source", source)
    return settings


def read_params(path: Path | str) -> dict:
    """A params file's mapping, with a one-line error for a missing file or a YAML mistake."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: params file not found; run from the folder that holds dvc.yaml, or give --params")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', error)}") from None
    if data is not None and not isinstance(data, dict):
        raise InputError(f"{path}: expected sections (datasets, tasks, prepare, ...), got a {type(data).__name__}")
    return data or {}


def load_settings(path: Path | str = "params.yaml") -> Settings:
    """The params file at ``path``, read and checked once."""
    return settings_from(read_params(path), str(path))


def json_schema() -> dict:
    """A JSON schema of params files, for editors (``# yaml-language-server: $schema=...``)."""
    schema = Settings.model_json_schema(by_alias=True)
    prepare = schema["$defs"]["PrepareSettings"]  # in the file, each dataset is a key of prepare
    datasets = prepare["properties"].pop("datasets")["additionalProperties"]
    prepare["additionalProperties"] = {"anyOf": datasets["oneOf"]}
    return schema


if __name__ == "__main__":
    json.dump(json_schema(), sys.stdout, indent=1)
    sys.stdout.write("\n")

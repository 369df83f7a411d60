"""A model made runnable: the backbone's encoder and frozen decoder, the head(s), and one input segmented at a time.

``Predictor.segment`` takes an image as read, replays the model's preprocessing (``autoprompt.data.images``), encodes
each slice, prompts the decoder with each head's prompt, averages the heads' probabilities in the prepared frame
(optionally re-prompting the decoder with their masks' loosened boxes, fitting a volume's boxes across its slices and
emptying the slices judged not to hold the structure) and maps them back onto the input's grid.
``timings`` adds up the seconds spent in each step.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from autoprompt.data.images import Framed, Stack, as_stack, frame_slices, to_input_grid
from autoprompt.device import EXACT_NUMERICS, Numerics
from autoprompt.errors import InputError
from autoprompt.evaluation.metrics import mask_dice
from autoprompt.inference.model import Model
from autoprompt.inference.presence import Evidence, Presence, absent_slices, gather, slice_agreement
from autoprompt.inference.reprompt import reprompt
from autoprompt.inference.volume import refine_volumes
from autoprompt.io import file_sha256
from autoprompt.model import backbones, checkpoints, runtimes
from autoprompt.model.decoding import decode_scored

OPTION = "--{}".format  # names a setting in messages: predict's options


@dataclass
class Segmentation:
    """``probabilities``: foreground probabilities on the input's grid (H x W, or the volume's z x y x x);
    ``frame``: Z x S x S probabilities in the prepared frame; ``framed``: the preprocessed slices and geometry;
    ``agreement``: the mean Dice of each run's mask with the ensemble's (None for one run); ``refitted``: how many
    slices of a volume were prompted again from their neighbours' boxes, per reason (``autoprompt.inference.volume``);
    ``absent``: the slices (indices along Z) judged not to hold the structure, whose masks were emptied
    (``autoprompt.inference.presence``); ``evidence``: what each slice said about presence, before any was emptied.
    """

    probabilities: np.ndarray
    frame: np.ndarray
    framed: Framed
    stack: Stack
    agreement: float | None = None
    refitted: Counter = field(default_factory=Counter)
    absent: list[int] = field(default_factory=list)
    evidence: Evidence | None = None


def checked_checkpoint(model: Model, checkpoint: Path | str | None) -> Path:
    """The backbone checkpoint to use (``checkpoint``, else the model's configured path, else packaged weights),
    refused unless its sha256 is the one the model was trained with."""
    path = checkpoints.resolve_checkpoint(
        model.backbone, str(checkpoint) if checkpoint else model.checkpoint, "--checkpoint"
    )
    found = file_sha256(path)
    if found != model.checkpoint_sha256:
        raise InputError(
            f"{path}: backbone checkpoint sha256 {found[:16]}… differs from the {model.checkpoint_sha256[:16]}… that "
            f"the model was trained with ({model.checkpoint or 'the packaged ' + model.backbone + ' weights'}); "
            "give that checkpoint with --checkpoint"
        )
    return path


def encoder_choice(
    model: Model, device: torch.device, runtime: str = "auto", numerics: Numerics = EXACT_NUMERICS
) -> runtimes.Choice:
    """The runtime and precision that encode for ``model`` on ``device``: on a GPU, torch at the model's precision;
    on a CPU, ``runtime`` (``auto``: OpenVINO when installed), in bfloat16 with OpenVINO where ``numerics`` is the
    fast path with bfloat16 (``bench/results/precision.json`` measures what it changes), or where the model's
    embeddings were OpenVINO bfloat16 ones; else float32."""
    if device.type != "cpu":
        chosen = "torch" if runtime == "auto" else runtime
        return runtimes.choose(chosen, device, gpu_autocast=model.precision, key=OPTION)
    chosen = runtimes.choose(runtime, device, key=OPTION)
    if chosen.runtime == "openvino" and numerics.precision == "bfloat16":
        return runtimes.Choice(chosen.runtime, "bfloat16")
    if chosen.runtime == "openvino" == model.runtime and model.precision in runtimes.OPENVINO_PRECISIONS:
        return runtimes.Choice(chosen.runtime, model.precision)
    return chosen


class Predictor:
    """Everything one model needs to segment inputs on ``device``; ``batch_size`` slices per encoder call;
    ``runtime`` and ``cache_dir`` as in ``encoder_choice`` and ``runtimes.build_encoder``; ``reprompt_margin``: when
    set, the heads' mean probabilities are replaced by the decoder's answer to the boxes of their masks
    (``> threshold``, or of their cores, ``> box_threshold``) loosened by that margin
    (``autoprompt.inference.reprompt``); ``volume_min_iou``: then, for a
    volume, the boxes are fitted across its slices and the slices missing between found ones or off the sequence are
    prompted again (``autoprompt.inference.volume``; None: not; the volume's end slices are left alone, since slices
    beyond a structure are rightly empty); ``presence``: last, the slices (or the 2D image) judged not to hold the
    structure get an empty mask (``autoprompt.inference.presence``; None: every mask is kept)."""

    def __init__(
        self,
        model: Model,
        device: torch.device,
        batch_size: int = 8,
        checkpoint: Path | str | None = None,
        runtime: str = "auto",
        cache_dir: Path | str | None = None,
        reprompt_margin: float | None = None,
        threshold: float = 0.5,
        volume_min_iou: float | None = None,
        presence: Presence | None = None,
        numerics: Numerics = EXACT_NUMERICS,
        box_threshold: float | None = None,
    ) -> None:
        if reprompt_margin is not None and reprompt_margin < 0:
            raise InputError(f"reprompt margin is {reprompt_margin}; give a fraction >= 0 of the box's side")
        if volume_min_iou is not None and not 0 <= volume_min_iou <= 1:
            raise InputError(f"volume min IoU is {volume_min_iou}; give a box IoU in [0, 1]")
        self.reprompt_margin, self.threshold, self.volume_min_iou = reprompt_margin, threshold, volume_min_iou
        self.presence, self.box_threshold = presence, box_threshold
        path = checked_checkpoint(model, checkpoint)
        state = backbones.load_state_dict(path)
        self.model, self.device, self.batch_size = model, device, batch_size
        choice = encoder_choice(model, device, runtime, numerics)
        self.encoder_choice, self.numerics = choice, numerics
        cache_dir = runtimes.default_cache_dir() if cache_dir is None else Path(cache_dir)
        self.encoder = runtimes.build_encoder(model.backbone, path, choice, device, cache_dir, state)
        if device.type == "cpu" and numerics.precision == "bfloat16":  # OpenVINO's with its bfloat16 encoder
            self.decoder = runtimes.build_decoder(model.backbone, path, choice, cache_dir, state)
        else:
            self.decoder = backbones.build_prompt_decoder(model.backbone, path, state).to(device)
        self.heads = [head.to(device) for head in model.build_heads()]
        self.timings: dict[str, float] = defaultdict(float)

    @property
    def decoder_runtime(self) -> str:
        """What runs the decoder: ``openvino`` (``runtimes.OpenVinoDecoder``) or ``torch``."""
        return getattr(self.decoder, "runtime", "torch")

    def encode(self, slices: np.ndarray) -> torch.Tensor:
        """Z x S x S uint8 prepared slices -> Z x 256 x 64 x 64 float16 embeddings."""
        size = self.model.label_size
        assert slices.ndim == 3 and slices.shape[1:] == (size, size), f"expected Z x {size} x {size}: {slices.shape}"
        start = time.perf_counter()
        embeddings = runtimes.embed(self.encoder, self.model.backbone, torch.from_numpy(slices), self.batch_size)
        self.timings["encode"] += time.perf_counter() - start
        return embeddings

    def decode(self, embeddings: torch.Tensor) -> np.ndarray:
        """Z x 256 x 64 x 64 embeddings -> Z x S x S float32 probabilities, the mean over the heads (re-prompted
        when the predictor has a ``reprompt_margin``). With a ``volume_min_iou`` too, the Z slices are one volume's,
        in slice order, and are refitted across it (``autoprompt.inference.volume``). With a ``presence`` rule, the
        slices judged absent are zeros."""
        return self._decode(embeddings)[0]

    def decode_with_evidence(self, embeddings: torch.Tensor) -> tuple[np.ndarray, Evidence]:
        """``decode``'s probabilities (Z x S x S) and what each slice said about presence before any was emptied
        (``autoprompt.inference.presence.Evidence``: the final masks' boxes, the runs' agreement, ...)."""
        probs, _, _, _, evidence = self._decode(embeddings)
        return probs, evidence

    def _decode(self, embeddings: torch.Tensor) -> tuple[np.ndarray, float | None, Counter, list[int], Evidence]:
        """``decode``'s probabilities, the mean Dice of each head's mask with the ensemble's (None: one head), the
        slices prompted again from their neighbours' boxes, per reason, the slices emptied as absent and the
        evidence they were judged by."""
        with self.numerics.autocast(self.device):  # bfloat16 on the fast path where the CPU has it
            return self._decode_all(embeddings)

    def _decode_all(self, embeddings: torch.Tensor) -> tuple[np.ndarray, float | None, Counter, list[int], Evidence]:
        """``_decode``'s work, under the numerics' autocast."""
        start = time.perf_counter()
        size = self.model.label_size
        scored = [
            decode_scored(self.decoder, embeddings, size, self.batch_size, self.device, head=h) for h in self.heads
        ]
        each = [p for p, _ in scored]
        probs = sum(each) / len(each)
        iou = sum(i for _, i in scored) / len(scored)  # the heads' prompts: their mean predicted IoU
        agreement = None
        if len(each) > 1:
            ensemble = probs > self.threshold
            agreement = float(np.mean([mask_dice(p > self.threshold, ensemble) for p in each]))
        if self.reprompt_margin is not None:
            probs = reprompt(
                self.decoder, embeddings, probs, self.reprompt_margin, self.threshold, self.batch_size, self.device,
                iou=iou, box_threshold=self.box_threshold,
            )  # fmt: skip
        refitted = Counter()
        if self.reprompt_margin is not None and self.volume_min_iou is not None and len(probs) > 1:
            slices = torch.arange(len(probs))
            probs, refitted = refine_volumes(
                self.decoder, embeddings, probs, [slices], slices.double(), self.reprompt_margin,
                self.volume_min_iou, False, self.threshold, self.batch_size, self.device, iou=iou,
            )  # fmt: skip
        evidence = gather(probs, iou, slice_agreement(each, self.threshold), self.threshold)
        absent: list[int] = []
        if self.presence is not None:
            emptied = absent_slices(evidence, self.presence)
            probs[emptied] = 0.0
            absent = torch.nonzero(emptied).flatten().tolist()
        self.timings["decode"] += time.perf_counter() - start
        return probs.numpy().astype(np.float32), agreement, refitted, absent, evidence

    def prepare(self, image: sitk.Image) -> tuple[Stack, Framed]:
        """An image as read (2D or 3D) -> its slices and their preprocessing, the model's own. Safe to run on another
        thread while the predictor segments another image (``files.predict`` reads one input ahead)."""
        start = time.perf_counter()
        stack = as_stack(image)
        framed = frame_slices(stack, self.model.preprocessing)
        self.timings["preprocess"] += time.perf_counter() - start
        return stack, framed

    def segment(self, image: sitk.Image, prepared: tuple[Stack, Framed] | None = None) -> Segmentation:
        """An image as read (2D or 3D) -> its probabilities on its own grid; ``prepared``: ``prepare(image)``'s,
        where it was already called."""
        stack, framed = prepared or self.prepare(image)
        frame, agreement, refitted, absent, evidence = self._decode(self.encode(framed.slices))
        start = time.perf_counter()
        probabilities = to_input_grid(frame, framed, stack)
        self.timings["postprocess"] += time.perf_counter() - start
        return Segmentation(probabilities, frame, framed, stack, agreement, refitted, absent, evidence)

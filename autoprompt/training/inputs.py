"""A task's training inputs, read and computed once per train stage: embeddings, boxes, box-prompted masks, and the
encoded views of the few-shot images; and the backbone checkpoint its embeddings were made with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import zarr

from autoprompt.data import views as image_views
from autoprompt.data.tasks import Task
from autoprompt.errors import InputError
from autoprompt.io import file_sha256
from autoprompt.model import checkpoints
from autoprompt.model.decoding import PromptDecoder
from autoprompt.settings import AugmentSettings, EncodeSettings
from autoprompt.training.augment import Views
from autoprompt.training.pseudo_labels import box_prompted_masks
from autoprompt.training.validation import ValidationSet


def task_checkpoint(task: Task, encode: EncodeSettings) -> Path:
    """The backbone checkpoint that ``encode`` configures, refused unless the task's embeddings were made with it."""
    checkpoint = checkpoints.resolve_checkpoint(encode.backbone, encode.checkpoint, encode.key("checkpoint"))
    if file_sha256(checkpoint) != task.embeddings.attrs["checkpoint_sha256"]:
        raise InputError(
            f"{task.files.embeddings}: encoded with another checkpoint than {checkpoint}; run the encode stage again"
        )
    return checkpoint


class TaskInputs:
    """Embeddings, boxes and box-prompted masks of the task's images, read and computed once per stage call."""

    def __init__(
        self,
        task: Task,
        decoder: PromptDecoder,
        device: torch.device,
        batch_size: int,
        views: zarr.Group | None = None,
        settings: AugmentSettings | None = None,
    ) -> None:
        """``views``: the ``augment`` stage's store, made with ``settings`` (None: no views)."""
        self.task, self.decoder, self.device, self.batch_size = task, decoder, device, batch_size
        self._embeddings: dict[str, torch.Tensor] = {}
        self._pseudo: dict[str, torch.Tensor] = {}
        self._views: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.view_store, self.settings = views, settings
        self._view_rows = {v: n for n, v in enumerate(views.attrs["ids"])} if views is not None else {}

    def has_views(self, ids: tuple[str, ...]) -> bool:
        """Whether every image of ``ids`` has its views in the store."""
        return bool(self._view_rows) and all(f"{i}{image_views.SEPARATOR}0" in self._view_rows for i in ids)

    def views(self, ids: tuple[str, ...]) -> Views:
        """The views of ``ids``: N x K embeddings, boxes and box-prompted masks. A view whose box left the frame is
        replaced by the image itself."""
        missing = tuple(i for i in dict.fromkeys(ids) if i not in self._views)
        for image_id in missing:
            self._views[image_id] = self._image_views(image_id)
        embeddings, boxes, pseudo = (torch.stack(part) for part in zip(*(self._views[i] for i in ids), strict=True))
        return Views(embeddings, boxes, pseudo)

    def _image_views(self, image_id: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One image's K views: K x 256 x 64 x 64 embeddings, K x 4 boxes, K x S x S box-prompted masks."""
        count = self.settings.count
        rows = [self._view_rows[v] for v in image_views.view_ids([image_id], count)]
        embeddings = torch.from_numpy(np.asarray(self.view_store["embeddings"][rows[0] : rows[-1] + 1]))
        matrices, _ = image_views.draw(image_id, self.settings)
        box = self.boxes((image_id,))
        boxes = image_views.view_boxes(box.expand(count, -1), matrices, self.task.label_size)
        lost = ~image_views.usable(boxes)
        embeddings[lost], boxes[lost] = self.embeddings((image_id,)).to(embeddings.dtype), box.to(boxes.dtype)
        pseudo = box_prompted_masks(self.decoder, embeddings, boxes, self.task.label_size, self.batch_size, self.device)
        return embeddings, boxes, pseudo

    def embeddings(self, ids: tuple[str, ...]) -> torch.Tensor:
        missing = tuple(i for i in dict.fromkeys(ids) if i not in self._embeddings)
        if missing:
            self._embeddings.update(zip(missing, self.task.load_embeddings(self.task.rows(ids=missing)), strict=True))
        return torch.stack([self._embeddings[i] for i in ids])

    def boxes(self, ids: tuple[str, ...]) -> torch.Tensor:
        return self.task.boxes(self.task.rows(ids=ids))

    def pseudo(self, ids: tuple[str, ...]) -> torch.Tensor:
        missing = tuple(i for i in dict.fromkeys(ids) if i not in self._pseudo)
        if missing:
            masks = box_prompted_masks(
                self.decoder,
                self.embeddings(missing),
                self.boxes(missing),
                self.task.label_size,
                self.batch_size,
                self.device,
            )
            self._pseudo.update(zip(missing, masks, strict=True))
        return torch.stack([self._pseudo[i] for i in ids])

    def validation(self, with_masks: bool) -> ValidationSet | None:
        """The task's validation images: embeddings, box-prompted masks, and masks (None unless asked for and every
        validation image has one: Dice against a missing mask would be meaningless)."""
        rows = self.task.rows("val")
        ids = tuple(rows["id"])
        if not ids:
            return None
        masks = self.task.load_masks(rows) if with_masks and bool(self.task.has_masks(rows).all()) else None
        return ValidationSet(self.embeddings(ids), self.pseudo(ids), masks, self.batch_size)

"""A task's training inputs, read and computed once per train stage: embeddings, boxes, box-prompted masks."""

from __future__ import annotations

import torch

from autoprompt.data.tasks import Task
from autoprompt.model.decoding import PromptDecoder
from autoprompt.training.pseudo_labels import box_prompted_masks
from autoprompt.training.validation import ValidationSet


class TaskInputs:
    """Embeddings, boxes and box-prompted masks of the task's images, read and computed once per stage call."""

    def __init__(self, task: Task, decoder: PromptDecoder, device: torch.device, batch_size: int) -> None:
        self.task, self.decoder, self.device, self.batch_size = task, decoder, device, batch_size
        self._embeddings: dict[str, torch.Tensor] = {}
        self._pseudo: dict[str, torch.Tensor] = {}

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

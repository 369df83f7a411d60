"""The suite's memo of encoded images: each image is encoded once per encoder, however many tests encode it.

The encoders are deterministic functions of an image: the same backbone, checkpoint, runtime, precision, device and
thread count give the same embedding every time (OpenVINO's encoder runs one image per request, so the batch does
not change it). Most of the suite's time went into encoding the same phantoms again, in test after test. ``install``
wraps ``runtimes.build_encoder`` (to note what each encoder is) and ``runtimes.embed`` (to look each image up by its
bytes); the modules that test the encoders themselves (``BYPASS``) always encode."""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from collections import OrderedDict

import torch

from autoprompt.model import runtimes

BYPASS = ("tests.test_runtimes", "tests.test_numerics", "tests.test_backbones")  # they test what encoding gives
LIMIT = 1500  # embeddings kept (2 MiB each), the oldest dropped first


class Memo:
    """Embeddings by (encoder identity, thread count, image bytes); ``active`` is off while a ``BYPASS`` module runs."""

    def __init__(self) -> None:
        self.active = True
        self.kept: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.encoders: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.hits = self.misses = 0

    def identity(self, encoder: object) -> tuple | None:
        try:
            return self.encoders.get(encoder)
        except TypeError:  # an encoder that takes no weak reference: never memoised
            return None


MEMO = Memo()


def _sha256(image: torch.Tensor) -> bytes:
    return hashlib.sha256(image.contiguous().cpu().numpy().tobytes()).digest()


def install() -> None:
    """Wrap ``runtimes.build_encoder`` and ``runtimes.embed`` for the whole session."""
    build, embed = runtimes.build_encoder, runtimes.embed

    def build_encoder(backbone, checkpoint, choice, device, *args, **kwargs):
        encoder = build(backbone, checkpoint, choice, device, *args, **kwargs)
        stat = checkpoint.stat() if hasattr(checkpoint, "stat") else None
        identity = (backbone, str(checkpoint), stat and (stat.st_size, stat.st_mtime_ns), repr(choice), str(device),
                    bool(kwargs.get("compile")))  # fmt: skip
        with contextlib.suppress(TypeError):  # an encoder that takes no weak reference is never memoised
            MEMO.encoders[encoder] = identity
        return encoder

    def memo_embed(encoder, name: str, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        identity = MEMO.identity(encoder) if MEMO.active else None
        if identity is None:
            return embed(encoder, name, images, batch_size)
        key = (*identity, name, torch.get_num_threads())
        digests = [
            (
                key,
                str(tuple(image.shape)),
                str(image.dtype),
                hashlib.sha256(image.contiguous().numpy().tobytes()).digest(),
            )
            for image in images
        ]
        missing = [i for i, d in enumerate(digests) if d not in MEMO.kept]
        MEMO.hits, MEMO.misses = MEMO.hits + len(images) - len(missing), MEMO.misses + len(missing)
        if missing:
            fresh = embed(encoder, name, images[missing], batch_size)
            for i, embedding in zip(missing, fresh, strict=True):
                MEMO.kept[digests[i]] = embedding.clone()
                while len(MEMO.kept) > LIMIT:
                    MEMO.kept.popitem(last=False)
        return torch.stack([MEMO.kept[d] for d in digests])

    runtimes.build_encoder, runtimes.embed = build_encoder, memo_embed

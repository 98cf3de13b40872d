"""Signatures and workflows (chain, group, chord), at Celery's ``celery.canvas`` path."""

from celeriac.canvas.signature import Signature, maybe_signature, signature, subtask
from celeriac.canvas.workflows import chain, chord, chunks, group, xmap, xstarmap

__all__ = [
    "Signature",
    "chain",
    "chord",
    "chunks",
    "group",
    "maybe_signature",
    "signature",
    "subtask",
    "xmap",
    "xstarmap",
]

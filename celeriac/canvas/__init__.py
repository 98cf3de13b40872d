"""Signatures and workflows (chain, group, chord), at Celery's ``celery.canvas`` path."""

from celeriac.canvas.maps import chunks, xmap, xstarmap
from celeriac.canvas.signature import Signature, maybe_signature, signature, subtask
from celeriac.canvas.workflows import chain, chord, group

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

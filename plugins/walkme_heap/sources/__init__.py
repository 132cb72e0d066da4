"""Sources: each yields bounded chunks of rows (``Chunk``) for one window, never a whole day."""

from walkme_heap.sources.base import Chunk, SourceError, SourceMissingError

__all__ = ["Chunk", "SourceError", "SourceMissingError"]

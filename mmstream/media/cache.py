"""The one cache of prepared images: bounded, keyed by content hash, owned by the media package.

An image sent again (the same picture in every turn of a conversation, a
logo on every request) is not decoded, fitted or base64-encoded again. The
key is the SHA-256 of the bytes with what the fit depends on (the limits and
the accepted types), never an object's identity. The cache holds the fitted
bytes only when fitting changed them (an unchanged image is the caller's) and
the base64 text in both cases; it is bounded in entries and in bytes, least
recently used first out. Thread-safe: worker threads and event loops share it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import final

from attrs import frozen

from mmstream.content import EncodedImage

__all__ = ["CacheEntry", "MediaCache", "clear_cache", "shared_cache"]


@final
@frozen(kw_only=True)
class CacheEntry:
    """What preparing one image found: its fitted bytes (when changed), size and wire form.

    Attributes:
        data: the fitted bytes, or ``None`` when the input passes unchanged.
        width: width in pixels as seen (0 when not decoded).
        height: height in pixels as seen.
        encoded: the base64 text and real type of the bytes to send.
    """

    data: bytes | None
    width: int
    height: int
    encoded: EncodedImage

    @property
    def cost(self) -> int:
        """The bytes this entry keeps alive."""
        return len(self.encoded.base64) + (len(self.data) if self.data is not None else 0)


@final
class MediaCache:
    """A bounded, thread-safe LRU of prepared images.

    Args:
        max_entries: most images kept.
        max_bytes: most bytes kept (fitted bytes and base64 text together); an
            entry over a quarter of it is not kept at all.
    """

    def __init__(self, *, max_entries: int = 64, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, CacheEntry] = OrderedDict()
        self._size = 0

    def __repr__(self) -> str:
        return f"MediaCache(entries={len(self)}, bytes={self._size}, max_bytes={self.max_bytes})"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """The bytes held now."""
        return self._size

    def get(self, key: Hashable) -> CacheEntry | None:
        """The entry for ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: Hashable, entry: CacheEntry) -> None:
        """Keep ``entry``, dropping the least recently used ones beyond the bounds."""
        cost = entry.cost
        if cost > self.max_bytes // 4 or self.max_entries <= 0:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= old.cost
            self._entries[key] = entry
            self._size += cost
            while len(self._entries) > self.max_entries or self._size > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._size -= dropped.cost

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self._size = 0


_shared = MediaCache()


def shared_cache() -> MediaCache:
    """The cache every call uses unless one is given (one per process)."""
    return _shared


def clear_cache() -> None:
    """Forget every prepared image (for tests and benchmarks)."""
    _shared.clear()

"""Everything that turns a user's file into what a provider accepts (images today).

One module per concern: [`policy`][mmstream.media.policy] (what a provider
takes, as data), [`sniff`][mmstream.media.sniff] (the real type, the base64
wire form), [`fit`][mmstream.media.fit] (Pillow: convert, rotate, shrink),
[`cache`][mmstream.media.cache] (the one bounded cache of prepared images),
[`netguard`][mmstream.media.netguard] (where downloads may go: pure rules),
[`download`][mmstream.media.download] (the guarded download) and
[`prepare`][mmstream.media.prepare] (a whole request, the one entry point the
endpoint calls). Documents, audio and video join here, each with its own module.

Importing this package imports neither Pillow nor httpcore.
"""

from __future__ import annotations

from mmstream.media.cache import MediaCache, clear_cache
from mmstream.media.netguard import URLAccess
from mmstream.media.policy import DEFAULT_POLICY, ImagePolicy
from mmstream.media.sniff import encoded_form, sniff_mimetype

__all__ = [
    "DEFAULT_POLICY",
    "ImagePolicy",
    "MediaCache",
    "URLAccess",
    "clear_cache",
    "encoded_form",
    "sniff_mimetype",
]

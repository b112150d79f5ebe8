"""Images, made ready for a provider: the public names of [`mmstream.media`][mmstream.media].

This module keeps the names user code and the docs use (``ImagePolicy``,
each provider's policy constant, ``sniff_mimetype``, ``clear_cache``, ...).
The policy constants live with their providers (``OPENAI_POLICY`` in
``mmstream.providers.openai``, ...) and are imported from there on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmstream._lazy import lazy
from mmstream.media.cache import clear_cache
from mmstream.media.fit import FittedImage, fit_image
from mmstream.media.netguard import URLAccess
from mmstream.media.policy import DEFAULT_POLICY, POLICY_OPTION, ImagePolicy
from mmstream.media.prepare import policy_for, prepare_request
from mmstream.media.sniff import base64_length, data_url, encode_base64, sniff_mimetype

if TYPE_CHECKING:
    from mmstream.providers.anthropic import ANTHROPIC_POLICY as ANTHROPIC_POLICY
    from mmstream.providers.azure import AZURE_POLICY as AZURE_POLICY
    from mmstream.providers.gemini import GEMINI_POLICY as GEMINI_POLICY
    from mmstream.providers.ollama import OLLAMA_POLICY as OLLAMA_POLICY
    from mmstream.providers.openai import COMPATIBLE_POLICY as COMPATIBLE_POLICY
    from mmstream.providers.openai import OPENAI_POLICY as OPENAI_POLICY

__all__ = [
    "ANTHROPIC_POLICY",
    "AZURE_POLICY",
    "COMPATIBLE_POLICY",
    "DEFAULT_POLICY",
    "GEMINI_POLICY",
    "OLLAMA_POLICY",
    "OPENAI_POLICY",
    "POLICY_OPTION",
    "FittedImage",
    "ImagePolicy",
    "URLAccess",
    "base64_length",
    "clear_cache",
    "data_url",
    "encode_base64",
    "fit_image",
    "policy_for",
    "prepare_request",
    "sniff_mimetype",
]

#: each provider's policy constant, and the module that owns it.
_POLICIES = {
    "OPENAI_POLICY": "mmstream.providers.openai",
    "COMPATIBLE_POLICY": "mmstream.providers.openai",
    "AZURE_POLICY": "mmstream.providers.azure",
    "ANTHROPIC_POLICY": "mmstream.providers.anthropic",
    "GEMINI_POLICY": "mmstream.providers.gemini",
    "OLLAMA_POLICY": "mmstream.providers.ollama",
}


__getattr__, __dir__ = lazy(globals(), _POLICIES)

"""What a provider takes in images, as data: [`ImagePolicy`][mmstream.media.policy.ImagePolicy].

Each provider owns its policy constant (``OPENAI_POLICY`` in
``mmstream.providers.openai``, ...) and exposes it as ``image_policy``; a call
(or the provider's ``extra``) may replace it with the ``image_policy`` option.
Pure: attrs only (the call's choice of policy is made in
[`mmstream.media.prepare`][mmstream.media.prepare]).
"""

from __future__ import annotations

from typing import final

from attrs import field, frozen

from mmstream.media.netguard import PUBLIC_ONLY, URLAccess

__all__ = [
    "COMMON_TYPES",
    "DEFAULT_POLICY",
    "MB",
    "POLICY_OPTION",
    "URL_ACCESS_OPTION",
    "ImagePolicy",
]

MB = 1_000_000
"""A megabyte as the providers' documents count it (decimal)."""

#: the types nearly every API takes.
COMMON_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


@final
@frozen(kw_only=True)
class ImagePolicy:
    """A provider's documented image limits, as data (``None`` means no limit).

    Byte limits on the whole request (``max_request_bytes``) are measured on
    the base64 text of the images, since that is what travels in the JSON body.

    Attributes:
        accepted_types: MIME types the API takes; others are converted.
        max_bytes: largest raw image, in bytes.
        max_base64_bytes: largest image measured on its base64 text (Anthropic).
        max_edge: longest side the API accepts, in pixels.
        recommended_edge: longest side worth sending (larger is downscaled to it).
        max_pixels: most pixels (width × height) the API accepts.
        max_images: most images in one request.
        max_request_bytes: most bytes of images in one request, all together (base64).
        accepts_urls: whether the API fetches http(s) URLs itself.
        own_urls: URL prefixes the API reads itself even when it fetches no other
            URL (Gemini: ``gs://`` and its Files API); passed on untouched.
        fit: whether mmstream converts, rotates and shrinks images to fit.
        recommended_pixels: most pixels worth sending (larger is downscaled to it).
        many_images: above this many images in a request, ``many_images_max_edge``
            applies instead of ``max_edge`` (Anthropic: 20 images, 2000 px).
        many_images_max_edge: the longest side accepted in a many-image request.
        low_detail_edge: longest side worth sending for an image whose ``detail``
            is ``"low"`` (OpenAI looks at a 512 px version only).
        accepts_animation: whether animated GIF/WebP are taken (else the first frame
            is sent as a still image).
        fetch_max_bytes: the largest image mmstream downloads from a URL.
        fetch_timeout: seconds allowed to download one image from a URL.
        url_access: where mmstream may download images from (public addresses
            only by default; see [`URLAccess`][mmstream.media.netguard.URLAccess]).
            A call's ``url_access`` option replaces it.

    Example:
        Turn fitting off, or tighten a limit, for every call of a provider or for one call::

            policy = attrs.evolve(OPENAI_POLICY, recommended_edge=1024)
            await llm.acomplete("...", docs, image_policy=policy)
            OpenAI(model="gpt-4o", extra={"image_policy": attrs.evolve(OPENAI_POLICY, fit=False)})
    """

    accepted_types: frozenset[str] = COMMON_TYPES
    max_bytes: int | None = None
    max_base64_bytes: int | None = None
    max_edge: int | None = None
    recommended_edge: int | None = None
    max_pixels: int | None = None
    max_images: int | None = None
    max_request_bytes: int | None = None
    accepts_urls: bool = True
    own_urls: tuple[str, ...] = ()
    fit: bool = True
    recommended_pixels: int | None = None
    many_images: int | None = None
    many_images_max_edge: int | None = None
    low_detail_edge: int | None = None
    accepts_animation: bool = True
    fetch_max_bytes: int = 50 * MB
    fetch_timeout: float = 30.0
    url_access: URLAccess = field(default=PUBLIC_ONLY)


#: the policy of a provider that declares none: common types, no limits, fitting on.
DEFAULT_POLICY = ImagePolicy()

#: the call option (and provider ``extra`` key) that overrides a provider's policy.
POLICY_OPTION = "image_policy"

#: the call option (and provider ``extra`` key) that overrides the policy's ``url_access``.
URL_ACCESS_OPTION = "url_access"

"""What goes into a model: messages made of typed text and image blocks.

The names follow LlamaIndex (``ChatMessage``, ``MessageRole``, ``TextBlock``,
``ImageBlock``, ``ImageDocument``) so its users feel at home. Everything here is
a frozen value: pure, no I/O; images are loaded and fitted later, off the event
loop, by [`mmstream.media`][mmstream.media].
"""

from __future__ import annotations

import base64
import binascii
import enum
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, final

from attrs import field, frozen

from mmstream.errors import InvalidArgumentError, InvalidImageError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "ChatMessage",
    "ContentBlock",
    "EncodedImage",
    "ImageBlock",
    "ImageDocument",
    "ImageInput",
    "MessageRole",
    "TextBlock",
]


class MessageRole(str, enum.Enum):
    """Who speaks a message."""

    SYSTEM = "system"
    DEVELOPER = "developer"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> MessageRole:
        raise InvalidArgumentError(
            f"unknown message role {value!r}; use one of {[r.value for r in cls]}",
            argument="role",
        )


def _to_role(value: MessageRole | str) -> MessageRole:
    return value if isinstance(value, MessageRole) else MessageRole(value)


# --- checking what the caller passed (a typed error naming the argument) -----------------


def _type_name(value: object) -> str:
    return type(value).__name__


def _text(instance: object, attribute: Any, value: Any) -> None:
    if not isinstance(value, str):
        raise InvalidArgumentError(
            f"{attribute.name} must be a str, not {_type_name(value)}", argument=attribute.name
        )


def _optional_text(instance: object, attribute: Any, value: Any) -> None:
    if value is not None:
        _text(instance, attribute, value)


def _checked_image_bytes(value: object) -> bytes | None:
    """``image``: raw bytes, or base64 text (also a ``data:`` URL), or ``None``."""
    if value is not None and not isinstance(value, (bytes, bytearray, memoryview, str)):
        raise InvalidImageError(
            f"image must be bytes or base64 text, not {_type_name(value)}; pass a path "
            "with path= (or image_path=) and a PIL image with from_pil()"
        )
    return _to_image_bytes(value)


def _checked_path(value: object) -> Path | None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise InvalidArgumentError(
            f"path must be a str or a path, not {_type_name(value)}", argument="path"
        )
    return _to_path(value)


def _checked_path_text(value: object) -> str | None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise InvalidArgumentError(
            f"image_path must be a str or a path, not {_type_name(value)}",
            argument="image_path",
        )
    return _to_path_text(value)


def _base64_text(instance: object, attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise InvalidImageError(
            f"ImageDocument(image=...) takes base64 text, not {_type_name(value)}; "
            "use ImageDocument.from_bytes() for raw bytes"
        )


def _mapping(instance: object, attribute: Any, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(
            f"{attribute.name} must be a mapping (a dict), not {_type_name(value)}",
            argument=attribute.name,
        )


def _decode_base64(value: str | bytes) -> bytes:
    """Decode base64 text, with or without a ``data:`` URL prefix."""
    if isinstance(value, str):
        if value.startswith("data:"):
            value = value.partition(",")[2]
        value = value.encode("ascii", "ignore")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        # Tolerate line breaks (MIME style) but nothing else.
        try:
            return base64.b64decode(b"".join(value.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidImageError(f"image is not valid base64 text ({exc})") from exc


def _to_image_bytes(value: bytes | bytearray | memoryview | str | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _decode_base64(value)
    return bytes(value)


def _to_path(value: str | os.PathLike[str] | None) -> Path | None:
    return None if value is None else Path(value)


def _to_path_text(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


@final
@frozen
class TextBlock:
    """A piece of text in a message."""

    text: str = field(validator=_text)
    block_type: Literal["text"] = field(default="text", init=False, repr=False)


@final
@frozen
class EncodedImage:
    """An inline image as a request body carries it: base64 text and the real MIME type.

    Image preparation makes one for every inline image of a call (off the event
    loop when the image is large) and puts it on the prepared
    [`ImageBlock`][mmstream.content.ImageBlock], so a provider copies it into its
    wire format without encoding anything.
    """

    base64: str = field(repr=False)
    mimetype: str

    @property
    def data_url(self) -> str:
        """The image as a ``data:`` URL (what OpenAI and Azure take inline)."""
        return f"data:{self.mimetype};base64,{self.base64}"


_URL_PREFIXES = ("http://", "https://", "data:")
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"})


@final
@frozen(kw_only=True)
class ImageBlock:
    """An image in a message: raw bytes, a file path, or a URL (exactly one is needed).

    ``image`` holds the raw image bytes; base64 text (also as a ``data:`` URL)
    is decoded on construction. ``detail`` is OpenAI's tiling hint
    (``"low"``, ``"high"``, ``"auto"``); other providers ignore it.

    Example:
        ``ImageBlock(path="cat.jpg")``, ``ImageBlock(url="https://...")``,
        ``ImageBlock(image=png_bytes, image_mimetype="image/png")``.
    """

    image: bytes | None = field(default=None, converter=_checked_image_bytes, repr=False)
    path: Path | None = field(default=None, converter=_checked_path)
    url: str | None = field(default=None, validator=_optional_text)
    image_mimetype: str | None = field(default=None, validator=_optional_text)
    detail: str | None = field(default=None, validator=_optional_text)
    block_type: Literal["image"] = field(default="image", init=False, repr=False)
    #: the wire form, set on the blocks of a prepared request (see ``from_encoded``).
    encoded: EncodedImage | None = field(default=None, init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.image is None and self.path is None and self.url is None:
            raise InvalidImageError("an ImageBlock needs one of image, path or url")
        if self.url is not None and self.url.startswith("data:") and self.image is None:
            # A data: URL is inline bytes; keep it as bytes so every provider can use it.
            header = self.url[5:].partition(",")[0]
            mimetype = header.partition(";")[0] or None
            object.__setattr__(self, "image", _decode_base64(self.url))
            object.__setattr__(self, "url", None)
            if self.image_mimetype is None and mimetype:
                object.__setattr__(self, "image_mimetype", mimetype)

    @classmethod
    def from_encoded(
        cls, data: bytes, encoded: EncodedImage, *, detail: str | None = None
    ) -> ImageBlock:
        """A block of ``data`` that carries its wire form, ``encoded`` (its base64 and type).

        This is what image preparation hands the provider; ``encoded`` must be
        the base64 text of ``data`` (it is not checked, so that nothing is
        encoded twice). ``attrs.evolve`` of such a block drops the wire form.
        """
        block = cls(image=data, image_mimetype=encoded.mimetype, detail=detail)
        object.__setattr__(block, "encoded", encoded)
        return block

    @classmethod
    def from_pil(cls, image: PILImage, *, format: str = "PNG", **kwargs: Any) -> ImageBlock:
        """Encode a PIL image (PNG by default, lossless and keeping transparency) into a block.

        The encoding happens here, in the caller's thread; for large pictures in
        async code prefer saving them to bytes in a worker thread first.
        """
        if not isinstance(format, str):
            raise InvalidArgumentError(
                f"format must be a str such as 'PNG', not {_type_name(format)}", argument="format"
            )
        fmt = format.upper()
        if fmt == "JPG":
            fmt = "JPEG"
        buffer = io.BytesIO()
        try:
            if fmt == "PNG" and image.mode not in _PNG_MODES:
                image = image.convert("RGBA" if "A" in image.mode else "RGB")
            elif fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
                image = image.convert("RGB")
            image.save(buffer, format=fmt)
        except (ValueError, OSError, KeyError, AttributeError, TypeError) as exc:
            # A closed image ("Operation on closed image"), an unknown format, a mode
            # the format cannot store, or not a PIL image at all.
            raise InvalidImageError(f"cannot encode that image as {fmt}: {exc}") from exc
        return cls(image=buffer.getvalue(), image_mimetype=f"image/{fmt.lower()}", **kwargs)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, **kwargs: Any) -> ImageBlock:
        """Wrap raw image bytes (their real type is recognised when the call is prepared)."""
        return cls(image=bytes(_raw_bytes(data)), **kwargs)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], **kwargs: Any) -> ImageBlock:
        """Refer to an image file; it is read off the event loop when the call is prepared."""
        return cls(path=Path(path), **kwargs)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ImageBlock:
        """Refer to an image by ``http(s)://`` or ``data:`` URL."""
        return cls(url=url, **kwargs)

    @classmethod
    def from_image(cls, value: ImageInput, **kwargs: Any) -> ImageBlock:
        """Any image form: bytes, a path (``str`` or ``pathlib.Path``), a URL, a PIL image.

        A ``str`` starting with ``http://``, ``https://`` or ``data:`` is a URL;
        any other ``str`` is a file path.

        Raises:
            InvalidImageError: the value is none of these.
        """
        if isinstance(value, ImageBlock):
            return value
        if isinstance(value, ImageDocument):
            return value.to_block()
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls.from_bytes(value, **kwargs)
        if isinstance(value, str):
            if value.startswith(_URL_PREFIXES):
                return cls.from_url(value, **kwargs)
            return cls.from_path(value, **kwargs)
        if isinstance(value, os.PathLike):
            return cls.from_path(value, **kwargs)
        if hasattr(value, "save") and hasattr(value, "mode"):
            return cls.from_pil(value, **kwargs)
        raise InvalidImageError(
            f"cannot make an image of a {type(value).__name__}; pass bytes, a path, "
            "an http(s) or data: URL, or a PIL image"
        )


ImageInput = Union[
    bytes, bytearray, memoryview, str, "os.PathLike[str]", "PILImage", "ImageBlock", "ImageDocument"
]
"""What ``from_image`` takes: raw bytes, a path, a URL, a PIL image (or the block itself)."""

ContentBlock = Union[TextBlock, ImageBlock]  # noqa: UP007 - a runtime alias on 3.10


def _raw_bytes(data: object) -> bytes | bytearray | memoryview:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImageError(f"from_bytes() takes bytes, not {_type_name(data)}")
    return data


def _to_blocks(value: object) -> tuple[ContentBlock, ...]:
    if isinstance(value, (str, bytes, TextBlock, ImageBlock)) or not isinstance(value, Sequence):
        raise InvalidArgumentError(
            f"blocks must be a list of TextBlock and ImageBlock, not {_type_name(value)}",
            argument="blocks",
        )
    for index, block in enumerate(value):
        if not isinstance(block, (TextBlock, ImageBlock)):
            raise InvalidArgumentError(
                f"blocks[{index}] must be a TextBlock or an ImageBlock, not {_type_name(block)}",
                argument="blocks",
            )
    return tuple(value)


def _to_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(
            f"additional_kwargs must be a mapping (a dict), not {_type_name(value)}",
            argument="additional_kwargs",
        )
    return dict(value)


@final
@frozen(init=False)
class ChatMessage:
    """One message of a conversation: a role and typed content blocks.

    ``content`` is the plain-text shortcut, as in LlamaIndex:
    ``ChatMessage(role="user", content="hi")`` holds one [`TextBlock`][mmstream.TextBlock],
    and reading ``message.content`` joins the text blocks.

    Args:
        role: a [`MessageRole`][mmstream.MessageRole] or its value (``"user"``, ...).
        content: text for a single text block (use ``blocks`` for more).
        blocks: the content blocks, in order.
        additional_kwargs: provider-specific extras (tool call ids, names, ...).
    """

    role: MessageRole = field(converter=_to_role)
    blocks: tuple[ContentBlock, ...] = field(converter=_to_blocks)
    additional_kwargs: Mapping[str, Any] = field(converter=_to_mapping, eq=False)

    def __init__(
        self,
        role: MessageRole | str = MessageRole.USER,
        content: str | None = None,
        *,
        blocks: Sequence[ContentBlock] = (),
        additional_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if content is not None:
            if blocks:
                raise InvalidArgumentError(
                    "give either content or blocks, not both", argument="content"
                )
            if not isinstance(content, str):
                raise InvalidArgumentError(
                    f"content must be a str (use blocks= for images), not {_type_name(content)}",
                    argument="content",
                )
            blocks = (TextBlock(content),)
        self.__attrs_init__(role, blocks, additional_kwargs)

    @property
    def content(self) -> str | None:
        """The text of the message (its text blocks joined), or ``None`` without any."""
        texts = [block.text for block in self.blocks if isinstance(block, TextBlock)]
        return "".join(texts) if texts else None

    @property
    def images(self) -> tuple[ImageBlock, ...]:
        """The image blocks of the message, in order."""
        return tuple(block for block in self.blocks if isinstance(block, ImageBlock))


@final
@frozen(kw_only=True)
class ImageDocument:
    """An image passed to ``complete``, as LlamaIndex's ``ImageDocument`` has it.

    Give one of ``image`` (base64 text), ``image_path`` or ``image_url``; use
    [`from_bytes`][mmstream.ImageDocument.from_bytes] or
    [`from_pil`][mmstream.ImageDocument.from_pil] for raw bytes and PIL images.
    """

    image: str | None = field(default=None, repr=False, validator=_base64_text)
    image_path: str | None = field(default=None, converter=_checked_path_text)
    image_url: str | None = field(default=None, validator=_optional_text)
    image_mimetype: str | None = field(default=None, validator=_optional_text)
    text: str = field(default="", validator=_text)
    metadata: Mapping[str, Any] = field(factory=dict, eq=False, validator=_mapping)
    # The bytes ``image`` encodes, when ``from_bytes`` made it: not decoded again.
    _raw: bytes | None = field(default=None, init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.image is None and self.image_path is None and self.image_url is None:
            raise InvalidImageError(
                "an ImageDocument needs one of image (base64), image_path or image_url"
            )

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, **kwargs: Any) -> ImageDocument:
        """Wrap raw image bytes (kept as base64 text, as LlamaIndex has it).

        The document keeps the bytes too, so the call does not decode the text again.
        """
        raw = bytes(_raw_bytes(data))
        document = cls(image=base64.b64encode(raw).decode("ascii"), **kwargs)
        object.__setattr__(document, "_raw", raw)
        return document

    @classmethod
    def from_pil(cls, image: PILImage, *, format: str = "PNG", **kwargs: Any) -> ImageDocument:
        """Encode a PIL image (PNG by default)."""
        block = ImageBlock.from_pil(image, format=format)
        assert block.image is not None
        kwargs.setdefault("image_mimetype", block.image_mimetype)
        return cls.from_bytes(block.image, **kwargs)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], **kwargs: Any) -> ImageDocument:
        """Refer to an image file (``str`` or ``pathlib.Path``); it is read when the call runs."""
        return cls(image_path=os.fspath(path), **kwargs)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ImageDocument:
        """Refer to an image by ``http(s)://`` or ``data:`` URL."""
        return cls(image_url=url, **kwargs)

    @classmethod
    def from_image(cls, value: ImageInput, **kwargs: Any) -> ImageDocument:
        """Any image form: bytes, a path (``str`` or ``pathlib.Path``), a URL, a PIL image.

        A ``str`` starting with ``http://``, ``https://`` or ``data:`` is a URL;
        any other ``str`` is a file path.
        """
        if isinstance(value, ImageDocument):
            return value
        if isinstance(value, ImageBlock):
            if value.image is not None:
                kwargs.setdefault("image_mimetype", value.image_mimetype)
                return cls.from_bytes(value.image, **kwargs)
            if value.path is not None:
                return cls.from_path(value.path, **kwargs)
            return cls.from_url(value.url or "", **kwargs)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return cls.from_bytes(bytes(value), **kwargs)
        if isinstance(value, str):
            if value.startswith(_URL_PREFIXES):
                return cls.from_url(value, **kwargs)
            return cls.from_path(value, **kwargs)
        if isinstance(value, os.PathLike):
            return cls.from_path(value, **kwargs)
        if hasattr(value, "save") and hasattr(value, "mode"):
            return cls.from_pil(value, **kwargs)
        raise InvalidImageError(
            f"cannot make an image of a {type(value).__name__}; pass bytes, a path, "
            "an http(s) or data: URL, or a PIL image"
        )

    def to_block(self) -> ImageBlock:
        """The same image as a message [`ImageBlock`][mmstream.ImageBlock]."""
        return ImageBlock(
            image=self._raw if self._raw is not None else self.image,
            path=self.image_path,
            url=self.image_url,
            image_mimetype=self.image_mimetype,
        )

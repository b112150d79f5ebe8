"""Uploads: a multipart form read into memory, every limit enforced while reading.

[`read_form`][mmstream.web.read_form] parses the request body as it arrives
(python-multipart's streaming parser, fed from ``request.stream()``), keeps each
file in memory (never a temporary file), and stops reading the moment a limit
is passed: a declared ``Content-Length`` over the limit is refused before a
byte is read, a file is refused as soon as it grows past ``max_file_bytes``,
and a file whose first bytes are no accepted type is refused before the rest
is read. The type is sniffed from the bytes, never taken from the file name
or the browser's ``Content-Type``.

Every refusal is an [`UploadError`][mmstream.web.UploadError]: an
[`InvalidRequestError`][mmstream.errors.InvalidRequestError] that is also a
Starlette ``HTTPException``, so Starlette and FastAPI answer it with its 4xx
status and message without a handler of their own.
"""

from __future__ import annotations

import codecs
import contextlib
import io
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any, Final, final

import attrs
from attrs import frozen
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException
from starlette.requests import Request

from mmstream.content import ImageDocument
from mmstream.errors import InvalidRequestError, MMStreamError
from mmstream.images import sniff_mimetype

__all__ = ["IMAGE_TYPES", "Form", "UploadError", "UploadedFile", "read_form"]

KiB: Final = 1024
MiB: Final = 1024 * KiB

#: The default ``accept``: any image type mmstream can sniff (it converts those a
#: provider refuses).
IMAGE_TYPES: Final = ("image/*",)

#: Types Pillow opens without plugins; an upload of one of them is checked to open.
_VERIFIED = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff"}
)

#: Bytes of a file's start that are enough to sniff its type.
_SNIFF_BYTES = 32

#: What is read (and dropped) of a refused body at most, for the client to hear the answer.
_DRAIN_BYTES = 64 * KiB
_DRAIN_SECONDS = 1.0

#: Room for the multipart framing (boundaries, part headers) in the body limit.
_FRAMING_BYTES = 64 * KiB


class UploadError(InvalidRequestError, HTTPException):
    """An upload that is refused, with the HTTP status to answer it with.

    Statuses: 413 (too large: a file, a field or the whole body), 415 (not an
    accepted type, or not a multipart form), 422 (an empty file, an image that
    cannot be read, a required file missing), 400 (a malformed form, too many
    files or fields). Starlette and FastAPI answer it with ``status`` and the
    message; nothing else needs handling.

    Attributes:
        status: the HTTP status (also ``status_code``, as Starlette has it).
        field: the form field concerned, when one is.
        received: bytes of the body read when the upload was refused (``0`` for
            a refusal from the headers alone).
    """

    hint = "Fix the upload and send it again."

    def __init__(
        self,
        message: str,
        *,
        status: int,
        field: str | None = None,
        received: int | None = None,
    ) -> None:
        # MMStreamError's super().__init__(message) reaches HTTPException.__init__ (next in
        # the MRO), which takes the message for a status: HTTPException's attributes are
        # set right below.
        MMStreamError.__init__(self, message)
        self.status = status
        self.field = field
        self.received = received
        self.status_code = status
        self.detail = str(self)
        self.headers: Mapping[str, str] | None = {"Connection": "close"} if status == 413 else None

    def __repr__(self) -> str:
        return f"UploadError(status={self.status!r}, message={self.message!r})"


@final
@frozen(kw_only=True)
class UploadedFile:
    """A file from a multipart form, in memory, with its type sniffed from its bytes.

    Attributes:
        field: the form field it came in.
        filename: the name the browser gave, if any (never trusted for the type).
        content_type: the type the browser declared, if any (never trusted).
        mimetype: the type sniffed from the bytes (``"image/png"``, ...), or ``None``.
        data: the bytes.
    """

    field: str
    filename: str | None
    content_type: str | None
    mimetype: str | None
    data: bytes = attrs.field(repr=False)

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return len(self.data)

    def to_image_document(self) -> ImageDocument:
        """The file as an [`ImageDocument`][mmstream.ImageDocument] (the bytes are not copied).

        Raises:
            UploadError: 415 when the bytes are no image.
        """
        if self.mimetype is None or not self.mimetype.startswith("image/"):
            raise UploadError(
                f"the file in {self.field!r} is not an image"
                f"{'' if self.mimetype is None else f' ({self.mimetype})'}; "
                "send a PNG, JPEG, GIF or WebP image",
                status=415,
                field=self.field,
            )
        metadata = {"filename": self.filename} if self.filename else {}
        return ImageDocument.from_bytes(self.data, image_mimetype=self.mimetype, metadata=metadata)


@final
@frozen(kw_only=True)
class Form:
    """A multipart form read by [`read_form`][mmstream.web.read_form].

    Attributes:
        fields: the text fields (the last value of a repeated name wins).
        files: the files, in the order they came.
    """

    fields: Mapping[str, str]
    files: tuple[UploadedFile, ...]

    def file(self, name: str) -> UploadedFile | None:
        """The first file sent in field ``name``, or ``None``."""
        return next((f for f in self.files if f.field == name), None)

    def image(self, name: str = "image") -> ImageDocument:
        """The image sent in field ``name``.

        Raises:
            UploadError: 422 when the form has no file there, 415 when it is no image.
        """
        found = self.file(name)
        if found is None:
            raise UploadError(
                f"the form has no file in {name!r}; attach an image", status=422, field=name
            )
        return found.to_image_document()

    def images(self, name: str = "image") -> list[ImageDocument]:
        """Every image sent in field ``name`` (none is fine).

        Raises:
            UploadError: 415 when one of the files is no image.
        """
        return [f.to_image_document() for f in self.files if f.field == name]


def _sniff(data: bytes) -> str | None:
    kind = sniff_mimetype(data)
    if kind is None and data.startswith(b"%PDF-"):
        return "application/pdf"
    return kind


def _accepted(mimetype: str | None, accept: Collection[str]) -> bool:
    if mimetype is None:
        return False
    major = mimetype.split("/", 1)[0]
    return any(a == mimetype or a == f"{major}/*" or a == "*/*" for a in accept)


def _size(n: int) -> str:
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= KiB and n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n} bytes"


class _Part:
    __slots__ = ("content_type", "data", "field", "filename", "headers", "mimetype")

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.field = ""
        self.filename: str | None = None
        self.content_type: str | None = None
        self.mimetype: str | None = None
        self.data = bytearray()


class _Reader:
    """python-multipart callbacks that build the form and enforce the limits as bytes come."""

    def __init__(
        self,
        *,
        charset: str,
        accept: Collection[str],
        max_file_bytes: int,
        max_files: int,
        max_fields: int,
        max_field_bytes: int,
    ) -> None:
        self.charset = charset
        self.accept = accept
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.max_fields = max_fields
        self.max_field_bytes = max_field_bytes
        self.received = 0
        self.fields: dict[str, str] = {}
        self.files: list[_Part] = []
        self.field_count = 0
        self.ended = False
        self.part = _Part()
        self._name = b""
        self._value = b""

    def fail(self, message: str, status: int, field: str | None = None) -> UploadError:
        return UploadError(message, status=status, field=field, received=self.received)

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def _decode(self, value: bytes) -> str:
        return value.decode(self.charset, errors="replace")

    def on_headers_finished(self) -> None:
        part = self.part
        _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise self.fail("a form part has no name (in its Content-Disposition header)", 400)
        part.field = self._decode(options[b"name"])
        if b"filename" in options:
            part.filename = self._decode(options[b"filename"]) or None
            declared = self._decode(part.headers.get(b"content-type", b"")).strip()
            part.content_type = declared or None
            if len(self.files) >= self.max_files:
                raise self.fail(f"the form has more than {self.max_files} files", 400, part.field)
            self.files.append(part)
        else:
            self.field_count += 1
            if self.field_count > self.max_fields:
                raise self.fail(f"the form has more than {self.max_fields} fields", 400, part.field)

    def _is_file(self) -> bool:
        return bool(self.files) and self.files[-1] is self.part

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.part
        part.data += data[start:end]
        if self._is_file():
            if len(part.data) > self.max_file_bytes:
                raise self.fail(
                    f"the file in {part.field!r} is larger than {_size(self.max_file_bytes)}",
                    413,
                    part.field,
                )
            if part.mimetype is None and len(part.data) >= _SNIFF_BYTES:
                self._check_type(part)
        elif len(part.data) > self.max_field_bytes:
            raise self.fail(
                f"the field {part.field!r} is longer than {_size(self.max_field_bytes)}",
                413,
                part.field,
            )

    def _check_type(self, part: _Part) -> None:
        part.mimetype = _sniff(bytes(part.data[:_SNIFF_BYTES]))
        if not _accepted(part.mimetype, self.accept):
            kind = "of no known type" if part.mimetype is None else f"a {part.mimetype} file"
            raise self.fail(
                f"the file in {part.field!r} is {kind}; accepted: {', '.join(self.accept)}",
                415,
                part.field,
            )

    def on_part_end(self) -> None:
        part = self.part
        if not self._is_file():
            self.fields[part.field] = self._decode(bytes(part.data))
            return
        if not part.data:
            if part.filename is None:  # a file input left empty: the browser sends no file
                self.files.pop()
                return
            raise self.fail(f"the file in {part.field!r} is empty", 422, part.field)
        if part.mimetype is None:
            self._check_type(part)

    def on_end(self) -> None:
        self.ended = True


async def _drain(body: AsyncIterator[bytes]) -> None:
    """Read and drop what is left of a refused body, up to a little, so the client hears why.

    A server that closes a connection with unread bytes makes the client's system
    reset it, and the client may lose the answer; a small form is read to its end
    (at most ``_DRAIN_BYTES`` and ``_DRAIN_SECONDS``), a big one is cut.
    """
    import anyio

    dropped = 0
    with anyio.move_on_after(_DRAIN_SECONDS):
        async for chunk in body:
            dropped += len(chunk)
            if dropped > _DRAIN_BYTES:
                return


def _verify_image(data: bytes) -> str | None:
    """Open the image's header with Pillow; the reason it cannot be read, or ``None``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.size  # noqa: B018 - parsed from the header
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return "it cannot be read as an image (damaged or truncated)"
    return None


async def read_form(
    request: Request,
    *,
    max_file_bytes: int = 20 * MiB,
    max_files: int = 4,
    max_fields: int = 32,
    max_field_bytes: int = 64 * KiB,
    accept: Collection[str] = IMAGE_TYPES,
    verify_images: bool = True,
) -> Form:
    """Read a ``multipart/form-data`` request into memory, refusing a bad upload early.

    Nothing is written to disk. The limits hold while the body is read: a
    ``Content-Length`` over the total is refused before reading, a file the
    moment it passes ``max_file_bytes``, a file of a type not in ``accept`` as
    soon as its first bytes show it. An empty file input (no file chosen) is
    left out rather than refused.

    Args:
        request: the Starlette (or FastAPI) request; its body must not have been read.
        max_file_bytes: the largest file accepted.
        max_files: the most files in one form.
        max_fields: the most text fields in one form.
        max_field_bytes: the longest text field.
        accept: the file types accepted, by sniffed type: ``"image/png"``,
            ``"image/*"``, ``"application/pdf"``, ``"*/*"``.
        verify_images: open each PNG, JPEG, GIF, WebP, BMP and TIFF image's header
            (in a worker thread) and refuse one that cannot be read.

    Returns:
        The form's fields and files.

    Raises:
        UploadError: 413, 415, 422 or 400 (see [`UploadError`][mmstream.web.UploadError]).
    """
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise UploadError(
            "the request is not a multipart/form-data form; send the file with FormData",
            status=415,
            received=0,
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError("the form's Content-Type has no boundary", status=400, received=0)
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "utf-8"
    max_body = max_files * max_file_bytes + max_fields * max_field_bytes + _FRAMING_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise UploadError(
            f"the form is {_size(int(declared))}, more than the {_size(max_body)} accepted",
            status=413,
            received=0,
        )
    reader = _Reader(
        charset=charset,
        accept=tuple(accept),
        max_file_bytes=max_file_bytes,
        max_files=max_files,
        max_fields=max_fields,
        max_field_bytes=max_field_bytes,
    )
    parser = MultipartParser(boundary, reader.callbacks())  # type: ignore[arg-type]
    async with contextlib.aclosing(request.stream()) as body:
        try:
            async for chunk in body:
                reader.received += len(chunk)
                if reader.received > max_body:
                    raise reader.fail(
                        f"the form is larger than the {_size(max_body)} accepted", 413
                    )
                try:
                    parser.write(chunk)
                except FormParserError as exc:
                    raise reader.fail(f"the form is malformed ({exc})", 400) from exc
        except UploadError:
            await _drain(body)
            raise
    parser.finalize()
    if not reader.ended:
        raise reader.fail("the form ended before its closing boundary", 400)
    files = []
    for part in reader.files:
        data = bytes(part.data)
        part.data = bytearray()
        if verify_images and part.mimetype in _VERIFIED:
            import anyio.to_thread

            problem = await anyio.to_thread.run_sync(_verify_image, data)
            if problem is not None:
                message = f"the file in {part.field!r} is no image: {problem}"
                raise reader.fail(message, 422, part.field)
        files.append(
            UploadedFile(
                field=part.field,
                filename=part.filename,
                content_type=part.content_type,
                mimetype=part.mimetype,
                data=data,
            )
        )
    return Form(fields=dict(reader.fields), files=tuple(files))

"""The upload helper over a real ASGI server: limits hold while the body is read.

Uvicorn serves on asyncio, hypercorn on trio; the client is httpx, sending
multipart bodies it builds itself (so a body can be huge, chunked, or broken).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import pickle
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import mmstream as mm
from mmstream.web import UploadError, read_form
from tests._web import png_bytes, serving

LIMIT = 1024 * 1024  # 1 MiB per file
BOUNDARY = "mmstream-test-boundary-0123456789"


class Recorder:
    """What the endpoint saw: the form, or the refusal."""

    def __init__(self) -> None:
        self.form: mm.web.Form | None = None
        self.error: UploadError | None = None


def upload_app(recorder: Recorder, **limits: Any) -> Starlette:
    """``POST /upload`` reads the form; it answers with what it read."""

    async def upload(request: StarletteRequest) -> Response:
        try:
            form = await read_form(request, **{"max_file_bytes": LIMIT, **limits})
        except UploadError as exc:
            recorder.error = exc
            raise  # Starlette answers it with its status
        recorder.form = form
        images = [
            {"mimetype": doc.image_mimetype, "metadata": dict(doc.metadata)}
            for doc in form.images("image")
        ]
        files = [{"field": f.field, "mimetype": f.mimetype, "size": f.size} for f in form.files]
        return JSONResponse({"fields": dict(form.fields), "files": files, "images": images})

    return Starlette(routes=[Route("/upload", upload, methods=["POST"])])


def noisy_png() -> bytes:
    """A PNG that does not compress: about 30 KB."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (100, 100), os.urandom(30_000)).save(buffer, "PNG")
    return buffer.getvalue()


def part(name: str, data: bytes, filename: str | None = None, content_type: str = "") -> bytes:
    """One multipart part, framed."""
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + data + b"\r\n"


def form_body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


HEADERS = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


class Counted:
    """A huge chunked upload over a raw socket, counting what the client got to send.

    The body is written while the response is read, as a browser does; once the
    server has answered, the client stops sending.
    """

    def __init__(self, head: bytes, fill: bytes, total: int, tail: bytes) -> None:
        self.head, self.fill, self.total, self.tail = head, fill, total, tail
        self.produced = 0

    async def post(self, url: str, *, content_length: int | None = None) -> tuple[int, str]:
        """Send the upload chunked (or announce ``content_length`` and send no body)."""
        host, port = url.removeprefix("http://").split(":")
        framing = (
            "Transfer-Encoding: chunked"
            if content_length is None
            else f"Content-Length: {content_length}"
        )
        request = (
            f"POST /upload HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n{framing}\r\n\r\n"
        ).encode()
        block = self.fill * (65536 // len(self.fill))
        response = b""
        async with await anyio.connect_tcp(host, int(port)) as sock:

            async def send() -> None:
                with contextlib.suppress(OSError, anyio.BrokenResourceError):
                    if content_length is not None:
                        await sock.send(request)
                        return
                    await sock.send(request + _chunk(self.head))
                    while self.produced < self.total:
                        await sock.send(_chunk(block))
                        self.produced += len(block)
                    await sock.send(_chunk(self.tail) + b"0\r\n\r\n")

            async with anyio.create_task_group() as group:
                group.start_soon(send)
                with contextlib.suppress(OSError, anyio.BrokenResourceError):
                    while not _complete(response):
                        response += await sock.receive()
                group.cancel_scope.cancel()
        head, _, body = response.partition(b"\r\n\r\n")
        return int(head.split()[1]), body.decode()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _complete(response: bytes) -> bool:
    head, found, body = response.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


async def post(url: str, content: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await client.post("/upload", content=content, headers=headers or HEADERS)


async def test_an_image_becomes_an_image_document_without_a_file() -> None:
    recorder = Recorder()
    png = png_bytes((64, 48))
    jpeg = io.BytesIO()
    Image.new("RGB", (20, 10), (10, 200, 10)).save(jpeg, "JPEG")
    body = form_body(
        part("question", "Qu’est-ce que c’est ?".encode()),
        part("image", png, "cat.png", "image/png"),
        # The browser's type and the name are not trusted: the bytes say JPEG.
        part("image", jpeg.getvalue(), "dog.png", "image/png"),
    )
    async with serving(upload_app(recorder)) as url:
        response = await post(url, body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "fields": {"question": "Qu’est-ce que c’est ?"},
        "files": [
            {"field": "image", "mimetype": "image/png", "size": len(png)},
            {"field": "image", "mimetype": "image/jpeg", "size": len(jpeg.getvalue())},
        ],
        "images": [
            {"mimetype": "image/png", "metadata": {"filename": "cat.png"}},
            {"mimetype": "image/jpeg", "metadata": {"filename": "dog.png"}},
        ],
    }
    assert recorder.form is not None
    document = recorder.form.image("image")
    assert document.image is not None and base64.b64decode(document.image) == png
    upload = recorder.form.file("image")
    assert upload is not None and upload.content_type == "image/png" and upload.data == png


async def test_a_file_too_big_is_refused_while_it_is_read() -> None:
    recorder = Recorder()
    total = 64 * 1024 * 1024
    body = Counted(
        part("image", b"", "big.png", "image/png")[:-2],  # the part's head; data follows
        png_bytes(),  # a real PNG's bytes, repeated: the type is fine, the size is not
        total,
        f"\r\n--{BOUNDARY}--\r\n".encode(),
    )
    async with serving(upload_app(recorder)) as url:
        status, text = await body.post(url)
    assert status == 413
    assert "larger than 1 MiB" in text
    assert recorder.error is not None and recorder.error.status == 413
    assert recorder.error.field == "image"
    # Refused just past the limit: one network read more at most, never the 64 MiB.
    assert recorder.error.received is not None
    assert LIMIT < recorder.error.received < LIMIT + 512 * 1024
    assert body.produced < total // 2


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    recorder = Recorder()
    # The headers announce 2 MiB; not a byte of the body is sent, nor needed.
    body = Counted(b"", b"-", 0, b"")
    async with serving(upload_app(recorder, max_files=1, max_fields=0)) as url:
        status, text = await body.post(url, content_length=2 * LIMIT)
    assert status == 413
    assert "more than the" in text
    assert recorder.error is not None and recorder.error.received == 0


async def test_a_file_that_is_no_image_is_refused_at_its_first_bytes() -> None:
    recorder = Recorder()
    total = 32 * 1024 * 1024
    body = Counted(
        part("image", b"", "cat.png", "image/png")[:-2],
        b"just some text, not a picture. ",
        total,
        f"\r\n--{BOUNDARY}--\r\n".encode(),
    )
    async with serving(upload_app(recorder, max_file_bytes=total * 2)) as url:
        status, text = await body.post(url)
    assert status == 415
    assert "accepted: image/*" in text
    assert recorder.error is not None and recorder.error.received is not None
    assert recorder.error.received < 512 * 1024  # decided on the first bytes


async def test_a_damaged_image_is_unprocessable() -> None:
    recorder = Recorder()
    damaged = png_bytes()[:40] + b"\x00" * 200  # a PNG signature, then nonsense
    async with serving(upload_app(recorder)) as url:
        response = await post(url, form_body(part("image", damaged, "cat.png")))
    assert response.status_code == 422
    assert "cannot be read as an image" in response.text


async def test_an_empty_file_is_unprocessable_and_no_file_is_no_file() -> None:
    recorder = Recorder()
    async with serving(upload_app(recorder)) as url:
        empty = await post(url, form_body(part("image", b"", "cat.png", "image/png")))
        # A file input left empty: browsers send a part with an empty name and no bytes.
        nothing = form_body(
            part("question", b"hi"), part("image", b"", "", "application/octet-stream")
        )
        none_chosen = await post(url, nothing)
    assert empty.status_code == 422
    assert "is empty" in empty.text
    assert none_chosen.status_code == 200
    assert none_chosen.json() == {"fields": {"question": "hi"}, "files": [], "images": []}
    assert recorder.form is not None
    with pytest.raises(UploadError) as missing:
        recorder.form.image("image")
    assert missing.value.status == 422


@pytest.mark.parametrize(
    ("headers", "body", "status", "words"),
    [
        ({"content-type": "application/json"}, b"{}", 415, "not a multipart/form-data"),
        ({"content-type": "multipart/form-data"}, b"", 400, "no boundary"),
        (
            HEADERS,
            f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n".encode()
            + f"--{BOUNDARY}--\r\n".encode(),
            400,
            "has no name",
        ),
        (HEADERS, form_body(part("image", png_bytes(), "a.png"))[:-10], 400, "ended before"),
        (HEADERS, b"garbage that is no form at all", 400, "malformed"),
    ],
    ids=["json", "no-boundary", "no-name", "cut-short", "garbage"],
)
async def test_a_request_that_is_no_good_form_is_a_client_error(
    headers: dict[str, str], body: bytes, status: int, words: str
) -> None:
    recorder = Recorder()
    async with serving(upload_app(recorder)) as url:
        response = await post(url, body, headers)
    assert response.status_code == status, response.text
    assert words in response.text


async def test_too_many_files_or_too_long_a_field_is_refused() -> None:
    recorder = Recorder()
    png = png_bytes()
    async with serving(upload_app(recorder, max_files=2, max_field_bytes=16)) as url:
        files = await post(url, form_body(*(part("image", png, f"{i}.png") for i in range(3))))
        field = await post(url, form_body(part("question", b"x" * 17)))
    assert (files.status_code, field.status_code) == (400, 413)
    assert "more than 2 files" in files.text
    assert "longer than 16 bytes" in field.text


async def test_fastapi_answers_an_upload_error_with_its_status() -> None:
    app = FastAPI()

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        form = await read_form(request, max_file_bytes=1000)
        return {"files": len(form.files)}

    async with serving(app) as url:
        response = await post(url, form_body(part("image", noisy_png(), "a.png")))
    assert response.status_code == 413
    assert "larger than 1000 bytes" in response.json()["detail"]


def test_an_upload_error_is_a_typed_request_error_that_pickles() -> None:
    error = UploadError("the file in 'image' is empty", status=422, field="image", received=10)
    assert isinstance(error, mm.InvalidRequestError)
    assert error.status_code == 422 and error.detail == str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.status, copy.field, copy.received) == (UploadError, 422, "image", 10)
    assert str(copy) == str(error)

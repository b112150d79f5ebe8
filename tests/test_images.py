"""Images just work: every input form, each provider's limits, clear errors before sending.

The provider here is a small recording one (injected, as the style asks), with
a chosen :class:`~mmstream.images.ImagePolicy`; its HTTP goes to an
``httpx.MockTransport`` that records every request, serves images at
``http://images.test/...`` and answers the provider's endpoint with NDJSON.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import io
import json
import random
import struct
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, cast

import anyio
import attrs
import httpx
import pytest
from attrs import field, frozen
from PIL import Image, ImageStat

import mmstream
from mmstream import (
    ChatMessage,
    ImageBlock,
    ImageDocument,
    InvalidImageError,
    MultiModalLLM,
    TextBlock,
    Transport,
)
from mmstream.errors import APIError
from mmstream.images import (
    ANTHROPIC_POLICY,
    AZURE_POLICY,
    COMPATIBLE_POLICY,
    DEFAULT_POLICY,
    GEMINI_POLICY,
    OLLAMA_POLICY,
    OPENAI_POLICY,
    ImagePolicy,
    base64_length,
    data_url,
    encode_base64,
    fit_image,
    sniff_mimetype,
)
from mmstream.metadata import MultiModalLLMMetadata
from mmstream.providers.base import OptionFields, default_parse_error
from mmstream.providers.offline import OfflineDecoder
from mmstream.request import ChatRequest, HTTPRequest

POLICIES = {
    "openai": OPENAI_POLICY,
    "azure": AZURE_POLICY,
    "anthropic": ANTHROPIC_POLICY,
    "gemini": GEMINI_POLICY,
    "ollama": OLLAMA_POLICY,
    "compatible": COMPATIBLE_POLICY,
}

MARKER = (255, 0, 0)


# --- images made here -------------------------------------------------------------------


_RANDOM = random.Random(20240501)  # the same noise on every run, so failures reproduce


def noise_bytes(size: int) -> bytes:
    return _RANDOM.randbytes(size)


@cache
def photo() -> bytes:
    """A 4000×3000 noise JPEG (about 6 MB) with EXIF orientation 6 and a red marker.

    The marker sits in the stored top-left corner; orientation 6 means "rotate 90°
    clockwise to view", so an upright result has it in the top-right corner.
    """
    noise = Image.frombytes("RGB", (4000, 3000), noise_bytes(4000 * 3000 * 3))
    noise.paste(MARKER, (0, 0, 500, 500))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    noise.save(buffer, "JPEG", quality=70, exif=exif)
    return buffer.getvalue()


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


@cache
def small_png() -> bytes:
    picture = Image.new("RGB", (64, 48), (30, 120, 200))
    picture.paste((250, 250, 0), (0, 0, 8, 8))
    return encode(picture, "PNG")


def noise_jpeg(width: int, height: int, quality: int = 90) -> bytes:
    picture = Image.frombytes("RGB", (width, height), noise_bytes(width * height * 3))
    return encode(picture, "JPEG", quality=quality)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width``×``height`` pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def mean(image: Image.Image, box: tuple[int, int, int, int]) -> list[float]:
    return list(ImageStat.Stat(image.convert("RGB").crop(box)).mean)


def pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def is_marker(rgb: list[float]) -> bool:
    return rgb[0] > 200 and rgb[1] < 60 and rgb[2] < 60


def assert_within(policy: ImagePolicy, mimetype: str, data: bytes, count: int = 1) -> None:
    """The image meets every limit of the policy, measured on the bytes."""
    assert sniff_mimetype(data) == mimetype
    assert mimetype in policy.accepted_types
    if policy.max_bytes is not None:
        assert len(data) <= policy.max_bytes
    if policy.max_base64_bytes is not None:
        assert base64_length(len(data)) <= policy.max_base64_bytes
    image = opened(data)
    edges = [policy.max_edge, policy.recommended_edge]
    if policy.many_images is not None and count > policy.many_images:
        edges.append(policy.many_images_max_edge)
    for edge in edges:
        if edge is not None:
            assert max(image.size) <= edge
    for pixels in (policy.max_pixels, policy.recommended_pixels):
        if pixels is not None:
            assert image.width * image.height <= pixels
    assert image.getexif().get(0x0112, 1) == 1


# --- a recording provider and network -----------------------------------------------------


#: the mock network serves images at a made-up host: allowed explicitly (downloads are
#: refused by default unless the host's addresses are public; see test_downloads.py).
IMAGES_TEST = mmstream.URLAccess(allow=["images.test"])


@frozen(kw_only=True)
class Recorder(OptionFields):
    """A provider that sends its images as JSON and remembers the requests it built."""

    name: ClassVar[str] = "recorder"

    extra: Mapping[str, Any] = field(factory=lambda: {"url_access": IMAGES_TEST})
    model: str = "recorder-1"
    policy: ImagePolicy = DEFAULT_POLICY
    built: list[ChatRequest] = field(factory=list, eq=False, repr=False)

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        return MultiModalLLMMetadata(model_name=self.model, is_chat_model=True)

    @property
    def image_policy(self) -> ImagePolicy:
        return self.policy

    def build_request(self, request: ChatRequest) -> HTTPRequest:
        self.built.append(request)
        parts: list[dict[str, Any]] = []
        for message in request.messages:
            for block in message.blocks:
                if isinstance(block, ImageBlock) and block.image is not None:
                    parts.append({"mime": block.image_mimetype, "data": encode_base64(block.image)})
                elif isinstance(block, ImageBlock):
                    parts.append({"url": block.url})
        return HTTPRequest(
            url="http://provider.test/v1/chat", json={"images": parts}, stream_format="ndjson"
        )

    def new_decoder(self, request: ChatRequest) -> OfflineDecoder:
        return OfflineDecoder(self.model)

    def parse_error(self, status: int, headers: Mapping[str, str], body: bytes) -> APIError:
        return default_parse_error(self.name, status, headers, body)


Route = tuple[int, dict[str, str], bytes]


class Net:
    """A MockTransport handler: records provider requests and serves images."""

    def __init__(self, routes: Mapping[str, Route] | None = None) -> None:
        self.routes = dict(routes or {})
        self.sent: list[dict[str, Any]] = []
        self.fetched: list[str] = []
        self.fetch_headers: list[dict[str, str]] = []
        self.sent_headers: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "provider.test":
            self.sent.append(json.loads(request.content))
            self.sent_headers.append(dict(request.headers))
            body = b'{"delta": "ok"}\n{"done": true, "finish_reason": "stop"}\n'
            return httpx.Response(
                200, headers={"content-type": "application/x-ndjson"}, content=body
            )
        self.fetched.append(str(request.url))
        self.fetch_headers.append(dict(request.headers))
        status, headers, content = self.routes.get(
            request.url.path, (404, {"content-type": "text/plain"}, b"not found")
        )
        return httpx.Response(status, headers=headers, content=content)

    def images(self) -> list[dict[str, Any]]:
        assert len(self.sent) == 1, f"expected one provider request, got {len(self.sent)}"
        return list(self.sent[0]["images"])


def make_llm(policy: ImagePolicy, net: Net) -> tuple[MultiModalLLM, Recorder]:
    provider = Recorder(policy=policy)
    transport = Transport(http_transport=httpx.MockTransport(net))
    return MultiModalLLM(provider, transport=transport), provider


async def send(
    policy: ImagePolicy, docs: list[ImageDocument], net: Net | None = None, **options: Any
) -> list[dict[str, Any]]:
    net = net or Net()
    llm, _ = make_llm(policy, net)
    async with llm:
        response = await llm.acomplete("What is this?", docs, **options)
    assert response.text == "ok"
    return net.images()


def received(part: dict[str, Any]) -> bytes:
    return base64.b64decode(part["data"])


# --- import hygiene -----------------------------------------------------------------------


def test_importing_mmstream_does_not_import_pillow() -> None:
    code = "import sys, mmstream, mmstream.images; print('PIL' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_images_module_imports_no_io_library_at_module_level() -> None:
    tree = ast.parse(Path(mmstream.images.__file__).read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert not names & {"anyio", "httpx", "PIL", "trio"}


# --- sniffing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mimetype"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
    ],
)
def test_sniff_reads_the_type_from_the_bytes(fmt: str, mimetype: str) -> None:
    assert sniff_mimetype(encode(Image.new("RGB", (4, 4)), fmt)) == mimetype


def test_sniff_knows_heic_and_avif_and_refuses_the_rest() -> None:
    assert sniff_mimetype(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") == "image/heic"
    assert sniff_mimetype(b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00") == "image/avif"
    assert sniff_mimetype(b"%PDF-1.7\n") is None
    assert sniff_mimetype(b"") is None


def test_base64_helpers_match_the_standard_library() -> None:
    big = noise_bytes(1_000_003)
    assert encode_base64(big) == base64.b64encode(big).decode()
    assert encode_base64(b"abc") == "YWJj"
    assert base64_length(len(big)) == len(base64.b64encode(big))
    assert data_url(b"abc", "image/png") == "data:image/png;base64,YWJj"


# --- the 6 MB photo through every provider policy -----------------------------------------


def test_the_photo_is_a_large_rotated_jpeg() -> None:
    data = photo()
    assert len(data) > 5_000_000
    image = opened(data)
    assert image.size == (4000, 3000)
    assert image.getexif()[0x0112] == 6


@pytest.mark.parametrize("name", list(POLICIES))
async def test_photo_comes_out_within_limits_upright_and_in_proportion(name: str) -> None:
    policy = POLICIES[name]
    [part] = await send(policy, [ImageDocument.from_bytes(photo())])
    data = received(part)
    assert len(data) < len(photo())
    assert_within(policy, part["mime"], data)
    image = opened(data).convert("RGB")
    width, height = image.size
    assert abs(width / height - 3000 / 4000) < 0.01  # portrait now, aspect kept
    corner = max(8, width // 40)
    assert is_marker(mean(image, (width - corner, 0, width, corner)))  # top-right
    assert not is_marker(mean(image, (0, 0, corner, corner)))
    assert not is_marker(mean(image, (width - corner, height - corner, width, height)))


@pytest.mark.parametrize("name", [*POLICIES, "offline-like"])
async def test_small_png_passes_byte_for_byte(name: str) -> None:
    policy = POLICIES.get(name, ImagePolicy(fit=False))
    [part] = await send(policy, [ImageDocument.from_bytes(small_png())])
    assert part["mime"] == "image/png"
    assert received(part) == small_png()


def test_an_unchanged_image_is_the_same_bytes_object() -> None:
    data = small_png()
    fitted = fit_image(data, OPENAI_POLICY)
    assert fitted.data is data
    assert not fitted.changed
    assert (fitted.width, fitted.height) == (64, 48)


def test_a_prepared_image_is_cached_not_encoded_again() -> None:
    data = noise_jpeg(1200, 900)
    policy = ImagePolicy(recommended_edge=600)
    first = fit_image(data, policy)
    again = fit_image(data, policy)
    assert first.changed
    assert again.data is first.data  # the cache's bytes: no second encoding
    other = fit_image(data, ImagePolicy(recommended_edge=300))
    assert max(opened(other.data).size) == 300  # another policy is another entry


# --- every input form ---------------------------------------------------------------------


def png_routes() -> dict[str, Route]:
    return {
        "/pic.png": (200, {"content-type": "image/png"}, small_png()),
        "/pic.bin": (200, {"content-type": "application/octet-stream"}, small_png()),
        "/moved": (302, {"location": "/pic.png"}, b""),
    }


def image_forms(tmp_path: Path) -> Iterator[tuple[str, ImageDocument]]:
    file = tmp_path / "pic.jpg"  # a PNG under a misleading name
    file.write_bytes(small_png())
    b64 = base64.b64encode(small_png()).decode()
    yield "base64", ImageDocument(image=b64)
    yield "base64 with a wrong declared type", ImageDocument(image=b64, image_mimetype="image/jpeg")
    yield "image_path str", ImageDocument(image_path=str(file))
    yield "image_path Path", ImageDocument(image_path=file)
    yield "from_path", ImageDocument.from_path(file)
    yield "from_image Path", ImageDocument.from_image(file)
    yield "raw bytes", ImageDocument.from_bytes(small_png())
    yield "from_image bytes", ImageDocument.from_image(small_png())
    yield "data: URL", ImageDocument(image_url=f"data:image/png;base64,{b64}")
    yield "http URL", ImageDocument(image_url="http://images.test/pic.png")
    yield "octet-stream URL", ImageDocument.from_url("http://images.test/pic.bin")
    yield "redirected URL", ImageDocument.from_image("http://images.test/moved")


async def test_every_input_form_arrives_as_the_same_png(tmp_path: Path) -> None:
    forms = list(image_forms(tmp_path))
    net = Net(png_routes())
    parts = await send(OLLAMA_POLICY, [doc for _, doc in forms], net)
    assert len(parts) == len(forms)
    for (label, _), part in zip(forms, parts, strict=True):
        assert part["mime"] == "image/png", label
        assert received(part) == small_png(), label
    assert net.fetched == [
        "http://images.test/pic.png",
        "http://images.test/pic.bin",
        "http://images.test/moved",
        "http://images.test/pic.png",
    ]


def test_from_bytes_does_not_decode_its_own_base64_again() -> None:
    data = noise_jpeg(200, 100)
    document = ImageDocument.from_bytes(data)
    assert document.image == base64.b64encode(data).decode()  # LlamaIndex's field
    assert document.to_block().image is data  # the bytes themselves: no decoding
    copy = ImageDocument(image="".join(document.image or ""))  # a text of its own
    assert copy.to_block().image == data


async def test_pil_images_and_blocks_arrive() -> None:
    picture = Image.new("RGBA", (40, 30), (10, 200, 30, 128))
    net = Net()
    llm, _ = make_llm(OPENAI_POLICY, net)
    message = ChatMessage(
        "user",
        blocks=[
            TextBlock("compare"),
            ImageBlock.from_image(picture),
            ImageBlock.from_bytes(small_png()),
        ],
    )
    async with llm:
        await llm.achat([message])
    first, second = net.images()
    assert first["mime"] == "image/png"
    assert pixel(opened(received(first)), (5, 5)) == (10, 200, 30, 128)  # alpha kept
    assert received(second) == small_png()
    doc = ImageDocument.from_image(picture)
    assert opened(base64.b64decode(doc.image or "")).size == (40, 30)


async def test_image_downloads_carry_none_of_the_transports_headers() -> None:
    net = Net(png_routes())
    transport = Transport(
        http_transport=httpx.MockTransport(net), headers={"x-gateway-key": "secret-123"}
    )
    llm = MultiModalLLM(Recorder(policy=OLLAMA_POLICY), transport=transport)
    async with llm:
        await llm.acomplete("x", [ImageDocument(image_url="http://images.test/pic.png")])
    assert net.sent_headers[0]["x-gateway-key"] == "secret-123"  # the provider gets it
    [headers] = net.fetch_headers
    assert "x-gateway-key" not in headers
    assert headers["accept"] == "image/*"


async def test_urls_pass_through_to_providers_that_fetch_them() -> None:
    net = Net(png_routes())
    url = "https://images.test/pic.png?size=large"
    for name in ("openai", "anthropic", "azure"):
        net.sent.clear()
        [part] = await send(POLICIES[name], [ImageDocument(image_url=url)], net)
        assert part == {"url": url}
    assert net.fetched == []


async def test_the_offline_provider_sees_the_real_image(tmp_path: Path) -> None:
    file = tmp_path / "photo.jpeg"
    file.write_bytes(small_png())
    async with MultiModalLLM("offline:default") as llm:
        response = await llm.acomplete("Describe", [ImageDocument(image_path=file)])
    assert "64×48 PNG" in response.text


def test_the_blocking_facade_prepares_images_too() -> None:
    net = Net()
    llm, _ = make_llm(GEMINI_POLICY, net)
    gif = encode(Image.new("RGB", (20, 10), (0, 0, 255)), "GIF")
    with llm:
        response = llm.complete("What colour?", [ImageDocument.from_bytes(gif)])
    assert response.text == "ok"
    [part] = net.images()
    assert part["mime"] == "image/png"  # Gemini takes no GIF
    assert opened(received(part)).convert("RGB").getpixel((3, 3)) == (0, 0, 255)


# --- conversions --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_types_the_provider_refuses_are_converted(fmt: str) -> None:
    picture = Image.new("RGB", (30, 20), (200, 100, 0))
    fitted = fit_image(encode(picture, fmt), ANTHROPIC_POLICY)
    assert fitted.changed
    assert fitted.mimetype == "image/png"  # a lossless source stays lossless
    assert opened(fitted.data).convert("RGB").getpixel((10, 10)) == (200, 100, 0)


def test_png_keeps_transparency_when_converted() -> None:
    picture = Image.new("RGBA", (30, 20), (0, 0, 0, 0))
    picture.paste((0, 255, 0, 255), (0, 0, 10, 10))
    fitted = fit_image(encode(picture, "WEBP", lossless=True), OLLAMA_POLICY)
    assert fitted.mimetype == "image/png"
    out = opened(fitted.data)
    assert out.mode == "RGBA"
    assert pixel(out, (20, 15))[3] == 0
    assert pixel(out, (5, 5)) == (0, 255, 0, 255)


def test_jpeg_only_provider_gets_transparency_flattened_on_white() -> None:
    picture = Image.new("RGBA", (30, 20), (0, 0, 0, 0))
    picture.paste((0, 0, 255, 255), (0, 0, 10, 10))
    fitted = fit_image(
        encode(picture, "PNG"), ImagePolicy(accepted_types=frozenset({"image/jpeg"}))
    )
    assert fitted.mimetype == "image/jpeg"
    out = opened(fitted.data).convert("RGB")
    assert all(channel > 245 for channel in pixel(out, (25, 15)))  # was transparent
    red, green, blue = pixel(out, (4, 4))
    assert blue > 200 and red < 40 and green < 40


def test_animated_gif_becomes_its_first_frame_where_animation_is_refused() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    fitted = fit_image(buffer.getvalue(), OPENAI_POLICY)
    assert fitted.mimetype == "image/png"
    out = opened(fitted.data)
    assert not getattr(out, "is_animated", False)
    assert out.convert("RGB").getpixel((8, 8)) == (255, 0, 0)
    assert not fit_image(buffer.getvalue(), ANTHROPIC_POLICY).changed  # it takes animation


def test_low_detail_images_are_sent_small_to_openai() -> None:
    data = noise_jpeg(1600, 1200)
    fitted = fit_image(data, OPENAI_POLICY, detail="low")
    assert max(opened(fitted.data).size) == 512
    assert not fit_image(data, OPENAI_POLICY).changed  # "high": 1600 px is fine


# --- byte limits --------------------------------------------------------------------------


def test_per_image_limit_is_measured_on_base64_where_documented() -> None:
    data = noise_jpeg(700, 700)
    limit = base64_length(len(data)) * 9 // 10  # raw bytes fit, base64 does not
    assert len(data) < limit
    fitted = fit_image(data, ImagePolicy(max_base64_bytes=limit))
    assert fitted.changed
    assert base64_length(len(fitted.data)) <= limit
    assert opened(fitted.data).size == (700, 700)  # recompressed, not shrunk, first


def test_recompression_then_downscaling_reach_a_tight_budget() -> None:
    fitted = fit_image(noise_jpeg(1000, 1000), ImagePolicy(max_bytes=60_000))
    assert len(fitted.data) <= 60_000
    width, height = opened(fitted.data).size
    assert width == height < 1000


async def test_several_images_share_the_request_limit() -> None:
    images = [noise_jpeg(600, 600) for _ in range(3)]
    total = sum(base64_length(len(data)) for data in images)
    policy = ImagePolicy(max_request_bytes=total * 2 // 3)
    parts = await send(policy, [ImageDocument.from_bytes(data) for data in images])
    assert sum(len(part["data"]) for part in parts) <= total * 2 // 3


async def test_request_limit_with_fitting_off_is_an_error_and_nothing_is_sent() -> None:
    images = [noise_jpeg(300, 300) for _ in range(2)]
    net = Net()
    policy = ImagePolicy(max_request_bytes=base64_length(len(images[0])), fit=False)
    with pytest.raises(InvalidImageError, match="2 images together"):
        await send(policy, [ImageDocument.from_bytes(data) for data in images], net)
    assert net.sent == []


# --- count-dependent edges (Anthropic: 2000 px with more than 20 images) -------------------


def wide_png() -> bytes:
    return encode(Image.new("RGB", (2100, 40), (90, 90, 90)), "PNG")


async def test_many_images_tighten_the_edge_limit() -> None:
    policy = ImagePolicy(max_edge=8000, many_images=20, many_images_max_edge=2000)
    twenty = await send(policy, [ImageDocument.from_bytes(wide_png())] * 20)
    assert all(received(part) == wide_png() for part in twenty)
    many = await send(policy, [ImageDocument.from_bytes(wide_png())] * 21)
    assert all(opened(received(part)).size == (2000, 38) for part in many)
    for part in many:
        assert_within(policy, part["mime"], received(part), count=21)


async def test_anthropic_many_image_limit_with_fitting_off_names_the_image() -> None:
    net = Net()
    policy = attrs.evolve(ANTHROPIC_POLICY, fit=False)
    await send(policy, [ImageDocument.from_bytes(wide_png())] * 20, net)
    with pytest.raises(InvalidImageError, match=r"image 1 .* 2100x40 pixels, over") as info:
        await send(policy, [ImageDocument.from_bytes(wide_png())] * 21, Net())
    assert "turn image fitting on" in str(info.value)


# --- the policy override ------------------------------------------------------------------


async def test_a_call_can_turn_fitting_off() -> None:
    net = Net()
    llm, provider = make_llm(OLLAMA_POLICY, net)
    unfitted = attrs.evolve(OLLAMA_POLICY, fit=False)
    async with llm:
        await llm.acomplete("x", [ImageDocument.from_bytes(photo())], image_policy=unfitted)
    [part] = net.images()
    assert received(part) == photo()
    assert "image_policy" not in provider.built[-1].options.extra  # not sent to the API


async def test_a_provider_default_policy_applies_to_every_call() -> None:
    net = Net()
    provider = Recorder(
        policy=OLLAMA_POLICY, extra=cast(Any, {"image_policy": ImagePolicy(recommended_edge=100)})
    )
    llm = MultiModalLLM(provider, transport=Transport(http_transport=httpx.MockTransport(net)))
    async with llm:
        await llm.acomplete("x", [ImageDocument.from_bytes(noise_jpeg(400, 200))])
    [part] = net.images()
    assert opened(received(part)).size == (100, 50)


async def test_a_policy_option_of_the_wrong_type_is_refused() -> None:
    net = Net()
    with pytest.raises(InvalidImageError, match="must be an ImagePolicy"):
        await send(OLLAMA_POLICY, [ImageDocument.from_bytes(small_png())], net, image_policy=1)
    assert net.sent == []


# --- bad input: a clear error, and nothing sent -------------------------------------------


def bad_routes() -> dict[str, Route]:
    return {
        "/page": (200, {"content-type": "text/html"}, b"<html>hello</html>"),
        "/huge.png": (200, {"content-type": "image/png", "content-length": "999999999"}, b""),
        "/to-ftp": (302, {"location": "ftp://images.test/pic.png"}, b""),
        "/text.png": (200, {"content-type": "image/png"}, b"this is no picture at all"),
    }


def bad_inputs(tmp_path: Path) -> Iterator[tuple[str, ImageDocument, str]]:
    jpeg = noise_jpeg(300, 200)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    yield (
        "missing file",
        ImageDocument(image_path=tmp_path / "nope.png"),
        r"nope\.png\) cannot be read",
    )
    yield "directory", ImageDocument(image_path=tmp_path), "cannot be read"
    yield "zero bytes file", ImageDocument(image_path=empty), r"empty\.png\) is empty \(0 bytes\)"
    yield "zero bytes", ImageDocument.from_bytes(b""), "is empty"
    yield "truncated", ImageDocument(image_path=truncated), "truncated or corrupt"
    yield (
        "corrupt",
        ImageDocument.from_bytes(small_png()[:40] + noise_bytes(200)),
        "truncated or corrupt",
    )
    yield (
        "bomb (warning size)",
        ImageDocument.from_bytes(bomb_png(10_000, 10_000)),
        "decompression bomb",
    )
    yield (
        "bomb (error size)",
        ImageDocument.from_bytes(bomb_png(30_000, 30_000)),
        "decompression bomb",
    )
    yield (
        "pdf",
        ImageDocument.from_bytes(b"%PDF-1.7\n" + b"0" * 100),
        "not an image of a known type",
    )
    yield "ftp URL", ImageDocument(image_url="ftp://images.test/a.png"), "only http and https"
    yield "file URL", ImageDocument(image_url="file:///etc/passwd"), "only http and https"
    yield "404", ImageDocument(image_url="http://images.test/gone.png"), "answered HTTP 404"
    yield "html", ImageDocument(image_url="http://images.test/page"), "not an image: .* text/html"
    yield (
        "too large",
        ImageDocument(image_url="http://images.test/huge.png"),
        "over the download limit",
    )
    yield "redirect to ftp", ImageDocument(image_url="http://images.test/to-ftp"), "non-http URL"
    yield (
        "liar",
        ImageDocument(image_url="http://images.test/text.png"),
        "not an image of a known type",
    )


async def test_each_bad_input_raises_naming_the_image_and_sends_nothing(tmp_path: Path) -> None:
    for label, doc, reason in bad_inputs(tmp_path):
        net = Net(bad_routes())
        good = ImageDocument.from_bytes(small_png())
        with pytest.raises(InvalidImageError, match=reason) as info:
            await send(OLLAMA_POLICY, [good, doc], net)
        error = info.value
        assert error.image_index == 1, label
        assert str(error).startswith("image 2"), label
        assert error.provider == "recorder", label
        assert net.sent == [], label


async def test_a_decompression_bomb_is_an_image_error_with_warnings_as_errors() -> None:
    # pytest runs with filterwarnings=error; Pillow's DecompressionBombWarning must not
    # escape as a foreign exception, whichever of the two sizes it has.
    for size in (10_000, 30_000):
        with pytest.raises(InvalidImageError, match=r"decompression bomb \(.*\d+"):
            fit_image(bomb_png(size, size), DEFAULT_POLICY)


class Endless(httpx.AsyncByteStream):
    """A body that never ends until the response is closed (as a socket would)."""

    def __init__(self) -> None:
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield small_png()
        while not self.closed:
            yield b"\x00" * 65536

    async def aclose(self) -> None:
        self.closed = True


async def test_slow_and_endless_downloads_are_cut_off() -> None:
    provider_calls: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "provider.test":
            provider_calls.append(request)
        if request.url.path == "/slow.png":
            await anyio.sleep(30)

        return httpx.Response(200, headers={"content-type": "image/png"}, stream=Endless())

    policy = attrs.evolve(OLLAMA_POLICY, fetch_timeout=0.2, fetch_max_bytes=1_000_000)
    transport = Transport(http_transport=httpx.MockTransport(handler))
    async with MultiModalLLM(Recorder(policy=policy), transport=transport) as llm:
        with pytest.raises(InvalidImageError, match=r"image 1 .* within 0.2 s"):
            await llm.acomplete("x", [ImageDocument(image_url="http://images.test/slow.png")])
        with pytest.raises(InvalidImageError, match="over the download limit of 1000000"):
            await llm.acomplete("x", [ImageDocument(image_url="http://images.test/big.png")])
    assert provider_calls == []


async def test_too_many_images_is_refused_before_any_download() -> None:
    net = Net(png_routes())
    policy = attrs.evolve(OLLAMA_POLICY, max_images=2)
    docs = [ImageDocument(image_url="http://images.test/pic.png")] * 3
    with pytest.raises(InvalidImageError, match="3 images, over recorder's limit of 2") as info:
        await send(policy, docs, net)
    assert info.value.image_index == 2
    assert net.sent == [] and net.fetched == []


async def test_bad_base64_is_refused_before_sending() -> None:
    net = Net()
    with pytest.raises(InvalidImageError, match="not valid base64"):
        await send(OLLAMA_POLICY, [ImageDocument(image="@@@ not base64 @@@")], net)
    assert net.sent == []


async def test_a_type_with_no_conversion_target_is_refused() -> None:
    net = Net()
    policy = ImagePolicy(accepted_types=frozenset({"image/gif"}))
    bmp = encode(Image.new("RGB", (4, 4)), "BMP")
    with pytest.raises(InvalidImageError, match=r"image 1 .*image/bmp.* cannot be converted"):
        await send(policy, [ImageDocument.from_bytes(bmp)], net)
    assert net.sent == []


async def test_the_offline_provider_refuses_a_missing_file_before_sending(tmp_path: Path) -> None:
    async with MultiModalLLM("offline:default") as llm:
        with pytest.raises(InvalidImageError, match="cannot be read"):
            await llm.acomplete("x", [ImageDocument(image_path=tmp_path / "missing.png")])


HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


@pytest.mark.skipif(
    importlib.util.find_spec("pillow_heif") is not None, reason="pillow-heif decodes HEIC"
)
def test_heic_without_pillow_heif_passes_where_accepted_and_is_refused_elsewhere() -> None:
    fitted = fit_image(HEIC, GEMINI_POLICY)  # Gemini reads HEIC itself
    assert fitted.data is HEIC
    assert fitted.mimetype == "image/heic"
    with pytest.raises(InvalidImageError, match="needs the pillow-heif package"):
        fit_image(HEIC, OPENAI_POLICY)


def test_from_image_refuses_what_is_no_image() -> None:
    with pytest.raises(InvalidImageError, match="cannot make an image of a int"):
        ImageDocument.from_image(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidImageError, match="cannot make an image of a float"):
        ImageBlock.from_image(4.2)  # type: ignore[arg-type]

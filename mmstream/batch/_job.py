"""One job of a batch: an id, a prompt (with images and documents) or messages, and options.

A job is a frozen value. `Job.from_dict` reads the JSONL form (one JSON
object a line) and refuses anything it would have to guess about: an unknown
field, a missing id, both ``prompt`` and ``messages``. Relative file paths are
resolved against a base directory when the job is read, so a jobs file can sit
beside its pictures.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, final

from attrs import field, frozen

from mmstream.batch._errors import InvalidJobError
from mmstream.content import (
    ChatMessage,
    ContentBlock,
    ImageBlock,
    ImageInput,
    MessageRole,
    TextBlock,
)
from mmstream.errors import InvalidRequestError

__all__ = ["JOB_FIELDS", "Job"]

#: the fields a job may have (anything else is refused; put your own data in ``metadata``).
JOB_FIELDS = (
    "id",
    "prompt",
    "messages",
    "system",
    "images",
    "documents",
    "options",
    "metadata",
)

_URL_PREFIXES = ("http://", "https://", "data:")
_ROLES = frozenset(role.value for role in MessageRole)


def _to_tuple(value: Iterable[Any] | str | None) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes)):
        return (value,)
    return tuple(value)


def _to_messages(value: Iterable[ChatMessage] | None) -> tuple[ChatMessage, ...] | None:
    return None if value is None else tuple(value)


def _to_options(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return {} if value is None else dict(value)


@final
@frozen(kw_only=True)
class Job:
    """One request of a batch, with the id its result is recorded under.

    Give ``prompt`` (with ``images`` and ``documents``, which come before the
    prompt in the user message, as ``complete`` puts them) or ``messages``
    (a whole conversation), not both.

    Args:
        id: unique within the run; the result carries it.
        prompt: the question or instruction.
        messages: a conversation, instead of ``prompt``.
        system: a system prompt put first.
        images: with ``prompt``: paths, URLs, bytes or PIL images (anything
            [`ImageBlock.from_image`][mmstream.content.ImageBlock.from_image] takes).
        documents: with ``prompt``: document paths or URLs (needs a version of
            mmstream whose content model has document blocks).
        options: call options (``max_tokens``, ``temperature``, provider extras).
        metadata: any JSON value, copied to the result unchanged (labels, keys to join on).

    Raises:
        InvalidJobError: the job is incomplete or contradicts itself.
    """

    id: str
    prompt: str | None = None
    messages: tuple[ChatMessage, ...] | None = field(default=None, converter=_to_messages)
    system: str | None = None
    images: tuple[ImageInput, ...] = field(default=(), converter=_to_tuple)
    documents: tuple[str, ...] = field(default=(), converter=_to_tuple)
    options: Mapping[str, Any] = field(factory=dict, converter=_to_options)
    metadata: Any = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidJobError(f"a job's id must be a non-empty string, not {self.id!r}")
        if (self.prompt is None) == (self.messages is None):
            raise InvalidJobError(
                "a job needs exactly one of 'prompt' and 'messages'", job_id=self.id
            )
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise InvalidJobError("'prompt' must be a string", job_id=self.id)
        if self.messages is not None:
            if not self.messages:
                raise InvalidJobError("'messages' must not be empty", job_id=self.id)
            if self.images or self.documents:
                raise InvalidJobError(
                    "'images' and 'documents' go with 'prompt'; with 'messages', put them "
                    "inside a message's content",
                    job_id=self.id,
                )
        if self.system is not None and not isinstance(self.system, str):
            raise InvalidJobError("'system' must be a string", job_id=self.id)
        for name in self.options:
            if not isinstance(name, str):
                raise InvalidJobError("option names must be strings", job_id=self.id)
        if self.documents:
            _document_class(self.id)

    @classmethod
    def from_dict(
        cls, data: Any, *, base_dir: str | Path | None = None, line: int | None = None
    ) -> Job:
        """A job from its JSON form (one line of a jobs file, already parsed).

        Args:
            data: a JSON object with the fields in [`JOB_FIELDS`][mmstream.batch.JOB_FIELDS].
            base_dir: relative image and document paths are taken from here
                (``None``: the current directory).
            line: the line it came from, for error messages.

        Raises:
            InvalidJobError: it is not a valid job.
        """
        if not isinstance(data, Mapping):
            raise InvalidJobError(
                f"a job must be a JSON object, not {type(data).__name__}", line=line
            )
        raw_id = data.get("id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
            raise InvalidJobError(
                f"a job needs an 'id' (a string or an integer), not {raw_id!r}", line=line
            )
        job_id = str(raw_id)
        unknown = sorted(set(data) - set(JOB_FIELDS))
        if unknown:
            raise InvalidJobError(
                f"unknown field(s) {', '.join(map(repr, unknown))}; a job has "
                f"{', '.join(JOB_FIELDS)} (put your own data in 'metadata')",
                job_id=job_id,
                line=line,
            )
        base = None if base_dir is None else Path(base_dir)
        try:
            options = data.get("options")
            if options is not None and not isinstance(options, Mapping):
                raise InvalidJobError("'options' must be a JSON object", job_id=job_id)
            messages = data.get("messages")
            return cls(
                id=job_id,
                prompt=data.get("prompt"),
                messages=None if messages is None else _messages(messages, base, job_id),
                system=data.get("system"),
                images=tuple(_reference(v, base, "images", job_id) for v in _refs(data, "images")),
                documents=tuple(
                    _reference(v, base, "documents", job_id) for v in _refs(data, "documents")
                ),
                options=options,
                metadata=data.get("metadata"),
            )
        except InvalidJobError as exc:
            if line is None or exc.line is not None:
                raise
            raise InvalidJobError(exc.message, job_id=job_id, line=line) from None
        except (InvalidRequestError, ValueError, TypeError) as exc:  # a block refused its data
            message = exc.message if isinstance(exc, InvalidRequestError) else str(exc)
            raise InvalidJobError(message, job_id=job_id, line=line) from exc

    @classmethod
    def from_json(cls, text: str | bytes, *, base_dir: str | Path | None = None) -> Job:
        """A job from one JSON line.

        Raises:
            InvalidJobError: the line is not JSON or not a valid job.
        """
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidJobError(f"not JSON ({exc})") from None
        return cls.from_dict(data, base_dir=base_dir)

    def to_messages(self) -> list[ChatMessage]:
        """The conversation this job sends (the system prompt first)."""
        messages: list[ChatMessage] = []
        if self.system is not None:
            messages.append(ChatMessage(MessageRole.SYSTEM, self.system))
        if self.messages is not None:
            messages.extend(self.messages)
            return messages
        blocks: list[Any] = [ImageBlock.from_image(image) for image in self.images]
        if self.documents:
            document = _document_class(self.id)
            blocks.extend(
                document.from_url(ref) if ref.startswith(_URL_PREFIXES) else document.from_path(ref)
                for ref in self.documents
            )
        blocks.append(TextBlock(self.prompt or ""))
        messages.append(ChatMessage(MessageRole.USER, blocks=blocks))
        return messages


def _document_class(job_id: str) -> Any:
    """The content model's document block, or a clear error where it has none yet."""
    document = getattr(importlib.import_module("mmstream.content"), "DocumentBlock", None)
    if document is None:
        raise InvalidJobError(
            "this version of mmstream cannot send documents (its content model has no "
            "document block); send them as images or upgrade",
            job_id=job_id,
        )
    return document


def _refs(data: Mapping[str, Any], name: str) -> Sequence[Any]:
    value = data.get(name)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list):
        raise InvalidJobError(f"'{name}' must be a list of paths or URLs")
    return value


def _reference(value: Any, base: Path | None, name: str, job_id: str) -> str:
    """A path or URL from a job, with a relative path resolved against ``base``."""
    if not isinstance(value, str) or not value:
        raise InvalidJobError(f"'{name}' holds {value!r}; give paths or URLs", job_id=job_id)
    if value.startswith(_URL_PREFIXES) or base is None:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


def _messages(value: Any, base: Path | None, job_id: str) -> list[ChatMessage]:
    if not isinstance(value, list):
        raise InvalidJobError("'messages' must be a list of messages", job_id=job_id)
    return [_message(item, index, base, job_id) for index, item in enumerate(value)]


def _message(item: Any, index: int, base: Path | None, job_id: str) -> ChatMessage:
    where = f"messages[{index}]"
    if not isinstance(item, Mapping):
        raise InvalidJobError(f"{where} must be an object with 'role' and 'content'", job_id=job_id)
    role = item.get("role")
    if role not in _ROLES:
        raise InvalidJobError(
            f"{where} has role {role!r}; use one of {', '.join(sorted(_ROLES))}", job_id=job_id
        )
    content = item.get("content")
    if isinstance(content, str):
        return ChatMessage(role, content)
    if not isinstance(content, list):
        raise InvalidJobError(f"{where}.content must be a string or a list of parts", job_id=job_id)
    blocks = [_part(part, f"{where}.content[{i}]", base, job_id) for i, part in enumerate(content)]
    return ChatMessage(role, blocks=blocks)


def _part(part: Any, where: str, base: Path | None, job_id: str) -> ContentBlock:
    """A content part: ``text``, ``image`` (path, url or base64 data) or OpenAI's ``image_url``."""
    if not isinstance(part, Mapping):
        raise InvalidJobError(f"{where} must be an object with a 'type'", job_id=job_id)
    kind = part.get("type")
    if kind == "text" and isinstance(part.get("text"), str):
        return TextBlock(part["text"])
    if kind == "image":
        detail = part.get("detail")
        if isinstance(part.get("path"), str):
            return ImageBlock(path=_reference(part["path"], base, where, job_id), detail=detail)
        if isinstance(part.get("url"), str):
            return ImageBlock(url=part["url"], detail=detail)
        if isinstance(part.get("data"), str):
            return ImageBlock(
                image=part["data"], image_mimetype=part.get("mimetype"), detail=detail
            )
    if kind == "image_url":
        image_url = part.get("image_url")
        if isinstance(image_url, str):
            return ImageBlock(url=image_url)
        if isinstance(image_url, Mapping) and isinstance(image_url.get("url"), str):
            return ImageBlock(url=image_url["url"], detail=image_url.get("detail"))
    raise InvalidJobError(
        f"{where} is not a content part; use {{'type': 'text', 'text': ...}}, "
        "{'type': 'image', 'path' | 'url' | 'data': ...} or OpenAI's "
        "{'type': 'image_url', 'image_url': {'url': ...}}",
        job_id=job_id,
    )

"""Conversation messages and their mapping to and from the OpenAI chat shape.

The OpenAI ``messages`` array is the lingua franca of clients (Completions, UAMP
``input.text.messages``) and providers, so it is mapped here once, in both directions.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from .. import uamp
from .._errors import RemoteProtocolError

__all__ = ["Message", "messages_from_openai", "message_to_openai", "text_of"]

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


@attrs.frozen
class Message:
    """One conversation message.

    Attributes:
        role: ``system``, ``user``, ``assistant`` or ``tool``.
        content: text, or a list of UAMP content items (text, image, audio, file…).
        tool_calls: calls the assistant made in this message.
        tool_call_id: for ``tool`` messages, the call this answers.
        name: optional participant name.
    """

    role: str
    content: str | list[uamp.ContentItem] = ""
    tool_calls: tuple[uamp.ToolCallInfo, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        """The message's text (text parts concatenated)."""
        return text_of(self.content)


def text_of(content: str | list[uamp.ContentItem]) -> str:
    """Concatenate the text of ``content``."""
    if isinstance(content, str):
        return content
    return "".join(c.text for c in content if isinstance(c, uamp.TextContent))


def _part_from_openai(part: Any, where: str) -> uamp.ContentItem:
    if not isinstance(part, dict):
        raise RemoteProtocolError(f"{where} must be an object", code="invalid_value")
    kind = part.get("type")
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise RemoteProtocolError(f"{where}.text must be a string", code="invalid_value")
        return uamp.TextContent(text=text)
    if kind == "image_url":
        image = part.get("image_url")
        if isinstance(image, str):
            image = {"url": image}
        if not isinstance(image, dict) or not isinstance(image.get("url"), str):
            raise RemoteProtocolError(f"{where}.image_url.url is required", code="invalid_value")
        return uamp.ImageContent(image={"url": image["url"]}, detail=image.get("detail"))
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
            raise RemoteProtocolError(f"{where}.input_audio.data is required", code="invalid_value")
        return uamp.AudioContent(audio=audio["data"], format=audio.get("format"))
    if kind == "file":
        f = part.get("file") or {}
        if not isinstance(f, dict):
            raise RemoteProtocolError(f"{where}.file must be an object", code="invalid_value")
        return uamp.FileContent(
            file=f.get("file_data") or {"file_id": f.get("file_id")}, filename=f.get("filename")
        )
    raise RemoteProtocolError(f"{where}.type {kind!r} is not supported", code="invalid_value")


def messages_from_openai(raw: Any, *, param: str = "messages") -> list[Message]:
    """Parse an OpenAI-style ``messages`` array.

    Raises:
        RemoteProtocolError: with ``code="invalid_value"`` and a message naming the bad element.
    """
    if not isinstance(raw, list):
        raise RemoteProtocolError(f"'{param}' must be an array", code="invalid_value")
    out: list[Message] = []
    for i, m in enumerate(raw):
        where = f"{param}[{i}]"
        if not isinstance(m, dict):
            raise RemoteProtocolError(f"{where} must be an object", code="invalid_value")
        role = m.get("role")
        if role not in _ROLES:
            raise RemoteProtocolError(
                f"{where}.role must be one of {sorted(_ROLES)}, got {role!r}", code="invalid_value"
            )
        if role == "developer":
            role = "system"
        content = m.get("content")
        parsed: str | list[uamp.ContentItem]
        if content is None:
            parsed = ""
        elif isinstance(content, str):
            parsed = content
        elif isinstance(content, list):
            parsed = [_part_from_openai(p, f"{where}.content[{j}]") for j, p in enumerate(content)]
        else:
            raise RemoteProtocolError(
                f"{where}.content must be a string or an array", code="invalid_value"
            )
        calls: list[uamp.ToolCallInfo] = []
        for j, c in enumerate(m.get("tool_calls") or ()):
            fn = c.get("function") if isinstance(c, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise RemoteProtocolError(
                    f"{where}.tool_calls[{j}].function.name is required", code="invalid_value"
                )
            args = fn.get("arguments", "")
            if not isinstance(args, str):
                args = orjson.dumps(args).decode()
            calls.append(
                uamp.ToolCallInfo(id=str(c.get("id") or ""), name=fn["name"], arguments=args)
            )
        tool_call_id = m.get("tool_call_id")
        if role == "tool" and not isinstance(tool_call_id, str):
            raise RemoteProtocolError(f"{where}.tool_call_id is required", code="invalid_value")
        out.append(
            Message(
                role=role,
                content=parsed,
                tool_calls=tuple(calls),
                tool_call_id=tool_call_id,
                name=m.get("name") if isinstance(m.get("name"), str) else None,
            )
        )
    return out


def _part_to_openai(item: uamp.ContentItem) -> dict[str, Any] | None:
    if isinstance(item, uamp.TextContent):
        return {"type": "text", "text": item.text}
    if isinstance(item, uamp.ImageContent):
        url = item.image.get("url") if isinstance(item.image, dict) else None
        if url is None:
            url = f"data:image/{item.format or 'png'};base64,{item.image}"
        part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
        if item.detail:
            part["image_url"]["detail"] = item.detail
        return part
    if isinstance(item, uamp.AudioContent):
        return {
            "type": "input_audio",
            "input_audio": {"data": item.audio, "format": item.format or "wav"},
        }
    if isinstance(item, uamp.FileContent):
        f: dict[str, Any] = {"filename": item.filename}
        if isinstance(item.file, str):
            f["file_data"] = item.file
        elif isinstance(item.file, dict):
            f.update({k: v for k, v in item.file.items() if k in ("file_id", "file_data")})
        return {"type": "file", "file": f}
    return None


def message_to_openai(m: Message) -> dict[str, Any]:
    """Render ``m`` in the OpenAI chat shape (for providers and echoing history)."""
    out: dict[str, Any] = {"role": m.role}
    if isinstance(m.content, str):
        out["content"] = m.content
    else:
        parts = [p for p in map(_part_to_openai, m.content) if p is not None]
        out["content"] = parts
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
        if not out["content"]:
            out["content"] = None
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name:
        out["name"] = m.name
    return out

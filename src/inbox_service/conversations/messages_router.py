from __future__ import annotations

import re
from urllib.parse import quote

from fastapi import APIRouter, Response

from inbox_service.conversations import service
from inbox_service.conversations.schemas import MessageOut
from inbox_service.core.deps import CurrentCaller, Session
from inbox_service.core.errors import problems

router = APIRouter(prefix="/v1", tags=["messages"], responses=problems(401, 404, 422, 429))

# Content types we serve attachments as; anything odd is sent as opaque bytes.
_SAFE_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
# Types a browser would run (script, markup that can carry script) go out as opaque bytes.
_ACTIVE_TYPE = re.compile(r"html|xml|svg|javascript|ecmascript|^multipart/|^message/")
# Controls, and bidi overrides that make `fdp.exe` read as `exe.pdf`.
_UNSAFE_NAME_CHARS = re.compile("[\x00-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
MAX_FILENAME_CHARS = 200


def download_name(filename: str | None, fallback: str) -> str:
    """A bare file name for Content-Disposition: the last path segment, without controls,
    quotes or bidi overrides, shortened (keeping the extension)."""
    name = _UNSAFE_NAME_CHARS.sub("", filename or "").replace('"', "")
    name = re.split(r"[/\\]", name)[-1].strip()
    if name in {"", ".", ".."}:
        return fallback
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:20] if dot and stem else ""
        name = (
            f"{name[: MAX_FILENAME_CHARS - len(ext) - 1]}.{ext}"
            if ext
            else name[:MAX_FILENAME_CHARS]
        )
    return name


@router.get("/messages/{message_id}", response_model=MessageOut, response_model_by_alias=True)
async def get_message(message_id: str, session: Session, caller: CurrentCaller) -> MessageOut:
    """One message: text, sanitized html, headers, attachments, how it was threaded."""
    message = await service.get_visible_message(session, caller, message_id)
    return await service.message_detail(session, message)


@router.get(
    "/messages/{message_id}/raw",
    response_class=Response,
    responses={200: {"content": {"message/rfc822": {}}, "description": "The bytes as received"}},
)
async def get_message_raw(message_id: str, session: Session, caller: CurrentCaller) -> Response:
    """The message exactly as it was received (`message/rfc822`)."""
    message = await service.get_visible_message(session, caller, message_id)
    return Response(
        await service.raw_bytes(session, message),
        media_type="message/rfc822",
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'attachment; filename="{message.id}.eml"',
        },
    )


@router.get(
    "/attachments/{attachment_id}",
    response_class=Response,
    responses={
        200: {
            # The stored content type when it is a plain media type, else octet-stream.
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The file, as an attachment",
        }
    },
)
async def get_attachment(attachment_id: str, session: Session, caller: CurrentCaller) -> Response:
    """Download an attachment (always as a download, never rendered inline)."""
    attachment = await service.get_visible_attachment(session, caller, attachment_id)
    content_type = attachment.content_type.lower()
    if not _SAFE_TYPE.match(content_type) or _ACTIVE_TYPE.search(content_type):
        content_type = "application/octet-stream"
    filename = download_name(attachment.filename, attachment.id)
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
    return Response(
        attachment.data or b"",
        media_type=content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{ascii_name}"; '
            f"filename*=UTF-8''{quote(filename)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "sandbox; default-src 'none'",
        },
    )

"""One message's body, raw mail and files, each served so the browser runs nothing from it."""

from __future__ import annotations

import re

from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse
from django.urls import reverse
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_GET

from cases.access import agent_required, attachment_for_user_or_404, message_for_user_or_404
from cases.rendering import message_html_render

# The frame a message's HTML is shown in: no script whatever nh3 let through, no form, no
# plugin, nothing fetched but this site's attachments (and remote images once asked for).
BODY_CSP = (
    "default-src 'none'; img-src 'self' data:{remote}; style-src 'unsafe-inline'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; "
    "sandbox allow-same-origin allow-popups allow-popups-to-escape-sandbox"
)


@require_GET
@agent_required
@xframe_options_sameorigin
def message_body(request, pk: int):
    """The message's HTML as a page of its own, for the sandboxed frame of the case page."""
    message = message_for_user_or_404(request.user, pk)
    show_images = request.GET.get("images") == "1"
    cids = {
        a.content_id.strip("<>"): reverse("cases:attachment", args=[a.pk])
        for a in message.attachments.all()
        if a.content_id and a.kept and a.file and not a.purged_at
    }
    rendered = message_html_render(
        message.html,
        cid_url=cids.get,
        show_images=show_images,
        full=request.GET.get("full") == "1",
    )
    page = (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="referrer" content="no-referrer">'
        "<style>body{font:14px/1.45 system-ui,sans-serif;margin:0;display:flow-root;"
        "overflow-wrap:anywhere}"
        "img{max-width:100%;height:auto}</style></head>"
        f"<body>{rendered.html}</body></html>"
    )
    response = HttpResponse(page, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = BODY_CSP.format(
        remote=" https: http:" if show_images else ""
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    return response


@require_GET
@agent_required
def message_raw(request, pk: int):
    """The mail as it came (or as it was sent), as a plain-text download."""
    message = message_for_user_or_404(request.user, pk)  # outside the channels: 404 first
    if not request.user.has_perm("cases.view_raw_message"):
        raise PermissionDenied("Viewing raw mail needs its own permission.")
    raw = _raw_bytes(message)
    if raw is None:
        raise Http404("The raw mail of this message is not kept.")
    response = HttpResponse(raw, content_type="text/plain; charset=utf-8")
    name = f"message-{message.pk}.eml"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return _locked_down(response)


def _raw_bytes(message) -> bytes | None:
    if message.inbound_id and message.inbound and not message.inbound.raw_purged_at:
        return message.inbound.raw_bytes()
    if message.outbound_id and message.outbound:
        return bytes(message.outbound.raw)
    return None


@require_GET
@agent_required
def attachment_download(request, pk: int):
    """Always a download (never shown in place), so an HTML or SVG file runs nothing here."""
    attachment = attachment_for_user_or_404(request.user, pk)
    if not attachment.kept or not attachment.file or attachment.purged_at:
        raise Http404("This file is not kept.")
    try:
        handle = attachment.file.open("rb")
    except FileNotFoundError:
        raise Http404("This file is missing from storage.") from None
    response = FileResponse(
        handle,
        as_attachment=True,
        filename=_safe_filename(attachment.filename) or f"attachment-{attachment.pk}",
        content_type=attachment.content_type or "application/octet-stream",
    )
    return _locked_down(response)


def _safe_filename(name: str) -> str:
    """The file's own name, without folders or control characters."""
    name = re.split(r"[\\/]", name)[-1]
    return re.sub(r"[\x00-\x1f\x7f]", "", name).strip(" .")


def _locked_down(response):
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, no-store"
    return response

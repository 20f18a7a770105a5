"""The agent's case list and case page."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from cases.access import agent_required, case_for_user_or_404, cases_for, mailboxes_for
from cases.models import Case, CaseMessage
from cases.rendering import message_html_render
from cases.views.search import cases_search
from mailboxes.models import OutboundMessage

PAGE_SIZE = 50
# The workspace's own pages run only this site's scripts and styles; message HTML is never
# part of them (it lives in a sandboxed frame, see cases/views/messages.py).
PAGE_CSP = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-src 'self'; frame-ancestors 'self'"
)
# The columns the list shows: a channel row holds its (encrypted) settings, not needed here.
LIST_FIELDS = [
    *("state", "subject", "address", "last_message_at", "mailbox__name"),
    *("contact__name", "contact__address"),
    *("assignee__username", "assignee__first_name", "assignee__last_name"),
]
# Newest message first, read straight off the last_message_at index: "NULLS LAST" would stop
# SQLite using it (a sort of every case in the channels: seconds at 100,000). Every case has a
# message, so the column is set.
NEWEST_FIRST = ["-last_message_at", "-pk"]
# Outbound states that are still moving: the page polls until none is left.
MOVING = {
    OutboundMessage.State.QUEUED,
    OutboundMessage.State.SENDING,
    OutboundMessage.State.RETRYING,
}


@require_GET
@agent_required
def case_list(request):
    filters = _list_filters(request)
    channels = list(mailboxes_for(request.user).only("pk", "name").order_by("name"))
    if filters["channel"] and filters["channel"] not in {str(c.pk) for c in channels}:
        raise Http404("No such channel.")  # the same answer whether it exists or not
    cases = _filtered_cases(request.user, filters)
    page = Paginator(cases, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "cases": list(page.object_list),
        "filters": filters,
        "states": Case.State.choices,
        "channels": channels,
        "assignees": list(_assignees(request.user)),
        "query_string": _without_page(request),
    }
    return workspace_page(render(request, "cases/list.html", context))


def workspace_page(response):
    response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    return response


def _list_filters(request) -> dict[str, str]:
    get = request.GET
    return {name: get.get(name, "").strip() for name in ("state", "channel", "assignee", "q")}


def _filtered_cases(user, filters: dict[str, str]):
    cases = cases_for(user).select_related("mailbox", "contact", "assignee").only(*LIST_FIELDS)
    if filters["state"] in Case.State.values:
        cases = cases.filter(state=filters["state"])
    if filters["channel"].isdigit():
        cases = cases.filter(mailbox_id=int(filters["channel"]))
    assignee = filters["assignee"]
    if assignee == "mine":
        cases = cases.filter(assignee=user)
    elif assignee == "unassigned":
        cases = cases.filter(assignee__isnull=True)
    elif assignee.isdigit():
        cases = cases.filter(assignee_id=int(assignee))
    cases = cases_search(cases, query=filters["q"])
    return cases.order_by(*NEWEST_FIRST)


def _assignees(user):
    """The people cases can be assigned to in the user's channels: their agents and staff."""
    groups = mailboxes_for(user).values("agent_groups")
    users = get_user_model().objects.filter(is_active=True)
    return users.filter(Q(groups__in=groups) | Q(is_staff=True)).distinct().order_by("username")


def _without_page(request) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


@require_GET
@agent_required
def case_detail(request, pk: int):
    case = case_for_user_or_404(request.user, pk)
    messages = case.messages.select_related("outbound").prefetch_related("attachments")
    context = {
        "case": case,
        "messages": [_message_view(m) for m in messages],
        "events": case.events.select_related("actor"),
        "other_cases": _other_cases(request.user, case),
        "can_view_raw": request.user.has_perm("cases.view_raw_message"),
        "states_url": reverse("cases:states", args=[case.pk]),
    }
    return workspace_page(render(request, "cases/detail.html", context))


def _message_view(message: CaseMessage) -> dict:
    outbound = message.outbound
    # Rendered here too (the frame renders it again) to know which buttons the message needs.
    rendered = message_html_render(message.html, cid_url=lambda cid: None) if message.html else None
    return {
        "remote_images": bool(rendered and rendered.remote_images),
        "html_folded": bool(rendered and rendered.folded),
        "message": message,
        "state": outbound.state if outbound else "",
        "state_label": outbound.get_state_display() if outbound else "",
        "moving": bool(outbound and outbound.state in MOVING),
        "error": outbound.last_error if outbound else "",
        "has_quote": bool(message.full_text.strip())
        and message.full_text.strip() != message.text.strip(),
        "attachments": list(message.attachments.all()),
    }


def _other_cases(user, case: Case):
    """The contact's other cases, in the channels this user may see only."""
    same = Q(contact=case.contact) if case.contact_id else Q(address__iexact=case.address)
    others = cases_for(user).filter(same).exclude(pk=case.pk).select_related("mailbox")
    return others.order_by(*NEWEST_FIRST)[:20]


@require_GET
@agent_required
def case_states(request, pk: int):
    """The outbound messages' states, polled by the case page while any is still moving."""
    case = case_for_user_or_404(request.user, pk)
    rows = CaseMessage.objects.filter(case=case, outbound__isnull=False).select_related("outbound")
    states = {
        str(m.pk): {
            "state": m.outbound.state,
            "label": m.outbound.get_state_display(),
            "error": m.outbound.last_error,
            "moving": m.outbound.state in MOVING,
        }
        for m in rows
    }
    return JsonResponse({"messages": states})

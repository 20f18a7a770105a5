"""What the case page's action panels need: their forms, built from the case and the user.

The case page (cases/views/cases.py) passes `case`, `request` and `user`; these tags add the
rest, so the action templates stay independent of the page's view.
"""

from __future__ import annotations

from django import template
from django.contrib.messages import get_messages
from django.db.models import Count, F, Prefetch, Q

from cases.access import cases_for
from cases.action_forms import AssignForm, MergeForm, ReplyForm, SplitForm, StateForm, TaskForm
from cases.actions import reply_initial_text
from cases.models import Case, CaseMessage, TaskEntry
from cases.views.actions import REPLY_DRAFT

register = template.Library()


@register.simple_tag(takes_context=True)
def notices(context) -> list:
    """The request's Django messages, for pages whose context uses `messages` for the thread."""
    return list(get_messages(context["request"]))


@register.simple_tag(takes_context=True)
def reply_form(context, case: Case) -> ReplyForm:
    """The reply form: a refused reply as the agent left it, or a fresh one pre-filled."""
    request = context["request"]
    draft = request.session.pop(REPLY_DRAFT.format(pk=case.pk), None)
    if draft is not None:
        form = ReplyForm(draft["data"], case=case)
        if form.is_valid() and draft["error"]:
            form.add_error(None, draft["error"])
        return form
    initial = {
        "from_address": _addressed_to(case),
        "to": case.address,
        "text": reply_initial_text(case=case, user=request.user),
    }
    return ReplyForm(initial=initial, case=case)


def _addressed_to(case: Case) -> str:
    """Answer from the address the customer last wrote to, when it is one of the channel's."""
    mailbox = case.mailbox
    own = {a.address.lower(): a.address for a in mailbox.aliases.all()}
    last = case.messages.filter(direction=CaseMessage.Direction.IN).order_by("-date", "-pk")
    for address in last.values_list("recipients", flat=True).first() or []:
        if address.lower() in own:
            return own[address.lower()]
    return mailbox.email_address


@register.simple_tag(takes_context=True)
def case_action_forms(context, case: Case) -> dict:
    user = context["request"].user
    return {
        "state": StateForm(initial={"state": case.state}),
        "assign": AssignForm(initial={"assignee": case.assignee_id}, case=case),
        "split": SplitForm(case=case),
        "merge": MergeForm(case=case, user=user),
        "merge_suggestions": _merge_suggestions(user, case),
        "can_split": _can_split(case),
    }


def _can_split(case: Case) -> bool:
    """A received message can leave a thread that has another message to keep."""
    received = Count("pk", filter=Q(direction=CaseMessage.Direction.IN))
    counts = case.messages.aggregate(total=Count("pk"), received=received)
    return counts["received"] >= 1 and counts["total"] > 1


def _merge_suggestions(user, case: Case):
    """The customer's other cases on this channel: the usual merge targets."""
    same = Q(contact=case.contact) if case.contact_id else Q(address__iexact=case.address)
    others = cases_for(user).filter(same, mailbox_id=case.mailbox_id, merged_into__isnull=True)
    return others.exclude(pk=case.pk).order_by(F("last_message_at").desc(nulls_last=True))[:10]


@register.simple_tag
def case_tasks(case: Case) -> dict:
    entries = Prefetch("entries", queryset=TaskEntry.objects.order_by("created_at", "pk"))
    tasks = case.tasks.select_related("assignee").prefetch_related(entries)
    return {"tasks": list(tasks), "form": TaskForm(case=case)}

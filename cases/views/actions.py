"""The case page's actions: one POST view each, back to the case with a message.

Every view looks the case up through cases.access (404 outside the agent's channels) before
reading the form. A reply the form refuses keeps what the agent typed: it is put in the
session and the case page shows it again with the errors (files must be chosen again).
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from cases.access import agent_required, case_for_user_or_404, cases_for
from cases.action_forms import AssignForm, MergeForm, ReplyForm, SplitForm, StateForm, TaskForm
from cases.actions import (
    ActionRefused,
    case_assign,
    case_merge,
    case_reply,
    case_split,
    case_state_set,
)
from cases.models import Task
from cases.tasks import task_create, task_done

REPLY_DRAFT = "cases.reply_draft.{pk}"  # session key: a refused reply, shown again


@require_POST
@agent_required
def reply(request, pk: int):
    case = case_for_user_or_404(request.user, pk)
    form = ReplyForm(request.POST, request.FILES, case=case)
    error = ""
    if form.is_valid():
        data = form.cleaned_data
        try:
            case_reply(
                case=case,
                user=request.user,
                text=data["text"],
                from_address=data["from_address"],
                attachments=data["files"],
                to=data["to"],
                cc=data["cc"],
                state_after=data["state_after"],
            )
        except ActionRefused as exc:
            error = str(exc)
        else:
            messages.success(request, f"Reply queued to {', '.join(data['to'])}.")
            return _back(case)
    request.session[REPLY_DRAFT.format(pk=case.pk)] = {
        "data": {k: v for k, v in request.POST.items() if k != "csrfmiddlewaretoken"},
        "error": error,
    }
    messages.error(request, "The reply was not sent: " + (error or _errors(form)))
    return redirect(_detail_url(case) + "#reply")


@require_POST
@agent_required
def state_set(request, pk: int):
    case = case_for_user_or_404(request.user, pk)
    form = StateForm(request.POST)

    def done(d) -> str:
        case_state_set(case=case, user=request.user, state=d["state"], reason=d["reason"])
        return f"Status set to {case.get_state_display().lower()}."

    return _run(request, case, form, done)


@require_POST
@agent_required
def assign(request, pk: int):
    case = case_for_user_or_404(request.user, pk)
    form = AssignForm(request.POST, case=case)

    def done(d) -> str:
        case_assign(case=case, user=request.user, assignee=d["assignee"], reason=d["reason"])
        who = d["assignee"]
        return f"Assigned to {who.get_full_name() or who.get_username()}." if who else "Unassigned."

    return _run(request, case, form, done)


@require_POST
@agent_required
def split(request, pk: int):
    case = case_for_user_or_404(request.user, pk)
    form = SplitForm(request.POST, case=case)

    def done(d) -> str:
        new = case_split(message=d["message"], user=request.user, reason=d["reason"])
        return f"The message is now case #{new.reference}."

    return _run(request, case, form, done)


@require_POST
@agent_required
def merge(request, pk: int):
    case = case_for_user_or_404(request.user, pk)
    form = MergeForm(request.POST, case=case, user=request.user)
    if not form.is_valid():
        return _refused(request, case, _errors(form))
    target = form.cleaned_data["target"]
    try:
        case_merge(
            source=case, target=target, user=request.user, reason=form.cleaned_data["reason"]
        )
    except ActionRefused as exc:
        return _refused(request, case, str(exc))
    messages.success(request, f"Case #{case.reference} merged into this one.")
    return _back(target)


@require_POST
@agent_required
def task_add(request, pk: int):
    case = case_for_user_or_404(request.user, pk)
    form = TaskForm(request.POST, case=case)

    def done(d) -> str:
        try:
            task = task_create(case=case, created_by=request.user, **d)
        except ValueError as exc:  # an address the outbox refuses
            raise ActionRefused(str(exc)) from None
        mailed = f", assignment mailed to {task.assignee_address}" if task.assignee_address else ""
        return f"Task “{task.title}” created{mailed}."

    return _run(request, case, form, done)


@require_POST
@agent_required
def task_finish(request, pk: int):
    # The task's case must be one of the agent's: a task elsewhere is a 404 like its case.
    tasks = Task.objects.filter(case__in=cases_for(request.user).values("pk"))
    task = tasks.select_related("case").filter(pk=pk).first()
    if task is None:
        raise Http404("No such task.")
    task_done(task=task, by=request.user)
    messages.success(request, f"Task “{task.title}” is done.")
    return _back(task.case)


# --- Shared -----------------------------------------------------------------------------------


def _run(request, case, form, action):
    """Validate, run the action, report either way and go back to the case."""
    if not form.is_valid():
        return _refused(request, case, _errors(form))
    try:
        text = action(form.cleaned_data)
    except ActionRefused as exc:
        return _refused(request, case, str(exc))
    messages.success(request, text)
    return _back(case)


def _refused(request, case, text: str):
    messages.error(request, text)
    return _back(case)


def _errors(form) -> str:
    parts = []
    for name, errors in form.errors.items():
        label = form.fields[name].label if name in form.fields else ""
        label = label or (name.replace("_", " ").capitalize() if name != "__all__" else "")
        parts.append((f"{label}: " if label else "") + " ".join(errors))
    return " ".join(parts)


def _detail_url(case) -> str:
    return reverse("cases:detail", args=[case.pk])


def _back(case):
    return redirect(_detail_url(case))

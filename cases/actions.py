"""What an agent does to a case: reply, status, assignment, split, merge.

One function per action, each in one durable transaction (returned means committed) that also
writes a `CaseEvent` naming who did it and why. A refusal raises `ActionRefused` with a
sentence the agent can act on; nothing is written then.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Max, Q

from cases.access import mailboxes_for
from cases.auto_reply import reply_subject
from cases.filtering import channel_addresses
from cases.models import Attachment, Case, CaseEvent, CaseMessage, CaseParticipant, Contact, Task
from cases.records import attachment_storage_name, case_message_add_outbound
from cases.threads import participants_add
from mailboxes.compose import Draft, OutgoingAttachment, template_render
from mailboxes.models import Alias, Mailbox
from mailboxes.outbox import outbound_enqueue

logger = logging.getLogger(__name__)
Kind = CaseEvent.Kind
MAX_REPLY_FILES = 5  # as for received mail (seed 001)


class ActionRefused(Exception):
    """The action cannot be done as asked; the message says why, for the agent."""


# --- Reply ------------------------------------------------------------------------------------


def case_reply(
    *,
    case: Case,
    user,
    text: str,
    from_address: str,
    attachments: Sequence[OutgoingAttachment] = (),
    to: Sequence[str] | None = None,
    cc: Sequence[str] | None = None,
    state_after: str = "",
) -> CaseMessage:
    """Queue the agent's reply and put it on the thread; it is sent after commit. The case
    then takes `state_after` (say, pending: waiting on the customer), or leaves "new"."""
    _refuse_merged(case)
    if state_after and state_after not in Case.State.values:
        raise ActionRefused(f"{state_after!r} is not a status. Choose one from the list.")
    mailbox = case.mailbox
    if _bare(text) in ("", _bare(reply_initial_text(case=case, user=user))):
        raise ActionRefused("Type the reply: the text is empty or only the channel's template.")
    alias = reply_sender(mailbox=mailbox, address=from_address)
    _check_files(attachments)
    parent = _last_received(case)
    draft = Draft(
        to=list(to or [case.address]),
        cc=list(cc or []),
        subject=reply_subject(parent.subject if parent else case.subject),
        text=text,
        alias=alias,
        in_reply_to=parent.message_id if parent else "",
        references=_thread_ids(case),
        case_reference=case.reference,
        attachments=attachments,
        use_template=False,  # the template pre-filled the form; the agent's text is final
    )
    with transaction.atomic(durable=True):
        try:
            row = outbound_enqueue(mailbox=mailbox, draft=draft)
        except ValueError as exc:  # an address compose refuses
            raise ActionRefused(str(exc)) from None
        added = case_message_add_outbound(case=case, row=row)
        _files_keep(added, attachments)
        sent_from = alias.address if alias else mailbox.email_address
        _event(case, user, Kind.NOTE, f"Replied from {sent_from} to {', '.join(draft.to)}")
        opened = Case.State.OPEN if case.state == Case.State.NEW else ""  # an agent took it up
        if (state_after or opened) not in ("", case.state):
            _state_change(case, user, state_after or opened)
    logger.info("case %s: reply %s queued", case.pk, row.pk)
    return added


def reply_sender(*, mailbox: Mailbox, address: str) -> Alias | None:
    """The alias to send as, or None for the channel address; anything else is refused."""
    address = (address or "").strip().lower()
    if address == mailbox.email_address.lower():
        return None
    alias = mailbox.aliases.filter(address__iexact=address).first()
    if alias is None:
        raise ActionRefused(
            f"{address or 'An empty address'} is not this channel's address or one of its "
            "aliases. Choose one from the list."
        )
    return alias


def reply_initial_text(*, case: Case, user) -> str:
    """The channel's case response template with an empty reply: the form's first text."""
    mailbox = case.mailbox
    if not mailbox.case_response_template.strip():
        return ""
    draft = Draft(to=(), subject="", text="", template_context=reply_context(case=case, user=user))
    return template_render(mailbox=mailbox, draft=draft).strip("\n")


def reply_context(*, case: Case, user) -> dict:
    """What the response template may name besides {{ reply }} and {{ channel }}: plain
    values, never models (a template must not reach further than this)."""
    contact = case.contact
    return {
        "case": {"reference": case.reference, "subject": case.subject},
        "contact": {"name": contact.name if contact else "", "address": case.address},
        "agent": {"name": user.get_full_name() or user.get_username(), "email": user.email},
    }


def _bare(text: str) -> str:
    return " ".join(text.split())


def _check_files(attachments: Sequence[OutgoingAttachment]) -> None:
    limit = settings.POSTROOM_ATTACHMENT_MAX_BYTES
    if len(attachments) > MAX_REPLY_FILES:
        raise ActionRefused(f"Attach at most {MAX_REPLY_FILES} files to one reply.")
    total = sum(len(a.data) for a in attachments)
    if total > limit:
        raise ActionRefused(
            f"The files add up to {total:,} bytes; a reply may carry {limit:,}. "
            "Send fewer or smaller files."
        )


def _last_received(case: Case) -> CaseMessage | None:
    received = case.messages.filter(direction=CaseMessage.Direction.IN).exclude(
        joined_by=CaseMessage.JoinedBy.BOUNCE
    )
    return received.order_by("-date", "-pk").first()


def _thread_ids(case: Case) -> list[str]:
    # Every Message-ID of the thread, oldest first: compose keeps the last 20 (RFC 5322
    # 3.6.4), and the customer's answer threads back by any of them.
    ids = case.messages.exclude(message_id="").order_by("date", "pk")
    return list(ids.values_list("message_id", flat=True))


def _files_keep(added: CaseMessage, attachments: Sequence[OutgoingAttachment]) -> None:
    """The reply's files, on the thread like a received message's."""
    for item in attachments:
        row = Attachment(
            message=added,
            filename=item.filename,
            content_type=item.content_type or "application/octet-stream",
            size=len(item.data),
        )
        row.file.save(attachment_storage_name(item.filename), ContentFile(item.data), save=False)
        row.save()


# --- Status and assignment --------------------------------------------------------------------


def case_state_set(*, case: Case, user, state: str, reason: str = "") -> Case:
    _refuse_merged(case)
    if state not in Case.State.values:
        raise ActionRefused(f"{state!r} is not a status. Choose one from the list.")
    if state == case.state:
        raise ActionRefused(f"The case is already {case.get_state_display().lower()}.")
    with transaction.atomic(durable=True):
        _state_change(case, user, state, reason)
    return case


def _state_change(case: Case, user, state: str, reason: str = "") -> None:
    before = case.get_state_display()
    Case.objects.filter(pk=case.pk).update(state=state)
    case.state = state
    _event(case, user, Kind.STATE, f"{before} → {case.get_state_display()}", reason)


def case_assign(*, case: Case, user, assignee, reason: str = "") -> Case:
    """Give the case to an agent who can see its channel, or to nobody (assignee None)."""
    _refuse_merged(case)
    if assignee is not None and not agent_sees(agent=assignee, mailbox=case.mailbox):
        raise ActionRefused(f"{_name(assignee)} cannot see this channel's cases.")
    if (assignee.pk if assignee else None) == case.assignee_id:
        raise ActionRefused("The case is already assigned that way.")
    with transaction.atomic(durable=True):
        Case.objects.filter(pk=case.pk).update(assignee=assignee)
        case.assignee = assignee
        detail = f"Assigned to {_name(assignee)}" if assignee else "Unassigned"
        _event(case, user, Kind.ASSIGN, detail, reason)
    return case


def agent_sees(*, agent, mailbox: Mailbox) -> bool:
    return mailboxes_for(agent).filter(pk=mailbox.pk).exists()


def assignable_agents(*, mailbox: Mailbox):
    """Active users the channel's cases may be given to, in one query: its groups' members,
    superusers, and staff who may view cases. `case_assign` still asks cases.access."""
    view_case = {"codename": "view_case", "content_type__app_label": "cases"}
    may_view = Q(**{f"user_permissions__{k}": v for k, v in view_case.items()}) | Q(
        **{f"groups__permissions__{k}": v for k, v in view_case.items()}
    )
    users = get_user_model().objects.filter(is_active=True)
    chosen = Q(groups__in=mailbox.agent_groups.all()) | Q(is_superuser=True)
    return users.filter(chosen | (Q(is_staff=True) & may_view)).distinct().order_by("username")


# --- Split and merge --------------------------------------------------------------------------


def case_split(*, message: CaseMessage, user, reason: str = "") -> Case:
    """Move one received message into a new case with the same customer (a new question
    asked in an old thread). Later messages stay: answers to it thread to the new case by
    its Message-ID from now on."""
    old = message.case
    _refuse_merged(old)
    if message.direction != CaseMessage.Direction.IN:
        raise ActionRefused("Only a received message can be split out into a case of its own.")
    if not old.messages.exclude(pk=message.pk).exists():
        raise ActionRefused("This is the case's only message: there is nothing to split it from.")
    with transaction.atomic(durable=True):
        address = message.sender or old.address
        new = Case.objects.create(
            mailbox=old.mailbox,
            contact=_contact_of(old, address),
            address=address,
            subject=message.subject or old.subject,
            state=Case.State.OPEN,
            last_message_at=message.date,
        )
        CaseMessage.objects.filter(pk=message.pk).update(case=new)
        own = channel_addresses(mailbox=old.mailbox)
        participants_add(case=new, addresses=[address, *message.recipients], exclude=own)
        _last_message_recount(old)
        what = f"“{message.subject or 'message'}” from {address}"
        _event(old, user, Kind.SPLIT, f"{what} split out into case #{new.reference}", reason)
        _event(new, user, Kind.SPLIT, f"{what} split out of case #{old.reference}", reason)
    message.case = new
    return new


def case_merge(*, source: Case, target: Case, user, reason: str = "") -> Case:
    """Move the source's messages, participants and tasks to the target; the source stays as
    a solved record pointing at the target."""
    _refuse_merged(source)
    _refuse_merged(target)
    if source.pk == target.pk:
        raise ActionRefused("A case cannot be merged into itself.")
    if source.mailbox_id != target.mailbox_id:
        raise ActionRefused(
            f"Case #{target.reference} is on another channel; only cases of the same channel "
            "can be merged."
        )
    with transaction.atomic(durable=True):
        # Locked and read again: two agents merging A into B and B into A at once must not
        # make a loop.
        rows = Case.objects.select_for_update().filter(pk__in=[source.pk, target.pk])
        for row in rows.order_by("pk"):
            _refuse_merged(row)
        CaseMessage.objects.filter(case=source).update(case=target)
        Task.objects.filter(case=source).update(case=target)
        addresses = CaseParticipant.objects.filter(case=source).values_list("address", flat=True)
        participants_add(case=target, addresses=list(addresses), exclude=set())
        Case.objects.filter(pk=source.pk).update(merged_into=target, state=Case.State.SOLVED)
        source.merged_into, source.state = target, Case.State.SOLVED
        _last_message_recount(target)
        _event(source, user, Kind.MERGE, f"Merged into case #{target.reference}", reason)
        _event(target, user, Kind.MERGE, f"Case #{source.reference} merged into this one", reason)
    return target


def merge_targets(*, case: Case):
    """The cases `case` may be merged into: same channel, not merged themselves."""
    others = Case.objects.filter(mailbox_id=case.mailbox_id, merged_into__isnull=True)
    return others.exclude(pk=case.pk)


def _contact_of(case: Case, address: str) -> Contact | None:
    if address.lower() == case.address.lower():
        return case.contact
    return Contact.objects.filter(address__iexact=address).first()


def _last_message_recount(case: Case) -> None:
    newest = CaseMessage.objects.filter(case=case).aggregate(at=Max("date"))["at"]
    Case.objects.filter(pk=case.pk).update(last_message_at=newest)


# --- Shared -----------------------------------------------------------------------------------


def _refuse_merged(case: Case) -> None:
    if case.merged_into_id is not None:
        raise ActionRefused(
            f"Case #{case.reference} was merged into case #{case.merged_into_id}; work on that one."
        )


def _event(case: Case, user, kind: str, detail: str, reason: str = "") -> CaseEvent:
    return CaseEvent.objects.create(
        case=case, kind=kind, actor=user, detail=detail[:500], reason=reason.strip()
    )


def _name(user) -> str:
    return user.get_full_name() or user.get_username()

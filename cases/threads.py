"""Which case a message belongs to, and why.

By In-Reply-To, then References (newest first), against the Message-IDs of every message a case
holds, received or sent by Postroom, and of its tasks' assignment mails; then by a case reference
in the subject ("[#1234]").
Either way a case is joined only when the sender takes part in it: different people answering
one outgoing mail get cases of their own, and a guessed [#ref] joins nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cases.models import Case, CaseMessage, CaseParticipant, Task
from mailboxes.models import Mailbox

CASE_REFERENCE = re.compile(r"\[#(\d{1,12})\]")
JoinedBy = CaseMessage.JoinedBy


@dataclass(frozen=True)
class ThreadMatch:
    case: Case | None
    joined_by: str
    detail: str


def thread_find(
    *,
    mailbox: Mailbox,
    sender: str,
    in_reply_to: list[str],
    references: list[str],
    subject: str,
    require_part: bool = True,
) -> ThreadMatch:
    """The case the message answers; `require_part=False` for the channel's own mail."""
    refused: list[str] = []
    for joined_by, ids in (
        (JoinedBy.IN_REPLY_TO, in_reply_to),
        (JoinedBy.REFERENCES, list(reversed(references))),
    ):
        for msgid in ids:
            case = _case_of_message_id(mailbox, msgid)
            if case is None:
                continue
            if not require_part or takes_part(case=case, address=sender):
                return ThreadMatch(case, joined_by, msgid)
            refused.append(f"{msgid} is on case #{case.reference}")
    for reference in CASE_REFERENCE.findall(subject):
        case = Case.objects.filter(pk=int(reference), mailbox=mailbox).first()
        if case is None:
            continue
        if not require_part or takes_part(case=case, address=sender):
            return ThreadMatch(case, JoinedBy.SUBJECT, f"[#{reference}]")
        refused.append(f"[#{reference}] is a case the sender takes no part in")
    detail = "; ".join(refused)
    return ThreadMatch(None, JoinedBy.NEW, detail[:300])


def _case_of_message_id(mailbox: Mailbox, msgid: str) -> Case | None:
    found = (
        CaseMessage.objects.filter(case__mailbox=mailbox, message_id=msgid)
        .select_related("case")
        .order_by("-pk")
        .first()
    )
    if found is not None:
        return found.case
    # A task's assignment mail is not in the case thread, but answering it is about the case.
    task = (
        Task.objects.filter(case__mailbox=mailbox, assignment_message_id=msgid)
        .select_related("case")
        .first()
    )
    return task.case if task else None


def takes_part(*, case: Case, address: str) -> bool:
    address = address.lower()
    if not address:
        return False
    return case.address == address or (
        CaseParticipant.objects.filter(case=case, address=address).exists()
    )


def participants_add(*, case: Case, addresses: list[str], exclude: set[str]) -> None:
    # One INSERT for all; the unique (case, lower(address)) constraint skips those already in.
    wanted = {a.lower() for a in addresses if a} - exclude
    rows = [CaseParticipant(case=case, address=a) for a in sorted({a[:320] for a in wanted})]
    if rows:
        CaseParticipant.objects.bulk_create(rows, ignore_conflicts=True)

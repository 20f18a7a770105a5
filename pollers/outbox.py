"""Sending the outbox: claim due rows, send them over one session, record each outcome.

Claims live in the rows (state "sending" with an expiry), so a worker that dies mid-send
leaves rows the sweeper finds once the claim expires. A crash between the server's "250" and
our commit resends at most once, with the same bytes and Message-ID.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from mailboxes.models import Mailbox, OutboundMessage
from mailboxes.outbox import mailbox_sender_settings
from mailboxes.services import (
    mailbox_incoming_settings,
    mailbox_smtp_settings,
    network_policy,
)
from pollers.log_context import channel_logged
from pollers.metrics import OUTBOX
from pollers.models import SendSlot
from providers.config import TokenCredentials
from providers.errors import ProviderError
from providers.outgoing import (
    Envelope,
    OutgoingSession,
    SendResult,
    imap_append_sent,
    outgoing_session,
)

logger = logging.getLogger(__name__)
State = OutboundMessage.State
CLAIM_SECONDS = 300
BATCH_SIZE = 50
RETRY_BASE_SECONDS = 60
RETRY_MAX_SECONDS = 6 * 3600


@dataclass
class OutboxRun:
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    paused: bool = False
    busy: bool = False  # every sending slot of the channel was taken


def outbox_send_due(*, mailbox_id: int) -> OutboxRun:
    run = OutboxRun()
    mailbox = Mailbox.objects.filter(pk=mailbox_id).first()
    if mailbox is None or mailbox.outbox_paused:
        run.paused = mailbox is not None
        return run
    owner = uuid.uuid4().hex
    if not _slot_acquire(mailbox, owner):
        run.busy = True
        return run
    try:
        with channel_logged(mailbox):
            _send_sessions(mailbox, owner, run)
    finally:
        SendSlot.objects.filter(mailbox=mailbox, owner=owner).update(owner="", expires_at=None)
    return run


def _send_sessions(mailbox: Mailbox, owner: str, run: OutboxRun) -> None:
    sender = _sender(mailbox, run)
    may_retry = True
    while sender is not None:
        refused = _send_session(mailbox, sender, owner, run, may_retry=may_retry)
        if not refused:
            break
        # The server refused an OAuth2 access token the provider had ended early (revoked
        # session, changed password): once more with a refreshed one, then pause as usual.
        may_retry = False
        sender = _sender(mailbox, run, rejected_token=refused)


def _send_session(mailbox: Mailbox, sender, owner: str, run: OutboxRun, *, may_retry: bool) -> str:
    """One session for every batch: one login, however much is due. When `may_retry` and the
    server refuses the OAuth2 access token, the unsent rows go back to the queue untouched and
    the refused token is returned; otherwise ""."""
    credentials = getattr(sender, "credentials", None)
    token = credentials.access_token if isinstance(credentials, TokenCredentials) else ""
    with outgoing_session(sender, network_policy()) as session:
        while not run.paused and (rows := _claim_due(mailbox, owner)):
            if _send(mailbox, session, rows, owner, run, retry_token=token if may_retry else ""):
                return token
            _slot_renew(mailbox, owner)
    return ""


def _sender(mailbox: Mailbox, run: OutboxRun, *, rejected_token: str = ""):
    """The channel's sender settings; None when an OAuth2 token could not be had. A refused
    sign-in has paused the outbox already; a provider out of reach leaves the rows due, and
    the sweeper tries again."""
    try:
        if rejected_token:  # only SMTP logs in with tokens
            return mailbox_smtp_settings(mailbox=mailbox, rejected_token=rejected_token)
        return mailbox_sender_settings(mailbox=mailbox)
    except ProviderError as err:
        logger.warning("channel %s: no access token to send with (%s)", mailbox.pk, err.kind)
        run.paused = err.kind == "oauth_refused"
        return None


def outbox_sweep() -> list[int]:
    """Channels with mail that is due, or whose claim expired (its worker died)."""
    now = timezone.now()
    due = OutboundMessage.objects.filter(_due(now), mailbox__outbox_paused=False)
    return sorted(set(due.values_list("mailbox_id", flat=True)))


# --- Claims ---------------------------------------------------------------------------------


def _due(now) -> Q:
    waiting = Q(state__in=[State.QUEUED, State.RETRYING], next_attempt_at__lte=now)
    abandoned = Q(state=State.SENDING, claim_expires_at__lt=now)
    return waiting | abandoned


def _slot_acquire(mailbox: Mailbox, owner: str) -> bool:
    """Take one of the channel's sending slots by conditional UPDATE; False if all are held."""
    now = timezone.now()
    for number in range(settings.POSTROOM_OUTBOX_SESSIONS_PER_CHANNEL):
        SendSlot.objects.get_or_create(mailbox=mailbox, number=number)
        free = Q(owner="") | Q(expires_at__lt=now)
        if SendSlot.objects.filter(free, mailbox=mailbox, number=number).update(
            owner=owner, expires_at=now + timedelta(seconds=CLAIM_SECONDS * 2)
        ):
            return True
    return False


def _slot_renew(mailbox: Mailbox, owner: str) -> None:
    expires_at = timezone.now() + timedelta(seconds=CLAIM_SECONDS * 2)
    SendSlot.objects.filter(mailbox=mailbox, owner=owner).update(expires_at=expires_at)


def _claim_due(mailbox: Mailbox, owner: str) -> list[OutboundMessage]:
    now = timezone.now()
    candidates = list(
        OutboundMessage.objects.filter(_due(now), mailbox=mailbox)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:BATCH_SIZE]
    )
    # Conditional on still being due: rows another worker claimed meanwhile are left alone,
    # and the claim's owner tells ours apart.
    OutboundMessage.objects.filter(_due(now), pk__in=candidates).update(
        state=State.SENDING,
        claimed_by=owner,
        attempts=F("attempts") + 1,
        claim_expires_at=now + timedelta(seconds=CLAIM_SECONDS),
    )
    return list(
        OutboundMessage.objects.filter(
            pk__in=candidates, claimed_by=owner, state=State.SENDING
        ).order_by("pk")
    )


# --- Sending --------------------------------------------------------------------------------


def _send(
    mailbox: Mailbox,
    session: OutgoingSession,
    rows: list[OutboundMessage],
    owner: str,
    run: OutboxRun,
    *,
    retry_token: str = "",
) -> bool:
    """Each outcome is committed as soon as the server has answered, before the next message
    goes: a crash resends one message at most (its claim expires, the sweeper finds it), with
    the same bytes and Message-ID, never a whole batch.

    With `retry_token`, a refusal of that OAuth2 token stops the batch and puts the unsent
    rows back (True): the caller refreshes the token and sends them over a new session."""
    sent = []
    stopped = False
    renew_at = timezone.now() + timedelta(seconds=CLAIM_SECONDS / 2)
    for index, row in enumerate(rows):
        if timezone.now() > renew_at:
            # A slow server must not let the claims run out under us: another worker would
            # take the rest of the batch and send it a second time.
            renew_at = _claims_renew(rows[index:], owner)
        result = session.send(Envelope(row.mail_from, tuple(row.recipients), bytes(row.raw)))
        if retry_token and result.error is not None and result.error.kind == "auth":
            _claims_release(rows[index:], owner)
            stopped = True
            break
        _record(mailbox, row, result, owner, run)
        if result.ok:
            sent.append(row)
    if sent:
        _copy_to_sent(mailbox, sent)
    return stopped


def _claims_renew(rows: list[OutboundMessage], owner: str):
    now = timezone.now()
    OutboundMessage.objects.filter(pk__in=[r.pk for r in rows], claimed_by=owner).update(
        claim_expires_at=now + timedelta(seconds=CLAIM_SECONDS)
    )
    return now + timedelta(seconds=CLAIM_SECONDS / 2)


def _claims_release(rows: list[OutboundMessage], owner: str) -> None:
    """Back to the queue as if never claimed: the attempt was not the message's fault."""
    OutboundMessage.objects.filter(pk__in=[r.pk for r in rows], claimed_by=owner).update(
        state=State.QUEUED,
        attempts=F("attempts") - 1,
        claimed_by="",
        claim_expires_at=None,
    )


def _record(
    mailbox: Mailbox, row: OutboundMessage, result: SendResult, owner: str, run: OutboxRun
) -> None:
    mine = OutboundMessage.objects.filter(pk=row.pk, claimed_by=owner)
    now = timezone.now()
    if result.ok:
        mine.update(
            state=State.SENT,
            sent_at=now,
            server_reply=result.server_reply[:500],
            claimed_by="",
            claim_expires_at=None,
            last_error="",
        )
        run.sent += 1
        OUTBOX.labels(result="sent").inc()
        return
    error = result.error
    if error.kind == "auth":
        # The password is wrong for every message alike: pause, don't burn their attempts.
        _pause(mailbox, error)
        mine.update(
            state=State.QUEUED,
            attempts=F("attempts") - 1,
            claimed_by="",
            claim_expires_at=None,
            last_error=str(error),
            last_error_at=now,
        )
        run.paused = True
        OUTBOX.labels(result="deferred").inc()
    elif error.permanent or row.attempts >= row.max_attempts:
        reason = (
            str(error)
            if error.permanent
            else (f"Gave up after {row.attempts} attempts. Last error: {error}")
        )
        mine.update(
            state=State.FAILED,
            last_error=reason,
            last_error_at=now,
            claimed_by="",
            claim_expires_at=None,
        )
        run.failed += 1
        OUTBOX.labels(result="failed").inc()
    else:
        delay = retry_delay(attempt=row.attempts, retry_after=getattr(result, "retry_after", None))
        mine.update(
            state=State.RETRYING,
            next_attempt_at=now + delay,
            last_error=str(error),
            last_error_at=now,
            claimed_by="",
            claim_expires_at=None,
        )
        run.retrying += 1
        OUTBOX.labels(result="retrying").inc()


def retry_delay(*, attempt: int, retry_after: float | None = None) -> timedelta:
    """1 min × 2^(attempt−1) ± 20 %, at most 6 h; a server's Retry-After wins when longer."""
    seconds = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** max(0, attempt - 1))
    seconds *= random.uniform(0.8, 1.2)
    return timedelta(seconds=max(seconds, retry_after or 0))


def _pause(mailbox: Mailbox, error: ProviderError) -> None:
    reason = (
        f"Outgoing server refused the login: {error} Outbox paused: correct the login, then "
        "choose “Resume outbox” in the channel list."
    )
    changed = Mailbox.objects.filter(pk=mailbox.pk, outbox_paused=False).update(
        outbox_paused=True,
        outbox_paused_reason=reason[:500],
        status=Mailbox.Status.ERROR,
        last_error=reason,
        last_error_at=timezone.now(),
        status_message=reason[:500],
    )
    if changed:
        logger.warning("channel %s: outbox paused (%s)", mailbox.channel_id, error.kind)


def _copy_to_sent(mailbox: Mailbox, rows: list[OutboundMessage]) -> None:
    """Seed 000: a copy in the IMAP sent folder, where the provider does not file one itself."""
    if not (
        mailbox.copy_to_sent
        and mailbox.listen
        and mailbox.sent_folder
        and mailbox.protocol == Mailbox.Protocol.IMAP
    ):
        return
    raws = [bytes(row.raw) for row in rows]
    try:
        incoming = mailbox_incoming_settings(mailbox=mailbox)
        errors = imap_append_sent(incoming, network_policy(), mailbox.sent_folder, raws)
    except ProviderError as err:
        errors = [err] * len(rows)
    for row, error in zip(rows, errors, strict=True):
        if error is None:
            OutboundMessage.objects.filter(pk=row.pk).update(copied_to_sent=True)
        else:
            # Delivered all the same: the state stays "sent", the note says what is missing.
            note = f"Sent, but the copy to '{mailbox.sent_folder}' failed: {error}"
            OutboundMessage.objects.filter(pk=row.pk).update(last_error=note)

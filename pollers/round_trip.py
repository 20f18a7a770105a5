"""Round-trip probes: a channel mails itself now and then, and the mail must come back in.

A poll that logs in fine says nothing about mail reaching the mailbox (a full quota, a broken
forward, a spam filter, a stuck MTA). So, on the channel's own schedule, a probe goes out
through its outgoing server to its own address, and the poll that stores it records the time
it took. It carries a header with an HMAC token (the channel and the time it was sent, keyed
by SECRET_KEY), recognised before the pipeline: a probe never becomes a case or gets an
acknowledgement. It is then removed from the server, and its ledger row with it.

A probe that does not arrive within the channel's limit turns the probe amber; missed
POSTROOM_ROUND_TRIP_RED_AFTER times in a row, red, and administrators are mailed once.
"""

from __future__ import annotations

import email.parser
import email.policy
import imaplib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from mailboxes.compose import Draft, message_compose
from mailboxes.models import InboundMessage, Mailbox
from mailboxes.notify import administrators_notify
from mailboxes.outbox import mailbox_sender_settings
from mailboxes.services import mailbox_incoming_settings, mailbox_with_token, network_policy
from pollers.log_context import channel_logged
from pollers.metrics import ROUND_TRIPS
from providers.errors import ProviderError
from providers.imap import imap_connect
from providers.imap_folder import ImapFolder
from providers.outgoing import Envelope, SendResult, outgoing_session
from providers.pop3 import pop3_connect
from providers.pop3_maildrop import Pop3Maildrop

logger = logging.getLogger(__name__)
HEADER = "X-Postroom-Probe"
_HEADER_BYTES = HEADER.lower().encode()
SALT = "postroom.round_trip"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
RoundTrip = Mailbox.RoundTrip
IGNORED = InboundMessage.Outcome.IGNORED
PROBE_TEXT = (
    "Postroom sends this message to {address} to check that mail to the channel “{name}” "
    "arrives. It is removed automatically; there is nothing to do."
)


def _eligible() -> Q:
    """Online, receiving, sending, and connected (a probe sent before the cursor is set would
    count as mail that was already there, and never be fetched)."""
    return Q(
        round_trip_enabled=True,
        enabled=True,
        listen=True,
        outbox_paused=False,
        oauth_refused_at__isnull=True,
        cursor_set_at__isnull=False,
    )


# --- The token ------------------------------------------------------------------------------


def token_make(*, channel_id: str, sent_at: datetime) -> str:
    micros = (sent_at - EPOCH) // timedelta(microseconds=1)
    signed = f"{channel_id}.{micros}"
    return f"{signed}.{salted_hmac(SALT, signed).hexdigest()[:32]}"


def token_read(token: str) -> tuple[str, datetime] | None:
    """(channel ID, sent at) of a token Postroom made; None for anything else."""
    signed, _, mac = token.strip().rpartition(".")
    channel_id, _, micros = signed.partition(".")
    if not (channel_id and micros.isdigit()):
        return None
    if not constant_time_compare(mac, salted_hmac(SALT, signed).hexdigest()[:32]):
        return None
    return channel_id, EPOCH + timedelta(microseconds=int(micros))


def token_of(raw: bytes) -> str:
    """The probe header's value, read from the header block only; "" if there is none."""
    # Sliced, not split: split would copy the whole body of every message a poll stores.
    ends = [at for at in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if at != -1]
    head = raw[: min(ends)] if ends else raw
    if _HEADER_BYTES not in head.lower():
        return ""  # the cheap test that every ordinary message fails
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    return str(headers.get(HEADER, "")).strip()


# --- Sending --------------------------------------------------------------------------------


def round_trips_claim_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Claim the channels whose probe is due; their next one moves an interval ahead."""
    now = now or timezone.now()
    due = (
        Mailbox.objects.filter(_eligible())
        .filter(Q(round_trip_next_at__isnull=True) | Q(round_trip_next_at__lte=now))
        .values_list("pk", "round_trip_next_at", "round_trip_interval")[:limit]
    )
    claimed = []
    for pk, due_at, interval in due:
        # Conditional on the value read: a second dispatcher that read it too loses here.
        if Mailbox.objects.filter(pk=pk, round_trip_next_at=due_at).update(
            round_trip_next_at=now + timedelta(seconds=interval)
        ):
            claimed.append(pk)
    return claimed


def round_trip_send(*, mailbox_id: int, now: datetime | None = None) -> bool:
    """Send one probe; False when none was sent (not eligible, or one is still in flight)."""
    mailbox = Mailbox.objects.filter(_eligible(), pk=mailbox_id).first()
    if mailbox is None:
        return False
    now = now or timezone.now()
    deadline = now + timedelta(seconds=mailbox.round_trip_limit)
    # Recorded before it is sent: on push the probe can be back before the server answers.
    in_flight = Mailbox.objects.filter(pk=mailbox.pk, round_trip_sent_at__isnull=True).update(
        round_trip_sent_at=now, round_trip_deadline=deadline
    )
    if not in_flight:
        return False
    with channel_logged(mailbox):
        result = _send(mailbox, token_make(channel_id=mailbox.channel_id, sent_at=now))
        if not result.ok:
            mailbox.refresh_from_db()
            _missed(mailbox, now, f"The outgoing server did not take the probe: {result.error}")
    return result.ok


def _send(mailbox: Mailbox, token: str) -> SendResult:
    """Straight through the outgoing server, not the outbox: a probe is a measurement, so it
    is never retried later, and never copied to the Sent folder."""
    draft = Draft(
        to=[mailbox.email_address],
        subject=f"Postroom round-trip check ({mailbox.channel_id})",
        text=PROBE_TEXT.format(address=mailbox.email_address, name=mailbox.name),
        use_template=False,
    )
    message = message_compose(mailbox=mailbox, draft=draft)
    message[HEADER] = token
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    envelope = Envelope(mailbox.email_address, (mailbox.email_address,), message.as_bytes())
    try:
        sender = mailbox_sender_settings(mailbox=mailbox)
    except ProviderError as err:
        return SendResult(ok=False, error=err)
    with outgoing_session(sender, network_policy()) as session:
        return session.send(envelope)


# --- Arrival --------------------------------------------------------------------------------


def round_trips_catch(rows: Iterable[InboundMessage]) -> list[InboundMessage]:
    """Record the probes among freshly stored rows; return the others, for the pipeline."""
    others = []
    for row in rows:
        # Probes are small: a message kept in file storage is not read twice to find out.
        token = token_of(bytes(row.raw)) if row.raw is not None else ""
        read = token_read(token) if token else None
        if read is None:
            others.append(row)
        else:  # another channel's probe (a shared mailbox, a forward) is set aside too
            _arrived(row, token, channel_id=read[0], sent_at=read[1])
    return others


def _arrived(row: InboundMessage, token: str, *, channel_id: str, sent_at: datetime) -> None:
    now = timezone.now()
    seconds = max(0.0, (now - sent_at).total_seconds())
    mine = Mailbox.objects.filter(pk=row.mailbox_id, channel_id=channel_id)
    alerted = mine.filter(round_trip_alerted_at__isnull=False).exists()
    awaited = mine.filter(round_trip_sent_at=sent_at).update(
        round_trip_sent_at=None,
        round_trip_deadline=None,
        round_trip_state=RoundTrip.OK,
        round_trip_failures=0,
        round_trip_last_ms=int(seconds * 1000),
        round_trip_last_ok_at=now,
        round_trip_alerted_at=None,
        round_trip_detail=f"The last probe came back in {seconds:.1f} s.",
    )
    if awaited:
        ROUND_TRIPS.labels(result="arrived").inc()
        reason = f"Round-trip probe sent by Postroom; came back in {seconds:.1f} s"
        if alerted:  # they were told it stopped: tell them it works again
            mailbox = Mailbox.objects.get(pk=row.mailbox_id)
            transaction.on_commit(
                lambda: administrators_notify(mailbox, "pollers/mail/round_trip_recovered")
            )
    else:
        logger.info("channel %s: a late or stray round-trip probe arrived", channel_id)
        reason = (
            f"Round-trip probe sent by Postroom for {channel_id} at "
            f"{sent_at:%Y-%m-%d %H:%M:%S} UTC (late, or for another channel)"
        )
    InboundMessage.objects.filter(pk=row.pk).update(
        outcome=IGNORED,
        outcome_reason=f"{reason}; it is removed from the server.",
        result={"round_trip": token},
        processed_at=now,
        attempts=F("attempts") + 1,
    )


def round_trips_tidy(*, mailbox: Mailbox) -> int:
    """Remove caught probes from the server, then from the ledger; returns how many.

    Only rows whose after-import action ran: a move or delete still pending is the next
    poll's (it knows the UIDs), and the probe is removed after that.
    """
    rows = list(
        InboundMessage.objects.filter(
            mailbox=mailbox, outcome=IGNORED, server_action_done=True, result__has_key="round_trip"
        ).only("pk", "uidl", "result")
    )
    if not rows:
        return 0
    try:
        if mailbox.after_import != Mailbox.AfterImport.DELETE:  # else gone already
            _remove(mailbox, rows)
    except (ProviderError, imaplib.IMAP4.error, OSError) as err:
        # Left in the ledger: the next poll tries again.
        logger.warning("channel %s: round-trip probe not removed: %s", mailbox.channel_id, err)
        return 0
    InboundMessage.objects.filter(pk__in=[row.pk for row in rows]).delete()
    return len(rows)


def _remove(mailbox: Mailbox, rows: list[InboundMessage]) -> None:
    if mailbox.protocol == Mailbox.Protocol.POP3:
        uidls = {row.uidl for row in rows}
        use = lambda incoming: _pop3_delete(incoming, uidls)  # noqa: E731
    else:
        tokens = [row.result["round_trip"] for row in rows]
        moved = mailbox.after_import == Mailbox.AfterImport.MOVE
        folder = mailbox.move_to_folder if moved else mailbox.folder
        use = lambda incoming: _imap_delete(incoming, folder, tokens)  # noqa: E731
    mailbox_with_token(mailbox=mailbox, build=mailbox_incoming_settings, use=use)


def _imap_delete(incoming, folder_name: str, tokens: list[str]) -> None:
    """Found by the header (a moved message has a new UID in its new folder)."""
    with imap_connect(incoming, network_policy()) as client:
        folder = ImapFolder(client, folder_name, readonly=False)
        uids = {uid for token in tokens for uid in client.search(["HEADER", HEADER, token])}
        if uids:
            folder.delete(sorted(uids))


def _pop3_delete(incoming, uidls: set[str]) -> None:
    with pop3_connect(incoming, network_policy()) as client:
        maildrop = Pop3Maildrop(client)
        maildrop.delete(m for m in maildrop.messages() if m.uidl in uidls)
        maildrop.quit()  # RFC 1939: DELE takes effect at QUIT


# --- Missing --------------------------------------------------------------------------------


def round_trips_expire(*, now: datetime | None = None) -> list[int]:
    """Probes past their limit count as missed; returns the channels they were for."""
    now = now or timezone.now()
    overdue = Mailbox.objects.filter(round_trip_deadline__lt=now)
    late = list(overdue.filter(_eligible()))
    # Taken offline or probes turned off meanwhile: nothing to judge, nothing in flight.
    overdue.exclude(pk__in=[m.pk for m in late]).update(
        round_trip_sent_at=None, round_trip_deadline=None
    )
    for mailbox in late:
        sent = mailbox.round_trip_sent_at
        _missed(
            mailbox,
            sent,
            f"The probe sent at {sent:%Y-%m-%d %H:%M:%S} UTC did not arrive within "
            f"{mailbox.round_trip_limit} s: mail to {mailbox.email_address} may not be "
            "reaching the mailbox (quota, forwarding, spam filter, the incoming server).",
            now=now,
        )
    return [mailbox.pk for mailbox in late]


def _missed(mailbox: Mailbox, sent_at: datetime, detail: str, *, now=None) -> None:
    failures = mailbox.round_trip_failures + 1
    red = failures >= settings.POSTROOM_ROUND_TRIP_RED_AFTER
    # Conditional on this probe still being the one in flight: it arrived meanwhile, or
    # another dispatcher expired it first, and then nothing changes here.
    changed = Mailbox.objects.filter(pk=mailbox.pk, round_trip_sent_at=sent_at).update(
        round_trip_sent_at=None,
        round_trip_deadline=None,
        round_trip_failures=failures,
        round_trip_state=RoundTrip.FAILING if red else RoundTrip.LATE,
        round_trip_detail=detail[:500],
    )
    if not changed:
        return
    ROUND_TRIPS.labels(result="missed").inc()
    logger.warning("channel %s: round-trip probe missed, %d in a row", mailbox.channel_id, failures)
    first_red = Mailbox.objects.filter(pk=mailbox.pk, round_trip_alerted_at__isnull=True)
    if red and first_red.update(round_trip_alerted_at=now or timezone.now()):
        mailbox.round_trip_failures, mailbox.round_trip_detail = failures, detail
        transaction.on_commit(
            lambda: administrators_notify(mailbox, "pollers/mail/round_trip_failing")
        )

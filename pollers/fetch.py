"""The fetch loops: what is new on the server is stored, then acted on, then processed.

Order per batch (DESIGN.md, "An inbound email"): fetch → store and advance the cursor in one
commit → renew the lease → only then mark seen / move / delete on the server → process.
A crash anywhere before the server action loses nothing; the next poll finishes the action.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mailboxes.models import InboundMessage, Mailbox
from mailboxes.services import mailbox_incoming_settings, mailbox_with_token, network_policy
from mailboxes.storage import (
    Fetched,
    cursor_start,
    known_uidls_replace,
    message_refetched,
    message_unreadable_store,
    messages_store,
    pending_server_actions,
    pop3_seen_uidls,
    server_actions_done,
    server_copied_mark,
)
from mailboxes.unreadable import refetch_due, refetch_failed
from providers.config import IncomingSettings
from providers.errors import FetchRefused, MessageUnreadable, ProviderError
from providers.imap import imap_connect
from providers.imap_folder import ImapFolder
from providers.pop3 import pop3_connect
from providers.pop3_maildrop import Pop3Maildrop, Pop3Message

logger = logging.getLogger(__name__)
POP3_BATCH_BYTES = 4 * 2**20
POP3_BATCH_COUNT = 200
# Messages a server refuses that one poll records before it gives up and reports the error.
MAX_REFUSED_PER_POLL = 10
# After a refused batch, how many messages are asked for one at a time (the rest next poll).
ONE_BY_ONE_MAX = 50


@dataclass
class PollOutcome:
    stored: list[int] = field(default_factory=list)  # InboundMessage ids
    # An after-import action that failed: mail was stored, but the server is not tidy.
    action_error: ProviderError | None = None


@dataclass(frozen=True)
class PollContext:
    mailbox: Mailbox
    renew: Callable[[], None]  # renew the lease; raises LeaseLost
    process: Callable[[list[InboundMessage]], None]  # run the pipeline on stored rows
    # Filled in as batches commit, so a poll that breaks midway still reports what it stored.
    outcome: PollOutcome = field(default_factory=PollOutcome)


def mailbox_fetch(ctx: PollContext) -> PollOutcome:
    # An OAuth2 channel's token may be refused (ended early): refreshed once, fetched again.
    # Nothing is stored before the login, and a fetch is idempotent after it anyway.
    fetch = _pop3_fetch if ctx.mailbox.protocol == Mailbox.Protocol.POP3 else _imap_fetch
    return mailbox_with_token(
        mailbox=ctx.mailbox,
        build=mailbox_incoming_settings,
        use=lambda settings: fetch(ctx, settings),
    )


# --- IMAP -----------------------------------------------------------------------------------


def _imap_fetch(ctx: PollContext, settings: IncomingSettings) -> PollOutcome:
    """A session; if the server refuses a message, the ones around it are still imported.

    A refused batch is fetched again one message at a time, in a new session if the server
    hung up; the message it refuses is recorded (mailboxes.unreadable) and the cursor passes
    it. At most MAX_REFUSED_PER_POLL of those a poll, so a server refusing everything does not
    hold a worker: the error is then reported and the next poll goes on.
    """
    one_by_one = False
    for _ in range(MAX_REFUSED_PER_POLL):
        try:
            return _imap_session(ctx, settings, one_by_one=one_by_one)
        except FetchRefused as err:
            if len(err.uids) > 1 and not one_by_one:
                one_by_one = True
            elif len(err.uids) == 1:
                _imap_refused(ctx.mailbox, err)
            else:
                raise
    return _imap_session(ctx, settings, one_by_one=one_by_one)


def _imap_session(ctx: PollContext, settings: IncomingSettings, *, one_by_one: bool):
    mailbox, outcome = ctx.mailbox, ctx.outcome
    readonly = mailbox.after_import == Mailbox.AfterImport.LEAVE
    with imap_connect(settings, network_policy()) as client:
        folder = ImapFolder(client, mailbox.folder, readonly=readonly)
        state = folder.state
        if mailbox.cursor_set_at is None or mailbox.uidvalidity is None:
            _imap_start_cursor(mailbox, folder)
            return outcome
        if state.uidvalidity != mailbox.uidvalidity:
            _imap_uidvalidity_changed(mailbox, folder)
        outcome.action_error = _imap_finish_actions(mailbox, folder)
        _imap_deliver(ctx, folder, _imap_refetch(mailbox, folder))
        uids = folder.uids_after(mailbox.last_uid or 0)
        if one_by_one:
            # Sizes are not asked for all at once either: that may be what the server refuses.
            batches = [[uid] for uid in uids[:ONE_BY_ONE_MAX]]
        else:
            batches = folder.batches(uids, folder.sizes(uids))
        for batch in batches:
            _imap_deliver(ctx, folder, _imap_store_batch(mailbox, folder, batch))
    return outcome


def _imap_deliver(ctx: PollContext, folder: ImapFolder, rows: list[InboundMessage]) -> None:
    """Committed rows: renew the lease, act on the server, process."""
    if not rows:
        return
    ctx.renew()
    outcome = ctx.outcome
    outcome.action_error = _imap_act(ctx.mailbox, folder, rows) or outcome.action_error
    outcome.stored += [row.pk for row in rows]
    ctx.process(rows)


def _imap_refused(mailbox: Mailbox, err: FetchRefused) -> None:
    """Record the one message the server refused: a new row past the cursor, or another
    refusal of one asked for again."""
    (uid,) = err.uids
    logger.warning("channel %s: %s", mailbox.channel_id, err)
    row = InboundMessage.objects.filter(
        mailbox=mailbox, uidvalidity=mailbox.uidvalidity, uid=uid
    ).first()
    if row is not None:
        refetch_failed(row=row, reason=err.reason)
        return
    message_unreadable_store(
        mailbox=mailbox, uid=uid, reason=err.reason, checkpoint_uid=max(uid, mailbox.last_uid or 0)
    )


def _imap_refetch(mailbox: Mailbox, folder: ImapFolder) -> list[InboundMessage]:
    """Messages refused before, asked for again when due; refused again raises FetchRefused."""
    rows = []
    for row in refetch_due(mailbox=mailbox):
        got = folder.fetch([row.uid], max_size=mailbox.max_message_size)
        if not got:
            refetch_failed(row=row, reason=row.fetch_error, gone=True)
            continue
        (m,) = got
        fetched = Fetched(
            raw=m.raw, size=m.size, uid=m.uid, server_date=m.internaldate, truncated=m.truncated
        )
        rows.append(message_refetched(row=row, fetched=fetched))
    return rows


def _imap_start_cursor(mailbox: Mailbox, folder: ImapFolder) -> None:
    state = folder.state
    top = (state.uidnext or (max(folder.all_uids(), default=0) + 1)) - 1
    cursor_start(
        mailbox=mailbox,
        uidvalidity=state.uidvalidity,
        last_uid=top,
        note=f"Connected to {mailbox.folder}: mail from now on; the {state.exists} message(s) "
        "already there were left as they are",
    )


def _imap_uidvalidity_changed(mailbox: Mailbox, folder: ImapFolder) -> None:
    """RFC 3501 2.3.1.1: old UIDs mean nothing now. Rescan the folder; what is already
    stored is recognised by Message-ID, size and sha256 and not stored twice."""
    through = max(folder.all_uids(), default=0)
    old = mailbox.uidvalidity
    Mailbox.objects.filter(pk=mailbox.pk).update(
        uidvalidity=folder.state.uidvalidity,
        last_uid=0,
        rescan_through_uid=through,
        cursor_note=f"The server renumbered {mailbox.folder} (UIDVALIDITY {old} → "
        f"{folder.state.uidvalidity}); rescanned, already-stored mail recognised",
    )
    mailbox.uidvalidity, mailbox.last_uid = folder.state.uidvalidity, 0
    mailbox.rescan_through_uid = through
    logger.warning(
        "channel %s: UIDVALIDITY changed from %s to %s; rescanning",
        mailbox.channel_id,
        old,
        folder.state.uidvalidity,
    )


def _imap_store_batch(mailbox: Mailbox, folder: ImapFolder, batch: Sequence[int]):
    fetched = [
        Fetched(
            raw=m.raw, size=m.size, uid=m.uid, server_date=m.internaldate, truncated=m.truncated
        )
        for m in folder.fetch(batch, max_size=mailbox.max_message_size)
    ]
    return messages_store(
        mailbox=mailbox,
        uidvalidity=mailbox.uidvalidity,
        fetched=fetched,
        checkpoint_uid=max(batch),
    )


def _imap_finish_actions(mailbox: Mailbox, folder: ImapFolder) -> ProviderError | None:
    if mailbox.after_import == Mailbox.AfterImport.LEAVE:
        return None
    return _imap_act(mailbox, folder, pending_server_actions(mailbox=mailbox))


def _imap_act(mailbox: Mailbox, folder: ImapFolder, rows) -> ProviderError | None:
    """Run the after-import action on committed rows; an error is reported, mail stays safe."""
    rows = [row for row in rows if not row.server_action_done]
    if not rows:
        return None
    uids = [row.uid for row in rows]
    action = mailbox.after_import
    try:
        if action == Mailbox.AfterImport.SEEN:
            folder.mark_seen(uids)
        elif action == Mailbox.AfterImport.MOVE:
            _imap_move(mailbox, folder, rows)
        elif action == Mailbox.AfterImport.DELETE:
            folder.delete(uids)
    except ProviderError as err:
        return err
    server_actions_done(message_ids=[row.pk for row in rows])
    return None


def _imap_move(mailbox: Mailbox, folder: ImapFolder, rows) -> None:
    """Move; what an earlier COPY already copied (the delete after it did not happen) is only
    deleted now, so the move-to folder never gets a second copy."""
    copied = [row.uid for row in rows if row.server_copied]
    if copied:
        folder.delete(copied)
    folder.move(
        [row.uid for row in rows if not row.server_copied],
        mailbox.move_to_folder,
        copied=lambda uids: server_copied_mark(mailbox=mailbox, uids=uids),
    )


# --- POP3 -----------------------------------------------------------------------------------


def _pop3_fetch(ctx: PollContext, settings: IncomingSettings) -> PollOutcome:
    mailbox, outcome = ctx.mailbox, ctx.outcome
    with pop3_connect(settings, network_policy()) as client:
        maildrop = Pop3Maildrop(client)
        listing = maildrop.messages()
        if mailbox.cursor_set_at is None:
            known_uidls_replace(mailbox=mailbox, uidls=[m.uidl for m in listing])
            cursor_start(
                mailbox=mailbox,
                uidvalidity=None,
                last_uid=None,
                note=f"Connected: mail from now on; the {len(listing)} message(s) already on the "
                "server were left as they are",
            )
            return outcome
        if rows := _pop3_refetch(mailbox, maildrop, listing):
            ctx.renew()
            outcome.stored += [row.pk for row in rows]
            ctx.process(rows)
        seen = pop3_seen_uidls(mailbox=mailbox)
        for batch in _pop3_batches([m for m in listing if m.uidl not in seen]):
            rows = _pop3_store_batch(mailbox, maildrop, batch)
            ctx.renew()
            outcome.stored += [row.pk for row in rows]
            ctx.process(rows)
        outcome.action_error = _pop3_act(mailbox, maildrop, listing)
    return outcome


def _pop3_batches(messages: list[Pop3Message]):
    batch, total = [], 0
    for message in messages:
        if batch and (total + message.size > POP3_BATCH_BYTES or len(batch) >= POP3_BATCH_COUNT):
            yield batch
            batch, total = [], 0
        batch.append(message)
        total += message.size
    if batch:
        yield batch


def _pop3_store_batch(mailbox: Mailbox, maildrop: Pop3Maildrop, batch: list[Pop3Message]):
    fetched = []
    for message in batch:
        try:
            got = maildrop.retrieve(message, max_size=mailbox.max_message_size)
        except MessageUnreadable as err:
            # Recorded in its place and asked for again later; it never blocks the ones behind.
            fetched.append(
                Fetched(raw=b"", size=message.size, uidl=message.uidl, unreadable=err.reason)
            )
            continue
        fetched.append(Fetched(raw=got.raw, size=got.size, uidl=got.uidl, truncated=got.truncated))
    rows = messages_store(mailbox=mailbox, uidvalidity=None, fetched=fetched)
    return [row for row in rows if not row.fetch_error]


def _pop3_refetch(mailbox: Mailbox, maildrop: Pop3Maildrop, listing) -> list[InboundMessage]:
    """Messages refused before, asked for again when due, by their UIDL."""
    by_uidl = {m.uidl: m for m in listing}
    rows = []
    for row in refetch_due(mailbox=mailbox):
        message = by_uidl.get(row.uidl)
        if message is None:
            refetch_failed(row=row, reason=row.fetch_error, gone=True)
            continue
        try:
            got = maildrop.retrieve(message, max_size=mailbox.max_message_size)
        except MessageUnreadable as err:
            refetch_failed(row=row, reason=err.reason)
            continue
        fetched = Fetched(raw=got.raw, size=got.size, uidl=got.uidl, truncated=got.truncated)
        rows.append(message_refetched(row=row, fetched=fetched))
    return rows


def _pop3_act(mailbox: Mailbox, maildrop: Pop3Maildrop, listing) -> ProviderError | None:
    """Delete committed messages (RFC 1939: DELE takes effect at QUIT), or just QUIT."""
    to_delete = []
    if mailbox.after_import == Mailbox.AfterImport.DELETE:
        by_uidl = {m.uidl: m for m in listing}
        pending = [r for r in pending_server_actions(mailbox=mailbox) if r.uidl in by_uidl]
        to_delete = [(r.pk, by_uidl[r.uidl]) for r in pending]
    try:
        maildrop.delete(m for _, m in to_delete)
        maildrop.quit()
    except ProviderError as err:
        return err
    server_actions_done(message_ids=[pk for pk, _ in to_delete])
    return None

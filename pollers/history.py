"""Importing older mail in the background, in batches, with progress and cancel.

It works in slices of about half a minute and then hands back to the queue (the task enqueues
the next slice), so polls of new mail, queued meanwhile, run between slices even on a single
worker: new mail is never delayed behind an import. Imported history is left on the server as
it is, whatever the channel's after-import action.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import F, Q
from django.utils import timezone

from mailboxes.models import KnownUidl, Mailbox
from mailboxes.preview import header_date
from mailboxes.preview import parser as preview_parser
from mailboxes.services import mailbox_incoming_settings, network_policy
from mailboxes.storage import Fetched, message_unreadable_store, messages_store
from pollers.services import rows_process
from providers.errors import FetchRefused, MessageUnreadable, ProviderError
from providers.imap import imap_connect
from providers.imap_folder import ImapFolder
from providers.pop3 import pop3_connect
from providers.pop3_maildrop import Pop3Maildrop

logger = logging.getLogger(__name__)
ImportState = Mailbox.ImportState
SLICE_SECONDS = 30
LEASE_SECONDS = 300
SIZES_CHUNK = 1000
ONE_BY_ONE_MAX = 50  # after a refusal, messages asked for one at a time in a slice
RESUME_GRACE_SECONDS = 120  # a queued slice that has not started by then was lost


@dataclass(frozen=True)
class SliceResult:
    more: bool  # another slice is needed


def history_import_slice(*, mailbox_id: int, slice_seconds: float = SLICE_SECONDS) -> SliceResult:
    owner = uuid.uuid4().hex
    if not _lease(mailbox_id, owner):
        return SliceResult(more=False)  # another worker runs it, or it is not queued/running
    mailbox = Mailbox.objects.get(pk=mailbox_id)
    try:
        if mailbox.import_state == ImportState.QUEUED:
            _start(mailbox)
        runner = _pop3_slice if mailbox.protocol == Mailbox.Protocol.POP3 else _imap_slice
        more = runner(mailbox, deadline=time.monotonic() + slice_seconds)
        if not more and _still_running(mailbox):
            _finish(mailbox, ImportState.DONE, _done_words(mailbox))
        return SliceResult(more=more and _still_running(mailbox))
    except ProviderError as err:
        _finish(mailbox, ImportState.FAILED, f"Stopped: {err} Choose again to resume.")
        logger.warning("channel %s: import of older mail failed (%s)", mailbox.channel_id, err.kind)
        return SliceResult(more=False)
    finally:
        # Released, with a deadline for the next slice: past it, the sweep re-enqueues one.
        Mailbox.objects.filter(pk=mailbox_id, import_lease_owner=owner).update(
            import_lease_owner="", import_lease_expires_at=_resume_deadline()
        )


def history_stalled(*, now=None) -> list[int]:
    """Imports whose worker died, or whose next slice the broker lost: to be enqueued again."""
    now = now or timezone.now()
    return list(
        Mailbox.objects.filter(
            import_state__in=[ImportState.QUEUED, ImportState.RUNNING],
            import_lease_expires_at__lt=now,
        ).values_list("pk", flat=True)
    )


def _resume_deadline():
    return timezone.now() + timedelta(seconds=RESUME_GRACE_SECONDS)


# --- IMAP: UIDs up to the cursor as it stood when the administrator chose -------------------


def _imap_slice(mailbox: Mailbox, *, deadline: float) -> bool:
    with imap_connect(mailbox_incoming_settings(mailbox=mailbox), network_policy()) as client:
        folder = ImapFolder(client, mailbox.folder, readonly=True)
        if folder.state.uidvalidity != mailbox.uidvalidity:
            raise ProviderError(
                "The server renumbered the folder (UIDVALIDITY changed) during the import.",
                permanent=True,
            )
        uids = _imap_wanted(mailbox, folder)
        if mailbox.import_total is None:
            _set_total(mailbox, len(uids))
        pending = [uid for uid in uids if uid > mailbox.import_last_uid]
        # Sizes a chunk at a time: a slice that stops early has not asked for them all.
        for start in range(0, len(pending), SIZES_CHUNK):
            chunk = pending[start : start + SIZES_CHUNK]
            try:
                for batch in folder.batches(chunk, folder.sizes(chunk)):
                    _imap_import_batch(mailbox, folder, batch)
                    # At least one batch per slice, so every slice makes progress.
                    if batch[-1] != pending[-1] and (
                        time.monotonic() > deadline or not _still_running(mailbox)
                    ):
                        return True
            except FetchRefused:
                # The server refuses one of them (perhaps hanging up): the next ones one at a
                # time, in sessions of their own, then a new slice.
                left = [uid for uid in chunk if uid > mailbox.import_last_uid]
                _imap_import_one_by_one(mailbox, left[:ONE_BY_ONE_MAX])
                return True
    return False


def _imap_import_batch(mailbox: Mailbox, folder: ImapFolder, batch: list[int]) -> None:
    fetched = [
        Fetched(
            raw=m.raw, size=m.size, uid=m.uid, server_date=m.internaldate, truncated=m.truncated
        )
        for m in folder.fetch(batch, max_size=mailbox.max_message_size)
    ]
    rows = messages_store(
        mailbox=mailbox, uidvalidity=mailbox.uidvalidity, fetched=fetched, leave_on_server=True
    )
    _advance(mailbox, done=len(batch), last_uid=max(batch))
    rows_process(rows)


def _imap_import_one_by_one(mailbox: Mailbox, batch: list[int]) -> None:
    """Each message on its own: the one the server refuses is recorded (and asked for again
    by later polls, mailboxes.unreadable), the others are imported."""
    left = list(batch)
    while left:
        with imap_connect(mailbox_incoming_settings(mailbox=mailbox), network_policy()) as client:
            folder = ImapFolder(client, mailbox.folder, readonly=True)
            while left:
                uid = left.pop(0)
                try:
                    _imap_import_batch(mailbox, folder, [uid])
                except FetchRefused as err:
                    logger.warning("channel %s: %s", mailbox.channel_id, err)
                    message_unreadable_store(
                        mailbox=mailbox, uid=uid, reason=err.reason, leave_on_server=True
                    )
                    _advance(mailbox, done=1, last_uid=uid)
                    if err.connection_lost:
                        break


def _imap_wanted(mailbox: Mailbox, folder: ImapFolder) -> list[int]:
    through = mailbox.import_through_uid or 0
    if through < 1:
        return []
    if mailbox.first_sync == Mailbox.FirstSync.DAYS:
        since = (timezone.now() - timedelta(days=mailbox.first_sync_days or 0)).date()
        return folder.uids_since(since, through_uid=through)
    return [uid for uid in folder.all_uids() if uid <= through]


# --- POP3: the UIDLs that were on the server when the channel connected ---------------------


def _pop3_slice(mailbox: Mailbox, *, deadline: float) -> bool:
    with pop3_connect(mailbox_incoming_settings(mailbox=mailbox), network_policy()) as client:
        maildrop = Pop3Maildrop(client)
        known = set(KnownUidl.objects.filter(mailbox=mailbox).values_list("uidl", flat=True))
        wanted = [m for m in maildrop.messages() if m.uidl in known]
        if mailbox.import_total is None:
            _set_total(mailbox, len(wanted))
        more = False
        for i, message in enumerate(wanted):
            _pop3_import_one(mailbox, maildrop, message)
            if i + 1 < len(wanted) and (time.monotonic() > deadline or not _still_running(mailbox)):
                more = True
                break
        maildrop.quit()
    return more


def _pop3_import_one(mailbox: Mailbox, maildrop: Pop3Maildrop, message) -> None:
    if mailbox.first_sync == Mailbox.FirstSync.DAYS and _pop3_before_window(
        mailbox, maildrop, message
    ):
        _advance(mailbox, done=1, skipped=1)  # stays known: history, never fetched
        return
    try:
        got = maildrop.retrieve(message, max_size=mailbox.max_message_size)
    except MessageUnreadable as err:
        logger.info("channel %s: older message unreadable: %s", mailbox.channel_id, err)
        KnownUidl.objects.filter(mailbox=mailbox, uidl=message.uidl).delete()
        _advance(mailbox, done=1)
        return
    rows = messages_store(
        mailbox=mailbox,
        uidvalidity=None,
        leave_on_server=True,
        fetched=[Fetched(raw=got.raw, size=got.size, uidl=got.uidl, truncated=got.truncated)],
    )
    # Stored now: it is no longer "history that predates the channel".
    KnownUidl.objects.filter(mailbox=mailbox, uidl=message.uidl).delete()
    _advance(mailbox, done=1)
    rows_process(rows)


def _pop3_before_window(mailbox: Mailbox, maildrop: Pop3Maildrop, message) -> bool:
    """POP3 has no arrival dates: the Date header decides (TOP n 0). Undated mail is imported:
    importing one message too many is safer than hiding one."""
    try:
        headers = maildrop.retrieve(message, max_size=0).raw
    except MessageUnreadable:
        return False  # the import itself records it as unreadable
    when = header_date(preview_parser.parsebytes(headers))
    cutoff = timezone.now() - timedelta(days=mailbox.first_sync_days or 0)
    return when is not None and when < cutoff


# --- State on the channel row ---------------------------------------------------------------


def _lease(mailbox_id: int, owner: str) -> bool:
    now = timezone.now()
    free = Q(import_lease_owner="") | Q(import_lease_expires_at__lt=now)
    return bool(
        Mailbox.objects.filter(
            free, pk=mailbox_id, import_state__in=[ImportState.QUEUED, ImportState.RUNNING]
        ).update(
            import_lease_owner=owner, import_lease_expires_at=now + timedelta(seconds=LEASE_SECONDS)
        )
    )


def _start(mailbox: Mailbox) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(
        import_state=ImportState.RUNNING, import_started_at=timezone.now()
    )
    mailbox.import_state = ImportState.RUNNING


def _set_total(mailbox: Mailbox, total: int) -> None:
    Mailbox.objects.filter(pk=mailbox.pk).update(import_total=total)
    mailbox.import_total = total


def _advance(mailbox: Mailbox, *, done: int, last_uid: int | None = None, skipped: int = 0) -> None:
    fields = {
        "import_done": F("import_done") + done,
        "import_skipped": F("import_skipped") + skipped,
        "import_lease_expires_at": timezone.now() + timedelta(seconds=LEASE_SECONDS),
    }
    if last_uid is not None:
        fields["import_last_uid"] = last_uid
        mailbox.import_last_uid = last_uid
    Mailbox.objects.filter(pk=mailbox.pk).update(**fields)


def _still_running(mailbox: Mailbox) -> bool:
    return Mailbox.objects.filter(pk=mailbox.pk, import_state=ImportState.RUNNING).exists()


def _done_words(mailbox: Mailbox) -> str:
    done, skipped = Mailbox.objects.values_list("import_done", "import_skipped").get(pk=mailbox.pk)
    words = f"Imported {done - skipped:,} older message(s)"
    return words + (f"; {skipped:,} dated before the window were left alone." if skipped else ".")


def _finish(mailbox: Mailbox, state: str, message: str) -> None:
    Mailbox.objects.filter(pk=mailbox.pk, import_state=ImportState.RUNNING).update(
        import_state=state, import_finished_at=timezone.now(), import_message=message[:500]
    )

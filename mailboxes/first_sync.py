"""The administrator's choice of older mail to import, and the import's progress in words.

The import itself runs in pollers (pollers/history.py); mailboxes only records the choice and
asks for it through a signal, so it never imports pollers.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from mailboxes.models import Mailbox
from mailboxes.signals import import_requested

FirstSync = Mailbox.FirstSync
ImportState = Mailbox.ImportState
ACTIVE = (ImportState.QUEUED, ImportState.RUNNING)
IMPORT_START_GRACE = timedelta(seconds=120)


def first_sync_choose(*, mailbox: Mailbox, choice: str, days: int | None = None) -> None:
    """Record the choice; for "last N days" or "everything", queue the import of older mail.

    The import reaches up to where the cursor stands now: everything after it is new mail,
    which the regular polls fetch meanwhile.
    """
    if choice == FirstSync.DAYS and not days:
        raise ValueError("Say how many days to import.")
    if mailbox.import_state in ACTIVE:
        raise ValueError("An import of older mail is running: cancel it first.")
    fields = {
        "first_sync": choice,
        "first_sync_days": days if choice == FirstSync.DAYS else None,
        "first_sync_chosen_at": timezone.now(),
    }
    if choice != FirstSync.FROM_NOW:
        if mailbox.cursor_set_at is None:
            raise ValueError(
                "The channel has not connected yet: test it or wait for its "
                "first poll, then choose."
            )
        fields.update(
            import_state=ImportState.QUEUED,
            import_total=None,
            import_done=0,
            import_skipped=0,
            import_last_uid=0,
            import_through_uid=mailbox.last_uid,
            import_started_at=None,
            import_finished_at=None,
            import_message="",
            # The import task should start by then; past it, beat's sweep enqueues it again.
            import_lease_expires_at=timezone.now() + IMPORT_START_GRACE,
        )
    with transaction.atomic():
        Mailbox.objects.filter(pk=mailbox.pk).update(**fields)
        if choice != FirstSync.FROM_NOW:
            transaction.on_commit(
                lambda: import_requested.send(sender=Mailbox, mailbox_id=mailbox.pk)
            )
    for name, value in fields.items():
        setattr(mailbox, name, value)


def first_sync_cancel(*, mailbox: Mailbox) -> bool:
    """Stop a running import after its current batch; what it stored stays stored."""
    return bool(
        Mailbox.objects.filter(pk=mailbox.pk, import_state__in=ACTIVE).update(
            import_state=ImportState.CANCELLED,
            import_finished_at=timezone.now(),
            import_message="Cancelled by an administrator.",
        )
    )


def import_progress(mailbox: Mailbox) -> str:
    """ "1,200 / 5,000 imported, 85 a second, about 45 s left" — for the channel page."""
    if not mailbox.import_state:
        return "No import of older mail."
    done, total = mailbox.import_done, mailbox.import_total
    head = f"{mailbox.get_import_state_display()}: {done:,}" + (f" / {total:,}" if total else "")
    parts = [f"{head} imported"]
    if mailbox.import_state == ImportState.RUNNING and mailbox.import_started_at and done:
        elapsed = max((timezone.now() - mailbox.import_started_at).total_seconds(), 0.001)
        rate = done / elapsed
        parts.append(f"{rate:,.0f} a second")
        if total:
            parts.append(f"about {timedelta(seconds=int((total - done) / rate))} left")
    if mailbox.import_message:
        parts.append(mailbox.import_message)
    return ", ".join(parts) + "."

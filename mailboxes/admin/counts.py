"""What each channel received lately, on the channel list and page: one query for the page.

Every count is a correlated subquery the database answers from an index (`stored_at`, or
`mailbox, outcome` for what is still failed), so the list costs the same query however many
channels it shows, and never joins the whole ledger.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from mailboxes.models import InboundMessage, Mailbox

Outcome = InboundMessage.Outcome
WINDOW = timedelta(hours=24)
COUNT_FIELDS = ["recent_counts", "failed_link"]


def message_counts(queryset):
    """Annotate channels with what they stored in the last 24 hours, what became of it, and
    how many of their messages are failed now (waiting for a retry)."""
    since = timezone.now() - WINDOW
    return queryset.annotate(
        stored_24h=_count(stored_at__gte=since),
        processed_24h=_count(stored_at__gte=since, outcome=Outcome.PROCESSED),
        failed_24h=_count(stored_at__gte=since, outcome=Outcome.FAILED),
        failed_now=_count(outcome=Outcome.FAILED),
    )


def _count(**filters):
    rows = InboundMessage.objects.filter(mailbox=OuterRef("pk"), **filters).order_by()
    counted = rows.values("mailbox").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def failed_url(mailbox: Mailbox) -> str:
    """The ledger, showing this channel's failed messages with their reasons."""
    query = urlencode({"mailbox__id__exact": mailbox.pk, "outcome__exact": Outcome.FAILED})
    return f"{reverse('admin:mailboxes_inboundmessage_changelist')}?{query}"


class MessageCountsMixin:
    """For the channel ModelAdmin: the annotated queryset and the two columns."""

    def get_queryset(self, request):
        return message_counts(super().get_queryset(request))

    @admin.display(description="last 24 hours")
    def recent_counts(self, mailbox: Mailbox) -> str:
        if getattr(mailbox, "stored_24h", None) is None:
            return "-"  # the add form: nothing received yet
        return format_html(
            '<span class="postroom-counts">{} stored · {} processed · {} failed</span>',
            mailbox.stored_24h,
            mailbox.processed_24h,
            mailbox.failed_24h,
        )

    @admin.display(description="failed, to retry", ordering="failed_now")
    def failed_link(self, mailbox: Mailbox) -> str:
        failed = getattr(mailbox, "failed_now", None)
        if not failed:
            return "0" if failed == 0 else "-"
        return format_html(
            '<a class="postroom-failed" href="{}" style="color:#d93025">{} failed</a>',
            failed_url(mailbox),
            failed,
        )

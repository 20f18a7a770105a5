"""The outbox in the admin: state, attempts, last error, resend."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html

from mailboxes.models import OutboundMessage
from mailboxes.outbox import outbound_resend

ERROR_BRIEF = 160  # characters of the last error in the list; the whole text on the row
STATE_COLOURS = {
    OutboundMessage.State.QUEUED: "#8a8a8a",
    OutboundMessage.State.SENDING: "#1a73e8",
    OutboundMessage.State.SENT: "#1e8e3e",
    OutboundMessage.State.RETRYING: "#d68a00",
    OutboundMessage.State.FAILED: "#d93025",
    OutboundMessage.State.BOUNCED: "#a50e0e",
}


@admin.register(OutboundMessage)
class OutboundMessageAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "mailbox",
        "kind",
        "subject",
        "recipient_list",
        "state_badge",
        "attempts",
        "last_error_brief",
        "next_attempt_at",
        "sent_at",
    ]
    list_filter = ["state", "kind", "mailbox"]
    list_select_related = ["mailbox"]
    search_fields = ["message_id", "subject", "recipients"]
    date_hierarchy = "created_at"
    actions = ["resend"]
    fields = [
        "mailbox",
        "kind",
        "message_id",
        "mail_from",
        "recipients",
        "subject",
        "state",
        "attempts",
        "max_attempts",
        "next_attempt_at",
        "last_error",
        "last_error_at",
        "server_reply",
        "sent_at",
        "bounced_at",
        "bounce_text",
        "copied_to_sent",
        "created_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False  # mail is sent from a case, or by "Send test mail" on a channel

    @admin.display(description="to")
    def recipient_list(self, message: OutboundMessage) -> str:
        return ", ".join(message.recipients)

    @admin.display(description="last error")
    def last_error_brief(self, message: OutboundMessage) -> str:
        text = message.last_error
        return text if len(text) <= ERROR_BRIEF else text[: ERROR_BRIEF - 1] + "…"

    @admin.display(description="state", ordering="state")
    def state_badge(self, message: OutboundMessage) -> str:
        return format_html(
            '<span style="color:{}" title="{}">&#9679; {}</span>',
            STATE_COLOURS[message.state],
            message.bounce_text or message.last_error,
            message.get_state_display(),
        )

    @admin.action(description="Send again (same message, same Message-ID)", permissions=["change"])
    def resend(self, request, queryset):
        count = outbound_resend(message_ids=list(queryset.values_list("pk", flat=True)))
        skipped = queryset.count() - count
        messages.success(
            request,
            f"{count} message(s) queued again."
            + (f" {skipped} not failed, left alone." if skipped else ""),
        )

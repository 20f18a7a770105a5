"""The ingestion ledger in the admin: where did that customer's email go?"""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html

from cases.services import inbound_replay
from mailboxes.models import InboundMessage

OUTCOME_COLOURS = {
    InboundMessage.Outcome.PENDING: "#8a8a8a",
    InboundMessage.Outcome.PROCESSED: "#1e8e3e",
    InboundMessage.Outcome.IGNORED: "#5f6368",
    InboundMessage.Outcome.FAILED: "#d93025",
    InboundMessage.Outcome.HELD: "#d68a00",
}


@admin.register(InboundMessage)
class InboundMessageAdmin(admin.ModelAdmin):
    list_display = [
        "stored_at",
        "mailbox",
        "sender",
        "subject",
        "size",
        "outcome_badge",
        "server_identity",
    ]
    list_filter = ["outcome", "mailbox", "truncated", "server_action_done"]
    list_select_related = ["mailbox"]
    search_fields = ["message_id", "sender", "subject", "sha256", "uidl"]
    date_hierarchy = "stored_at"
    actions = ["replay"]
    fieldsets = [
        (
            "Received",
            {
                "fields": [
                    "mailbox",
                    "server_identity",
                    "message_id",
                    "size",
                    "sha256",
                    "truncated",
                    "server_date",
                    "stored_at",
                    "server_action_done",
                ]
            },
        ),
        (
            "Outcome",
            {
                "fields": [
                    "outcome",
                    "outcome_reason",
                    "result",
                    "sender",
                    "subject",
                    "processed_at",
                    "attempts",
                ]
            },
        ),
    ]

    def get_readonly_fields(self, request, obj=None):
        # The ledger is a record: nothing in it is edited by hand.
        return [f for fields in (fs[1]["fields"] for fs in self.fieldsets) for f in fields]

    def has_add_permission(self, request):
        return False

    @admin.display(description="outcome", ordering="outcome")
    def outcome_badge(self, message: InboundMessage) -> str:
        return format_html(
            '<span style="color:{}" title="{}">&#9679; {}</span>',
            OUTCOME_COLOURS[message.outcome],
            message.outcome_reason,
            message.get_outcome_display(),
        )

    @admin.display(description="server identity")
    def server_identity(self, message: InboundMessage) -> str:
        return message.server_identity

    @admin.action(description="Replay (process again)", permissions=["change"])
    def replay(self, request, queryset):
        outcomes = [inbound_replay(message_id=pk) for pk in queryset.values_list("pk", flat=True)]
        failed = sum(1 for o in outcomes if o == InboundMessage.Outcome.FAILED)
        level = messages.WARNING if failed else messages.SUCCESS
        messages.add_message(
            request, level, f"Replayed {len(outcomes)} message(s); {failed} failed again."
        )

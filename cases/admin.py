"""Cases, contacts and the ingestion ledger in the admin: where did that customer's email go?"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.text import Truncator
from django.views.decorators.http import require_POST

from cases.models import Attachment, Case, CaseMessage, Contact, QueueItem, WebhookDelivery
from cases.retention import contact_erase
from cases.services import inbound_replay
from cases.webhooks import webhook_retry_now
from mailboxes.models import InboundMessage
from mailboxes.services import mailbox_fetch_now
from mailboxes.unreadable import refetch_request

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
        "reason",
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

    @admin.display(description="reason")
    def reason(self, message: InboundMessage) -> str:
        """Why, in the list itself; a failed message gets its "Retry" button beside it.
        The button submits the changelist's own form (a form cannot nest) to the retry URL."""
        if message.outcome != InboundMessage.Outcome.FAILED:
            return Truncator(message.outcome_reason).chars(120)
        return format_html(
            '{} <button type="submit" class="button" formaction="{}" formmethod="post">'
            "Retry</button>",
            Truncator(message.outcome_reason).chars(300),
            reverse("admin:mailboxes_inboundmessage_retry", args=[message.pk]),
        )

    def get_urls(self):
        retry = self.admin_site.admin_view(self.retry_view)
        return [
            path("<int:pk>/retry/", retry, name="mailboxes_inboundmessage_retry"),
            *super().get_urls(),
        ]

    @method_decorator(require_POST)
    def retry_view(self, request, pk: int):
        message = get_object_or_404(InboundMessage, pk=pk)
        if not self.has_change_permission(request, message):
            raise PermissionDenied
        if refetch_request(message_id=message.pk):
            # Never read: there is nothing to process yet; the server is asked again.
            mailbox_fetch_now(mailbox=message.mailbox)
            messages.success(request, f"{message}: the server is asked for it again now.")
            return self._back(request)
        outcome = inbound_replay(message_id=message.pk)
        message.refresh_from_db()
        level = messages.ERROR if outcome == InboundMessage.Outcome.FAILED else messages.SUCCESS
        label = message.get_outcome_display().lower()
        messages.add_message(
            request, level, f"“{message}”: {label}. {message.outcome_reason}".strip()
        )
        return self._back(request)

    def _back(self, request) -> HttpResponseRedirect:
        back = request.META.get("HTTP_REFERER", "")
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
            back = reverse("admin:mailboxes_inboundmessage_changelist")
        return HttpResponseRedirect(back)

    @admin.action(description="Replay (process again)", permissions=["change"])
    def replay(self, request, queryset):
        outcomes = [inbound_replay(message_id=pk) for pk in queryset.values_list("pk", flat=True)]
        failed = sum(1 for o in outcomes if o == InboundMessage.Outcome.FAILED)
        level = messages.WARNING if failed else messages.SUCCESS
        messages.add_message(
            request, level, f"Replayed {len(outcomes)} message(s); {failed} failed again."
        )


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ["address", "name", "created_at"]
    search_fields = ["address", "name"]
    actions = ["erase"]

    @admin.action(
        description="Erase contact: delete their cases, messages and files for good",
        permissions=["delete"],
    )
    def erase(self, request, queryset):
        self.log_deletions(request, queryset)  # the admin's history records who erased whom
        cases = files = received = 0
        for contact in list(queryset):
            erased = contact_erase(contact=contact)
            cases, received, files = (
                cases + erased.cases,
                received + erased.messages,
                files + erased.files,
            )
        self.message_user(
            request,
            f"Erased {queryset.model._meta.verbose_name_plural}: {cases} case(s), {received} "
            f"received message(s), {files} file(s). A re-fetch of the same mail is not stored.",
            messages.SUCCESS,
        )


class CaseMessageInline(admin.StackedInline):
    """The thread on the case page, oldest first: a record, not edited here."""

    model = CaseMessage
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ["direction", "date", "sender", "subject", "joined", "text", "files"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="joined the case by")
    def joined(self, message: CaseMessage) -> str:
        label = message.get_joined_by_display()
        return f"{label}: {message.joined_detail}" if message.joined_detail else label

    @admin.display(description="attachments")
    def files(self, message: CaseMessage) -> str:
        return ", ".join(
            a.filename if a.kept else f"{a.filename} (not kept: {a.not_kept_reason})"
            for a in message.attachments.all()
        )


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ["case_reference", "subject", "address", "mailbox", "state", "created_at"]
    list_filter = ["state", "mailbox"]
    list_select_related = ["mailbox", "contact"]
    search_fields = ["subject", "address", "contact__name"]
    date_hierarchy = "created_at"
    readonly_fields = ["mailbox", "contact", "address", "created_at", "updated_at"]
    fields = ["subject", "state", *readonly_fields]
    inlines = [CaseMessageInline]

    def has_add_permission(self, request):
        return False  # cases come from mail

    @admin.display(description="case", ordering="pk")
    def case_reference(self, case: Case) -> str:
        return f"#{case.reference}"


class AttachmentInline(admin.TabularInline):
    model = Attachment
    extra = 0
    can_delete = False
    fields = ["filename", "content_type", "size", "kept", "not_kept_reason", "file"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(CaseMessage)
class CaseMessageAdmin(admin.ModelAdmin):
    """One message in full: the text as it came beside the new part."""

    list_display = ["date", "case", "direction", "sender", "subject", "joined_by"]
    list_select_related = ["case"]
    list_filter = ["direction", "joined_by"]
    search_fields = ["message_id", "sender", "subject"]
    inlines = [AttachmentInline]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in CaseMessage._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """The webhook flow's POSTs: which got through, which are retrying, and why not."""

    list_display = ["created_at", "mailbox", "state", "attempts", "next_attempt_at", "last_error"]
    list_filter = ["state", "mailbox"]
    list_select_related = ["mailbox"]
    search_fields = ["url", "last_error"]
    actions = ["retry_now"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in WebhookDelivery._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Retry now", permissions=["change"])
    def retry_now(self, request, queryset):
        count = webhook_retry_now(delivery_ids=list(queryset.values_list("pk", flat=True)))
        messages.success(request, f"{count} delivery(ies) will be sent again now.")


@admin.register(QueueItem)
class QueueItemAdmin(admin.ModelAdmin):
    list_display = ["created_at", "mailbox", "sender", "subject", "state", "taken_by", "case"]
    list_filter = ["state", "mailbox"]
    list_select_related = ["mailbox", "taken_by", "case"]
    search_fields = ["sender", "subject"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in QueueItem._meta.fields]

    def has_add_permission(self, request):
        return False

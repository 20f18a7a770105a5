"""The channel admin: declarative first, then a few hooks that call services."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.contrib import admin, messages
from django.db import models
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from mailboxes.admin.counts import COUNT_FIELDS, MessageCountsMixin
from mailboxes.admin.first_sync import FIRST_SYNC_FIELDS, FirstSyncAdminMixin
from mailboxes.admin.oauth import OAUTH_FIELDS, OAuthAdminMixin, health_badge, sign_in_label
from mailboxes.forms import FIELD_GROUPS, SECRET_FIELDS, AliasForm, MailboxForm, TestMailForm
from mailboxes.models import Alias, Mailbox, OutboundMessage
from mailboxes.outbox import outbound_send_test, outbox_resume
from mailboxes.services import (
    CURSOR_FIELDS,
    ConnectionReport,
    mailbox_cursor_reset,
    mailbox_delete_summary,
    mailbox_fetch_now,
    mailbox_set_online,
    mailbox_test_connection,
)

STALE_PUSH = "the IMAP IDLE listener holding the channel stopped renewing its lease."
STATUS_COLOURS = {
    Mailbox.Status.UNCHECKED: "#8a8a8a",
    Mailbox.Status.OK: "#1e8e3e",
    Mailbox.Status.WARNING: "#d68a00",
    Mailbox.Status.ERROR: "#d93025",
}
POLL_FIELDS = [
    "receiving",
    "last_polled_at",
    "last_poll_stored",
    "last_poll_duration_ms",
    "next_poll_at",
    "consecutive_failures",
    "cursor_note",
]
STATUS_FIELDS = [
    "outbox_paused",
    "outbox_paused_reason",
    "status_badge",
    "status_message",
    "last_checked_at",
    "last_message_count",
    "last_error",
    "last_error_at",
]
# Shown read-only beside the probe's settings (the FIELD_GROUPS group of that name).
ROUND_TRIP_FIELDS = [
    "round_trip_badge",
    "round_trip_detail",
    "round_trip_last_ms",
    "round_trip_last_ok_at",
    "round_trip_failures",
    "round_trip_sent_at",
    "round_trip_next_at",
]
ROUND_TRIP_COLOURS = {
    Mailbox.RoundTrip.NONE: STATUS_COLOURS[Mailbox.Status.UNCHECKED],
    Mailbox.RoundTrip.OK: STATUS_COLOURS[Mailbox.Status.OK],
    Mailbox.RoundTrip.LATE: STATUS_COLOURS[Mailbox.Status.WARNING],
    Mailbox.RoundTrip.FAILING: STATUS_COLOURS[Mailbox.Status.ERROR],
}
sensitive = method_decorator(sensitive_post_parameters(*SECRET_FIELDS))


def receiving_text(mailbox: Mailbox, now: datetime) -> str:
    """Push or polling, since when and why: what the IMAP IDLE listener last recorded."""
    if not mailbox.is_polled:
        return "Not receiving: the channel is offline or outbound-only."
    polling = f"Polling every {mailbox.refresh_interval} s"
    if mailbox.protocol != Mailbox.Protocol.IMAP:
        return f"{polling} (POP3 has no push)."
    if mailbox.on_push(now):
        safety = max(mailbox.refresh_interval, settings.POSTROOM_IDLE_SAFETY_POLL_SECONDS)
        return (
            f"Push (IMAP IDLE) since {_when(mailbox.push_since)}; "
            f"a safety-net poll every {safety} s."
        )
    if mailbox.push_state == Mailbox.PushState.PUSH:  # the listener died; beat will notice
        return f"{polling} since {_when(mailbox.idle_lease_expires_at)}: {STALE_PUSH}"
    if mailbox.push_state == Mailbox.PushState.POLLING:
        why = mailbox.push_detail or mailbox.get_push_reason_display()
        return f"{polling} since {_when(mailbox.push_since)}: {why}"
    return f"{polling}: no IMAP IDLE listener holds the channel (is manage.py listen running?)."


def _status_title(mailbox: Mailbox) -> str:
    if mailbox.health != mailbox.status:  # the round-trip probe made it worse: say why
        return f"{mailbox.status_message} Round trip: {mailbox.round_trip_detail}".strip()
    return mailbox.status_message


def _when(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "-"


# Changing any of these may mend an outgoing login the server refused (SMTP falls back to the
# incoming username and password when it has none of its own).
OUTGOING_LOGIN_FIELDS = {
    *FIELD_GROUPS["Send emails (outgoing server)"],
    "username",
    "password",
    "auth_type",
}


class AliasInline(admin.TabularInline):
    model = Alias
    form = AliasForm
    extra = 1
    verbose_name = "alias"
    verbose_name_plural = "Aliases: other addresses and names this channel can send as"


@admin.register(Mailbox)
class MailboxAdmin(MessageCountsMixin, OAuthAdminMixin, FirstSyncAdminMixin, admin.ModelAdmin):
    form = MailboxForm
    inlines = [AliasInline]
    list_display = [
        "name",
        "email_address",
        "channel_id",
        "protocol",
        "status_badge",
        "enabled",
        "last_checked_at",
        *COUNT_FIELDS,
    ]
    list_filter = ["status", "protocol", "enabled", "server_type", "auth_type"]
    search_fields = ["name", "email_address", "channel_id"]
    readonly_fields = [
        "channel_id",
        *STATUS_FIELDS,
        *COUNT_FIELDS,
        *POLL_FIELDS,
        *FIRST_SYNC_FIELDS,
        *OAUTH_FIELDS,
        *ROUND_TRIP_FIELDS,
    ]
    actions = ["take_online", "take_offline", "test_connection", "fetch_now", "resume_outbox"]
    save_on_top = True
    # An administrator typing "accounts.example.com/token" means https, never http.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fieldsets = [
        ("Channel", {"fields": ["channel_id", *FIELD_GROUPS["Channel"]]}),
        ("Status", {"fields": [*STATUS_FIELDS, *COUNT_FIELDS]}),
        ("OAuth2 sign-in", {"fields": OAUTH_FIELDS}),
        ("Polling", {"fields": POLL_FIELDS}),
        ("First sync", {"fields": FIRST_SYNC_FIELDS}),
        *(
            (title, {"fields": [*names, *(ROUND_TRIP_FIELDS if "Round-trip" in title else [])]})
            for title, names in FIELD_GROUPS.items()
            if title != "Channel"
        ),
    ]

    class Media:
        js = ["mailboxes/mailbox_form.js"]
        css = {"all": ["mailboxes/mailbox_form.css"]}

    @admin.display(description="receiving")
    def receiving(self, mailbox: Mailbox) -> str:
        return receiving_text(mailbox, timezone.now())

    @admin.display(description="status", ordering="status")
    def status_badge(self, mailbox: Mailbox) -> str:
        return format_html(
            '<span class="postroom-status" style="color:{}" title="{}">&#9679; {}</span>{}',
            STATUS_COLOURS[mailbox.health],  # a missing round-trip probe makes it worse
            _status_title(mailbox),
            Mailbox.Status(mailbox.health).label,
            health_badge(mailbox),  # OAuth2: token refreshed/rotated, amber warnings
        )

    @admin.display(description="round trip")
    def round_trip_badge(self, mailbox: Mailbox) -> str:
        if not mailbox.round_trip_enabled:
            return "Off"
        return format_html(
            '<span class="postroom-status" style="color:{}">&#9679; {}</span>',
            ROUND_TRIP_COLOURS[mailbox.round_trip_state],
            mailbox.get_round_trip_state_display(),
        )

    # --- Secrets are never echoed: not in the POST a crash report shows, not in the page. -

    @sensitive
    def add_view(self, request, form_url="", extra_context=None):
        return super().add_view(request, form_url, extra_context)

    @sensitive
    def change_view(self, request, object_id, form_url="", extra_context=None):
        mailbox = self.get_object(request, object_id)
        if mailbox is not None and mailbox.auth_type == Mailbox.AuthType.OAUTH2:
            extra_context = {**(extra_context or {}), "sign_in_label": sign_in_label(mailbox)}
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        moved = [name for name in CURSOR_FIELDS if name in form.changed_data]
        if change and moved and obj.listen:
            messages.info(request, mailbox_cursor_reset(mailbox=obj, changed=moved))
        for warning in form.warnings:
            messages.warning(request, warning)
        if form.report is not None:
            self._report(request, obj, form.report)
        if change and obj.outbox_paused and set(form.changed_data) & OUTGOING_LOGIN_FIELDS:
            # The administrator changed what the outgoing server refused: try it at once.
            outbox_resume(mailbox=obj)
            messages.info(
                request,
                f"{obj.name}: outbox resumed; waiting mail is sent with the new settings (the "
                "outbox pauses again if the server still refuses them).",
            )

    # --- Actions -------------------------------------------------------------------------

    @admin.action(description="Take selected channels online", permissions=["change"])
    def take_online(self, request, queryset):
        for mailbox in queryset:
            report = mailbox_set_online(mailbox=mailbox, online=True)
            if report.ok:
                messages.success(request, f"{mailbox.name} is online.")
            else:
                messages.error(
                    request,
                    f"{mailbox.name} stays offline: {report.summary(mailbox)}",
                )

    @admin.action(description="Take selected channels offline", permissions=["change"])
    def take_offline(self, request, queryset):
        for mailbox in queryset:
            mailbox_set_online(mailbox=mailbox, online=False)
        messages.success(request, f"{queryset.count()} channel(s) taken offline.")

    @admin.action(description="Test connection", permissions=["change"])
    def test_connection(self, request, queryset):
        for mailbox in queryset:
            self._report(request, mailbox, mailbox_test_connection(mailbox=mailbox))

    @admin.action(description="Fetch now", permissions=["change"])
    def fetch_now(self, request, queryset):
        polled = [m for m in queryset if m.is_polled]
        for mailbox in polled:
            mailbox_fetch_now(mailbox=mailbox)
        skipped = len(queryset) - len(polled)
        messages.success(
            request,
            f"Fetching {len(polled)} channel(s) now."
            + (f" {skipped} offline or outbound-only skipped." if skipped else ""),
        )

    @admin.action(description="Resume outbox", permissions=["change"])
    def resume_outbox(self, request, queryset):
        for mailbox in queryset.filter(outbox_paused=True):
            outbox_resume(mailbox=mailbox)
            messages.success(request, f"{mailbox.name}: outbox resumed.")

    def _report(self, request: HttpRequest, mailbox: Mailbox, report: ConnectionReport) -> None:
        level = (
            messages.SUCCESS
            if report.ok and not report.notes
            else (messages.WARNING if report.ok else messages.ERROR)
        )
        messages.add_message(request, level, f"{mailbox.name}: {report.summary(mailbox)}")

    # --- Extra pages: the "Test connection" button on a channel's page --------------------

    def get_urls(self):
        test_view = self.admin_site.admin_view(self.test_connection_view)
        fetch_view = self.admin_site.admin_view(self.fetch_now_view)
        test_mail_view = self.admin_site.admin_view(self.send_test_mail_view)
        return [
            path("<int:pk>/test-connection/", test_view, name="mailboxes_mailbox_test_connection"),
            path("<int:pk>/fetch-now/", fetch_view, name="mailboxes_mailbox_fetch_now"),
            path(
                "<int:pk>/send-test-mail/",
                test_mail_view,
                name="mailboxes_mailbox_send_test_mail",
            ),
            *self.first_sync_urls(),
            *self.oauth_urls(),
            *super().get_urls(),
        ]

    @method_decorator(require_POST)
    def test_connection_view(self, request, pk: int):
        mailbox = self.changeable(request, pk)
        self._report(request, mailbox, mailbox_test_connection(mailbox=mailbox))
        return self.back_to_channel(pk)

    @method_decorator(require_POST)
    def fetch_now_view(self, request, pk: int):
        mailbox = self.changeable(request, pk)
        if mailbox.is_polled:
            mailbox_fetch_now(mailbox=mailbox)
            messages.success(request, f"{mailbox.name}: fetching now.")
        else:
            messages.warning(
                request, f"{mailbox.name} is offline or outbound-only: nothing to fetch."
            )
        return self.back_to_channel(pk)

    def send_test_mail_view(self, request, pk: int):
        mailbox = self.changeable(request, pk)
        form = TestMailForm(request.POST or None, initial={"to": request.user.email})
        if request.method == "POST" and form.is_valid():
            to = form.cleaned_data["to"]
            row = outbound_send_test(mailbox=mailbox, to=to)
            if row.state == OutboundMessage.State.SENT:
                reply = f" (server said: {row.server_reply})" if row.server_reply else ""
                messages.success(request, f"Test mail sent to {to}: the server accepted it{reply}.")
                return self.back_to_channel(pk)
            # Stay on the form: fix the channel in another tab, then send again from here.
            messages.error(request, f"The test mail to {to} was not sent. {row.last_error}")
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": mailbox,
            "form": form,
            "title": f"Send a test mail from {mailbox.name}",
        }
        return TemplateResponse(request, "admin/mailboxes/mailbox/send_test_mail.html", context)

    # --- Delete: name the channel and count what it holds, never list every row -----------

    def get_deleted_objects(self, objs, request):
        _, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        summary = []
        for mailbox in objs:
            rows = mailbox_delete_summary(mailbox=mailbox)
            held = [
                f"{count} {what}" + ("" if deleted else " (kept)") for what, count, deleted in rows
            ]
            summary.append(
                f"{mailbox.name} <{mailbox.email_address}>"
                + (f": {', '.join(held)}" if held else ": nothing stored yet")
            )
        return summary, model_count, perms_needed, protected

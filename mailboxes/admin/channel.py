"""The channel admin: declarative first, then a few hooks that call services."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from mailboxes.forms import FIELD_GROUPS, SECRET_FIELDS, AliasForm, MailboxForm
from mailboxes.models import Alias, Mailbox
from mailboxes.services import (
    CURSOR_FIELDS,
    ConnectionReport,
    mailbox_cursor_reset,
    mailbox_delete_summary,
    mailbox_fetch_now,
    mailbox_set_online,
    mailbox_test_connection,
)

STATUS_COLOURS = {
    Mailbox.Status.UNCHECKED: "#8a8a8a",
    Mailbox.Status.OK: "#1e8e3e",
    Mailbox.Status.WARNING: "#d68a00",
    Mailbox.Status.ERROR: "#d93025",
}
POLL_FIELDS = [
    "last_polled_at",
    "last_poll_stored",
    "last_poll_duration_ms",
    "next_poll_at",
    "consecutive_failures",
    "cursor_note",
]
STATUS_FIELDS = [
    "status_badge",
    "status_message",
    "last_checked_at",
    "last_message_count",
    "last_error",
    "last_error_at",
]
sensitive = method_decorator(sensitive_post_parameters(*SECRET_FIELDS))


class AliasInline(admin.TabularInline):
    model = Alias
    form = AliasForm
    extra = 1
    verbose_name = "alias"
    verbose_name_plural = "Aliases: other addresses and names this channel can send as"


@admin.register(Mailbox)
class MailboxAdmin(admin.ModelAdmin):
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
    ]
    list_filter = ["status", "protocol", "enabled", "server_type", "auth_type"]
    search_fields = ["name", "email_address", "channel_id"]
    readonly_fields = ["channel_id", *STATUS_FIELDS, *POLL_FIELDS]
    actions = ["take_online", "take_offline", "test_connection", "fetch_now"]
    save_on_top = True
    # An administrator typing "accounts.example.com/token" means https, never http.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fieldsets = [
        ("Channel", {"fields": ["channel_id", *FIELD_GROUPS["Channel"]]}),
        ("Status", {"fields": STATUS_FIELDS}),
        ("Polling", {"fields": POLL_FIELDS}),
        *(
            (title, {"fields": names})
            for title, names in FIELD_GROUPS.items()
            if title != "Channel"
        ),
    ]

    class Media:
        js = ["mailboxes/mailbox_form.js"]
        css = {"all": ["mailboxes/mailbox_form.css"]}

    @admin.display(description="status", ordering="status")
    def status_badge(self, mailbox: Mailbox) -> str:
        return format_html(
            '<span class="postroom-status" style="color:{}" title="{}">&#9679; {}</span>',
            STATUS_COLOURS[mailbox.status],
            mailbox.status_message,
            mailbox.get_status_display(),
        )

    # --- Secrets are never echoed: not in the POST a crash report shows, not in the page. -

    @sensitive
    def add_view(self, request, form_url="", extra_context=None):
        return super().add_view(request, form_url, extra_context)

    @sensitive
    def change_view(self, request, object_id, form_url="", extra_context=None):
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
        return [
            path("<int:pk>/test-connection/", test_view, name="mailboxes_mailbox_test_connection"),
            path("<int:pk>/fetch-now/", fetch_view, name="mailboxes_mailbox_fetch_now"),
            *super().get_urls(),
        ]

    @method_decorator(require_POST)
    def test_connection_view(self, request, pk: int):
        mailbox = get_object_or_404(Mailbox, pk=pk)
        if not self.has_change_permission(request, mailbox):
            raise PermissionDenied
        self._report(request, mailbox, mailbox_test_connection(mailbox=mailbox))
        return HttpResponseRedirect(reverse("admin:mailboxes_mailbox_change", args=[pk]))

    @method_decorator(require_POST)
    def fetch_now_view(self, request, pk: int):
        mailbox = get_object_or_404(Mailbox, pk=pk)
        if not self.has_change_permission(request, mailbox):
            raise PermissionDenied
        if mailbox.is_polled:
            mailbox_fetch_now(mailbox=mailbox)
            messages.success(request, f"{mailbox.name}: fetching now.")
        else:
            messages.warning(
                request, f"{mailbox.name} is offline or outbound-only: nothing to fetch."
            )
        return HttpResponseRedirect(reverse("admin:mailboxes_mailbox_change", args=[pk]))

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

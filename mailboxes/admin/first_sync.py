"""First sync on the channel page: preview the folder, choose what older mail to import, follow
and cancel the import. A mixin of MailboxAdmin, kept apart so the channel module stays small."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from mailboxes.admin.access import ChannelViewsMixin
from mailboxes.first_sync import ACTIVE, first_sync_cancel, first_sync_choose, import_progress
from mailboxes.forms import FirstSyncForm
from mailboxes.models import Mailbox
from mailboxes.preview import mailbox_preview
from providers.errors import ProviderError

FIRST_SYNC_FIELDS = ["first_sync_summary", "import_progress_display"]


class FirstSyncAdminMixin(ChannelViewsMixin):
    @admin.display(description="first sync")
    def first_sync_summary(self, mailbox: Mailbox) -> str:
        if not mailbox.pk or not mailbox.listen:
            return "Not receiving mail."
        link = reverse("admin:mailboxes_mailbox_first_sync", args=[mailbox.pk])
        if mailbox.first_sync_chosen_at is None:
            if mailbox.cursor_set_at is None:
                return "Offered once the channel has connected (test it or wait for a poll)."
            return format_html(
                'Fetching mail from now on. <a href="{}" id="first-sync-link">Preview the '
                "folder and choose whether to import older mail</a>.",
                link,
            )
        when = timezone.localtime(mailbox.first_sync_chosen_at).strftime("%Y-%m-%d %H:%M")
        return format_html(
            '{} (chosen {}). <a href="{}" id="first-sync-link">Preview and choose again</a>.',
            _choice_words(mailbox),
            when,
            link,
        )

    @admin.display(description="import of older mail")
    def import_progress_display(self, mailbox: Mailbox) -> str:
        return import_progress(mailbox) if mailbox.pk else ""

    def first_sync_urls(self) -> list:
        view = self.admin_site.admin_view(self.first_sync_view)
        cancel = self.admin_site.admin_view(require_POST(self.first_sync_cancel_view))
        return [
            path("<int:pk>/first-sync/", view, name="mailboxes_mailbox_first_sync"),
            path("<int:pk>/first-sync/cancel/", cancel, name="mailboxes_mailbox_first_sync_cancel"),
        ]

    def first_sync_view(self, request: HttpRequest, pk: int):
        mailbox = self.changeable(request, pk)
        form = FirstSyncForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                first_sync_choose(mailbox=mailbox, **form.arguments())
            except ValueError as err:
                messages.error(request, str(err))
            else:
                messages.success(request, f"{mailbox.name}: {_choice_words(mailbox)}.")
                return self.back_to_channel(mailbox.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": mailbox,
            "title": f"First sync of {mailbox.name}",
            "form": form,
            "progress": import_progress(mailbox),
            "running": mailbox.import_state in ACTIVE,
        }
        if not context["running"]:
            context.update(_preview_context(mailbox))
        return TemplateResponse(request, "admin/mailboxes/mailbox/first_sync.html", context)

    def first_sync_cancel_view(self, request: HttpRequest, pk: int):
        mailbox = self.changeable(request, pk)
        if first_sync_cancel(mailbox=mailbox):
            messages.success(
                request, f"{mailbox.name}: import cancelled; what it stored stays stored."
            )
        else:
            messages.info(request, f"{mailbox.name}: no import was running.")
        return self.back_to_channel(pk)


def _preview_context(mailbox: Mailbox) -> dict:
    if not mailbox.listen:
        return {"preview_error": "This channel does not receive mail."}
    try:
        return {"preview": mailbox_preview(mailbox=mailbox)}
    except ProviderError as err:
        return {"preview_error": f"The folder could not be read: {err}"}


def _choice_words(mailbox: Mailbox) -> str:
    if mailbox.first_sync == Mailbox.FirstSync.DAYS:
        return f"Importing the last {mailbox.first_sync_days} days, then mail from now on"
    if mailbox.first_sync == Mailbox.FirstSync.EVERYTHING:
        return "Importing everything in the folder, then mail from now on"
    return "Only mail from now on"

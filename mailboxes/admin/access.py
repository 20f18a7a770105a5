"""What every view on a channel's page starts and ends with: the channel, if the administrator
may change it, and the way back to its page."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse

from mailboxes.models import Mailbox


class ChannelViewsMixin:
    def changeable(self, request: HttpRequest, pk: int) -> Mailbox:
        mailbox = get_object_or_404(Mailbox, pk=pk)
        if not self.has_change_permission(request, mailbox):
            raise PermissionDenied
        return mailbox

    @staticmethod
    def back_to_channel(pk: int) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:mailboxes_mailbox_change", args=[pk]))

"""Mail to the administrators about one channel: everyone who may change channels (superusers,
and staff given the right), once, when something about the channel needs them."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse

from mailboxes.models import Mailbox

logger = logging.getLogger(__name__)


def administrators_notify(mailbox: Mailbox, template: str, extra: dict | None = None) -> None:
    """Render `<template>_subject.txt` and `<template>.txt` and mail them; a mail server that is
    down is logged, never raised (the channel's page shows the same thing)."""
    users = get_user_model().objects.filter(is_active=True, is_staff=True).exclude(email="")
    permitted = (
        Q(is_superuser=True)
        | Q(user_permissions__codename="change_mailbox")
        | Q(groups__permissions__codename="change_mailbox")
    )
    recipients = sorted(set(users.filter(permitted).values_list("email", flat=True)))
    if not recipients:
        return
    context = {
        **(extra or {}),
        "mailbox": mailbox,
        "change_url": settings.POSTROOM_BASE_URL.rstrip("/")
        + reverse("admin:mailboxes_mailbox_change", args=[mailbox.pk]),
    }
    subject = render_to_string(f"{template}_subject.txt", context)
    body = render_to_string(f"{template}.txt", context)
    try:
        send_mail(" ".join(subject.split()), body, None, recipients)
    except OSError as exc:  # smtplib's errors are OSErrors too
        logger.warning("channel %s: could not mail administrators: %s", mailbox.channel_id, exc)

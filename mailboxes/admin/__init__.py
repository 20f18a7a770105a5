"""The admin for channels and their outboxes (one module each)."""

from mailboxes.admin import channel, outbox  # noqa: F401 - registers the ModelAdmins

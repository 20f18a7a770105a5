"""The admin for channels (one module per admin page family)."""

from mailboxes.admin import channel  # noqa: F401 - registers the ModelAdmins

"""Migrations: they match the models, and run from zero and back on every backend we ship."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

pytestmark = pytest.mark.backends
PROJECT_APPS = ("pollers", "cases", "mailboxes")  # dependants first, to unapply


@pytest.mark.django_db  # it checks the applied history for consistency
def test_the_models_need_no_migration_that_is_not_written():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_the_project_migrates_back_to_zero_and_forward_again():
    for app in PROJECT_APPS:
        call_command("migrate", app, "zero", verbosity=0)
    assert not {"mailboxes_mailbox", "cases_case"} & set(connection.introspection.table_names())
    call_command("migrate", verbosity=0)
    assert {"mailboxes_mailbox", "cases_case"} <= set(connection.introspection.table_names())

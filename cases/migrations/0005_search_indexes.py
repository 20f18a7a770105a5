"""GIN indexes for the agents' full-text search on PostgreSQL (cases/views/search.py).

Expression indexes on exactly what the search asks for, to_tsvector('english', …) of the
subject and of each message's text; SQLite has no text search and gets nothing. Kept out of
the models' Meta because a GinIndex cannot be created on SQLite.
"""

from django.db import migrations

INDEXES = {
    "cases_subject_search": ("cases_case", "subject"),
    "cases_message_text_search": ("cases_casemessage", "text"),
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, (table, column) in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON {table} "
            f"USING gin (to_tsvector('english'::regconfig, COALESCE({column}, '')))"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [
        ("cases", "0004_size_notice"),
    ]

    operations = [migrations.RunPython(create, drop)]

"""R-51 at scale: one audit chain per institution (and one for the platform) instead of a
single head row that every audited write in the cluster locked (security/audit.py).

Forward: `audit_entry.chain` ("" for every existing entry: the legacy chain, still verified
from its head row `audit_chain_head`) and the per-chain heads `audit_chain`. Adding a column
with a default fires no row trigger, so the append-only guard (0002) stays as it is.

Backward drops both again. It is refused once entries were written on the new chains: they
cannot be folded back into the single chain, and the old verifier would call them tampered.
On SQLite, dropping a column rebuilds the table, which drops its triggers and the index on
`action`; they are restored.
"""

from tortoise import fields, migrations
from tortoise.migrations import operations as ops

SQLITE_TRIGGERS = [
    "CREATE TRIGGER IF NOT EXISTS audit_entry_no_update BEFORE UPDATE ON audit_entry "
    "BEGIN SELECT RAISE(ABORT, 'audit_entry is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_entry_no_delete BEFORE DELETE ON audit_entry "
    "BEGIN SELECT RAISE(ABORT, 'audit_entry is append-only'); END",
    # Tortoise's SQLite table rebuild forgets this index (0001, AuditEntry.action).
    'CREATE INDEX IF NOT EXISTS "idx_audit_entry_action_a20b3a" ON "audit_entry" ("action")',
]


async def nothing(apps, editor) -> None:
    return None


async def restore_sqlite_schema(apps, editor) -> None:
    """Runs last when going backward, after the column is gone (SQLite rebuilt the table)."""
    if editor.client.capabilities.dialect == "sqlite":
        for statement in SQLITE_TRIGGERS:
            await editor.client.execute_script(statement)


async def refuse_if_chained(apps, editor) -> None:
    """Runs first when going backward, while `chain` still exists."""
    rows = await editor.client.execute_query_dict(
        "SELECT COUNT(*) AS n FROM audit_entry WHERE chain <> ''")
    if rows and int(rows[0]["n"]):
        raise RuntimeError(
            f"{rows[0]['n']} audit entries are on per-institution chains and cannot be moved "
            "back to the single chain; restore a backup taken before 0012 instead")


class Migration(migrations.Migration):
    dependencies = [('models', '0011_documents_handwriting')]

    initial = False

    operations = [
        ops.RunPython(nothing, restore_sqlite_schema),
        ops.AddField(
            model_name='AuditEntry',
            name='chain',
            field=fields.CharField(default='', db_default='', max_length=40),
        ),
        ops.CreateModel(
            name='AuditChain',
            fields=[
                ('chain', fields.CharField(primary_key=True, max_length=40)),
                ('last_hash', fields.CharField(max_length=64)),
                ('count', fields.BigIntField(default=0)),
                ('anchor', fields.CharField(max_length=64)),
            ],
            options={'table': 'audit_chain', 'app': 'models', 'pk_attr': 'chain',
                     'table_description': 'The head of one chain, locked by the writers of '
                                          'that chain only.'},
            bases=['Model'],
        ),
        ops.RunPython(nothing, refuse_if_chained),
    ]

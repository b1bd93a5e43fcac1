"""Database access: engine, tables, migrations."""

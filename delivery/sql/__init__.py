"""The stores' SQL, written once for SQLite and PostgreSQL (statements.py says how)."""

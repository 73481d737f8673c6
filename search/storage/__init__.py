"""Optuna storage: opening it (SQLite, PostgreSQL, MySQL) with fmsearch's trial pool and
heartbeats, locks held in it, and store URLs with their passwords redacted."""

"""Persistence: the only package that knows about tables and SQL.

Nothing is imported here, so `store.reader` loads without SQLAlchemy (see reader.py).
"""

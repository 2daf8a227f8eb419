"""Agents translate a protocol's messages into the charging vocabulary and back."""

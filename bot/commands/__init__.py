"""The commands that run and end: `check`, `send` and `outbox` (the servers live elsewhere)."""

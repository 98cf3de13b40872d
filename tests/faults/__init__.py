"""Fault tests: real workers killed, frozen, cut off and starved of disk under load, each
judged from a ledger of the task runs (see docs/faults.md)."""

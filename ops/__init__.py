"""The operators' tools: `manage-runs` (`cli`), its live view (`live`), the one-command demo
harness (`demo`) and the `orchestrator-dispatcher` process (`dispatcher`).

The top layer: it composes the core with the Celery sender, and (for the demo) with the ingest
app and an in-process worker. Nothing below imports it.
"""

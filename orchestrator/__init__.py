"""The core: the rules and records every other layer builds on.

Settings, the database and its indexes, the status table and the one writer of a run's status
(`runs`), the event catalogue, claims, the retry policy, the ingest engine with its pure mappers,
the dispatcher and sweeper loops, artifact storage and the read models. Plain functions over a
database: nothing here imports Flask, Celery, kombu, rich, click or the pipeline, so `tasks/`
(the pod), `ingest_app/` (HTTP) and `ops/` (operators) are thin shells over it
(docs/architecture.md; tests/test_architecture.py keeps it so).
"""

from orchestrator.errors import OrchestratorError, SettingsError, TransitionError
from orchestrator.settings import Settings

__all__ = ["OrchestratorError", "SettingsError", "Settings", "TransitionError"]

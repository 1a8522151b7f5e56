"""Shared core of the orchestrator: settings, database, the status table and the event catalogue.

`tasks/` (Celery), `ingest_app/` (Flask) and the `manage-runs` CLI are thin adapters over the
plain modules here. Nothing in this package imports Celery or Flask.
"""

from orchestrator.errors import OrchestratorError, SettingsError, TransitionError
from orchestrator.settings import Settings

__all__ = ["OrchestratorError", "SettingsError", "TransitionError", "Settings"]

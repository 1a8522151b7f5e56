"""The root of the project's exceptions, and the errors more than one layer raises.

Every exception this project raises on purpose derives from `OrchestratorError`, so a caller can
catch "ours" in one clause. Errors with one home live beside the code that raises them:
`EventError` (orchestrator.events), `SpoolError` and
`LeaseLost` (the pod runtime), `RequestRejected` (ingest_app.parsing), `PipelineError` and
`Canceled` (pipeline). tests/test_architecture.py checks that every one of them derives from here.
"""


class OrchestratorError(Exception):
    """Root of every error this project raises on purpose."""


class SettingsError(OrchestratorError):
    """An environment variable is missing or malformed; the message names it and the fix."""


class TransitionError(OrchestratorError):
    """A run status change that the transition table does not allow."""


class NotFound(OrchestratorError):
    """An id that names no document (a run, a hypothesis, an artifact)."""


class StorageError(OrchestratorError):
    """An artifact could not be stored, its URL made, or its key is not canonical; the message
    names the key and the cause."""

"""The one exception hierarchy of the project; every module raises a subclass of these."""


class OrchestratorError(Exception):
    """Root of every error this project raises on purpose."""


class SettingsError(OrchestratorError):
    """An environment variable is missing or malformed; the message names it and the fix."""


class TransitionError(OrchestratorError):
    """A run status change that the transition table does not allow."""


class NotFound(OrchestratorError):
    """An id that names no document (a run, a hypothesis, an artifact)."""


class DatabaseUnavailable(OrchestratorError):
    """MongoDB did not answer within the server selection timeout."""

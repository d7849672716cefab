"""One error hierarchy for the whole service, mapped to Temporal in one place.

    ServiceError
    ├── FieldError            names a job field and the reason: a client refuses the job with it
    │   ├── InputError            bad user input (never retried)
    │   └── DownloadFailed        a URL input's download broke off (reset, timeout, HTTP 5xx, host
    │                             not found): retried (ingest: a few attempts, then an InputError)
    ├── GraphError            a ComfyUI graph that does not validate (non-retryable)
    ├── ModelMissingError     a model file ComfyUI cannot find: .file, .folder, .node_id (non-retryable)
    ├── OutputMismatch        the backend's frames do not fit the window: count, size or type
    │                         (non-retryable: the same inputs give the same output)
    ├── HttpError             the HTTP API's answer to a request it refuses: .status (4xx) and the
    │                         message (api/errors.py turns it, and a FieldError, into the response)
    └── TransientError        infrastructure trouble; the same call may work later (retryable)
        ├── BackendUnavailable    renderer/ComfyUI failing, out of memory, dropped socket
        │   ├── ComfyUnreachable      ComfyUI did not answer (refused, reset, timeout, HTTP 5xx)
        │   └── PromptTimeout         a ComfyUI prompt ran past its time limit (the caller interrupts it)
        └── StorageError          object store unreachable or failing

`to_application_error` turns any of them into a Temporal `ApplicationError` whose type is
the class name; `NON_RETRYABLE_TYPES` lists the types a retry policy must not retry.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""

    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FieldError(ServiceError):
    """An error about one job field: `field` (the job key) and `reason`. A client (starter.py,
    the HTTP API) refuses the job with it; what an activity does with it depends on the class."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class InputError(FieldError):
    """A user input is missing, malformed or not allowed. Never retried."""


class DownloadFailed(FieldError):
    """A URL input could not be downloaded for a reason that may pass: the connection was
    refused, reset or timed out, the body ended early, the server answered 5xx or 429, the
    host was not found. A refusal (a forbidden address, a limit passed, HTTP 404) is an
    InputError. The client refuses the job either way; an activity retries this one (ingest
    a few attempts, then turns it into an InputError)."""

    retryable = True


class GraphError(ServiceError):
    """A ComfyUI graph failed validation."""


class ModelMissingError(ServiceError):
    """A model file the graph needs is not installed: `file` in ComfyUI's models/`folder`,
    needed by node `node_id` (each None when ComfyUI did not say)."""

    def __init__(self, message: str, *, file: str | None = None, folder: str | None = None,
                 node_id: str | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.folder = folder
        self.node_id = node_id


class OutputMismatch(ServiceError):
    """The backend returned frames that do not fit the window (their count, size or type).
    The same inputs give the same output, so a retry would only repeat it."""


class HttpError(ServiceError):
    """A request the HTTP API refuses: the HTTP `status` and the message of `{"error": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class TransientError(ServiceError):
    """Something outside our control failed; retrying may succeed."""

    retryable = True


class BackendUnavailable(TransientError):
    """The renderer could not be reached or ran out of resources."""


class ComfyUnreachable(BackendUnavailable):
    """ComfyUI did not answer: connection refused or reset, no answer in time, HTTP 5xx."""


class PromptTimeout(BackendUnavailable):
    """A ComfyUI prompt did not finish within its time limit; the GPU may still be busy with
    it, so whoever waited interrupts it before the window is retried."""

    def __init__(self, message: str, *, prompt_id: str | None = None, timeout_s: float | None = None) -> None:
        super().__init__(message)
        self.prompt_id = prompt_id
        self.timeout_s = timeout_s


class StorageError(TransientError):
    """The object store failed."""


NON_RETRYABLE_TYPES: list[str] = [
    InputError.__name__,
    GraphError.__name__,
    ModelMissingError.__name__,
    OutputMismatch.__name__,
]


def to_application_error(exc: ServiceError):  # -> temporalio.exceptions.ApplicationError
    from temporalio.exceptions import ApplicationError

    details = None
    if isinstance(exc, FieldError):
        details = {"field": exc.field, "reason": exc.reason}
    elif isinstance(exc, ModelMissingError) and exc.file is not None:
        details = {"file": exc.file, "folder": exc.folder, "node_id": exc.node_id}
    args = (details,) if details else ()
    return ApplicationError(
        exc.message, *args, type=type(exc).__name__, non_retryable=not exc.retryable
    )

"""One error hierarchy for the whole service, mapped to Temporal in one place.

    ServiceError
    ├── InputError            bad user input: names the field and the reason (non-retryable)
    ├── GraphError            a ComfyUI graph that does not validate (non-retryable)
    ├── ModelMissingError     a model file ComfyUI cannot find (non-retryable)
    └── TransientError        infrastructure trouble; the same call may work later (retryable)
        ├── BackendUnavailable    renderer/ComfyUI down, out of memory, dropped socket
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


class InputError(ServiceError):
    """A user input is missing, malformed or not allowed."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class GraphError(ServiceError):
    """A ComfyUI graph failed validation."""


class ModelMissingError(ServiceError):
    """A model file the graph needs is not installed."""


class TransientError(ServiceError):
    """Something outside our control failed; retrying may succeed."""

    retryable = True


class BackendUnavailable(TransientError):
    """The renderer could not be reached or ran out of resources."""


class StorageError(TransientError):
    """The object store failed."""


NON_RETRYABLE_TYPES: list[str] = [
    InputError.__name__,
    GraphError.__name__,
    ModelMissingError.__name__,
]


def to_application_error(exc: ServiceError):  # -> temporalio.exceptions.ApplicationError
    from temporalio.exceptions import ApplicationError

    details = {"field": exc.field, "reason": exc.reason} if isinstance(exc, InputError) else None
    args = (details,) if details else ()
    return ApplicationError(
        exc.message, *args, type=type(exc).__name__, non_retryable=not exc.retryable
    )

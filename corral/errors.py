"""Exception types a user can act on.  ``str(err)`` is always one line for the CLI."""

from __future__ import annotations


class CorralError(Exception):
    """Base of every error corral reports to a user."""

    exit_code = 1


class ConfigError(CorralError):
    """A config.json (or argument) value that is malformed; names the field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class NotSupportedError(CorralError):
    """A feature corral does not implement yet: refused, never silently ignored."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(f"{what}: not supported yet")


class ContainerNotFound(CorralError):
    def __init__(self, container_id: str) -> None:
        self.container_id = container_id
        super().__init__(f"container {container_id} does not exist")


class ContainerExists(CorralError):
    def __init__(self, container_id: str) -> None:
        self.container_id = container_id
        super().__init__(f"container with id {container_id} already exists")


class ContainerStateError(CorralError):
    """A command that is not valid in the container's current state."""


class ProtocolError(CorralError):
    """The parent/child creation protocol was violated (a bug, or a child that died)."""


class ChildError(CorralError):
    """The container's child side failed; carries the child's own message and errno."""

    def __init__(self, message: str, errno: int = 0, stage: str = "") -> None:
        self.errno = errno
        self.stage = stage
        super().__init__(message)


class CgroupError(CorralError):
    """A cgroup operation failed."""


class TooSlow(CorralError):
    """A client of the daemon that fell too far behind what it asked for: dropped."""


class RequestCancelled(CorralError):
    """A request to the daemon that its client cancelled (the API's ``cancel``)."""


def only_error(group: BaseException) -> BaseException:
    """The one error inside nested task-group wrappers, so that it is reported (and its
    kind judged) as itself; a group of several stays a group."""
    while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
        group = group.exceptions[0]
    return group

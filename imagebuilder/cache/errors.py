"""Errors of the remote cache.

Every registry failure is a :class:`RemoteCacheError` (a tool failure, exit 4) whose message
is one line naming the remote, so a build can print it as a warning and go on locally. The
subclasses tell what went wrong for the caller that wants to react differently (the engine
warns for all of them; ``cache pull`` exits with the error).
"""

from __future__ import annotations

from ..errors import ToolError, UserInputError


class RemoteCacheError(ToolError):
    """The remote cache could not be used for this operation."""

    kind = "remote cache"


class RemoteUnavailable(RemoteCacheError):
    """The registry did not answer (refused, unreachable, timed out)."""


class RemoteAuthError(RemoteCacheError):
    """The registry refused our credentials (or we sent none and it wants some)."""


class RemoteTLSError(RemoteCacheError):
    """TLS failed: unknown CA, wrong host name, or plain HTTP where HTTPS was expected."""


class RemoteIntegrityError(RemoteCacheError):
    """What the registry sent does not match its digest, or is not a valid cache entry."""

    exit_code = 3


class RemoteUntrusted(RemoteCacheError):
    """The entry is not signed by a trusted key (with ``--cache-remote-trust``)."""

    exit_code = 3


class RemoteReadOnly(UserInputError):
    """A push was asked of a remote used in ``read`` mode."""

"""The error taxonomy.

Every failure the user can act on is one of four kinds, each with its own exit
code, so scripts can tell "you gave me bad input" from "the image is broken"
from "a tool failed" from "we have a bug":

========================  ====  =============================================
class                     exit  meaning
========================  ====  =============================================
UserInputError            2     bad command line, missing file, bad option
InvalidConfigError        3     a config, definition or image is malformed
ToolError                 4     an external program failed (stderr attached)
ToolMissingError          5     an external program is not installed
InternalError             70    a bug in imagebuilder (EX_SOFTWARE)
========================  ====  =============================================

Exit code 1 is reserved for "the command ran and its verdict is negative"
(e.g. ``ignition validate`` found errors, ``boot --expect`` timed out).
"""

from __future__ import annotations


class ImageBuilderError(Exception):
    """Base class of every error the top-level handler reports as one line."""

    exit_code = 70
    kind = "error"

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UserInputError(ImageBuilderError):
    """Bad input from the user: arguments, options, missing or unreadable files."""

    exit_code = 2
    kind = "invalid input"


class InvalidConfigError(ImageBuilderError):
    """A config, image definition, manifest or image file is malformed."""

    exit_code = 3
    kind = "invalid config"


class BadImageError(InvalidConfigError):
    """An ISO or disk image does not have the structure we need."""

    kind = "bad image"


class ToolError(ImageBuilderError):
    """An external tool exited non-zero. Carries argv, exit status and stderr."""

    exit_code = 4
    kind = "tool failed"

    def __init__(self, message: str, *, argv: list[str] | None = None,
                 returncode: int | None = None, stderr: str = "",
                 hint: str | None = None):
        super().__init__(message, hint=hint)
        self.argv = argv or []
        self.returncode = returncode
        self.stderr = stderr


class ToolMissingError(ToolError):
    """A required external tool is not on PATH."""

    exit_code = 5
    kind = "tool missing"


class InternalError(ImageBuilderError):
    """A bug in imagebuilder."""

    exit_code = 70
    kind = "internal error"


class VerdictFailed(ImageBuilderError):
    """The command ran fine and its answer is 'no' (validation errors, boot check failed)."""

    exit_code = 1
    kind = "failed"

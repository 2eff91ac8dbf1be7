"""Errors raised by `retention`, and the process exit code each one maps to.

The hierarchy, drawn once::

    RetentionError                 exit 1  something went wrong at run time
    +-- PolicyError                exit 2  the policy file (or its environment) is invalid
    +-- UsageError                 exit 2  the command line is invalid
    +-- StoreError                 exit 1  a store is unreachable or does not match the policy
    +-- SafetyLimitError           exit 3  a safety limit stopped a rule before it touched a row

Only the CLI turns these into a process exit code (`retention.cli`); nothing
below it calls `sys.exit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "ExitCode",
    "Issue",
    "PolicyError",
    "RetentionError",
    "SafetyLimitError",
    "Severity",
    "StoreError",
    "UsageError",
]


class ExitCode:
    """Process exit codes, documented in the README."""

    OK = 0
    FAILED = 1
    INVALID = 2
    SAFETY_LIMIT = 3


class Severity(StrEnum):
    """How bad a finding in a policy is: errors stop everything, warnings do not."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding about a policy, located in its file.

    `path` is the dotted path of the field (``rules[2].period``); `line` and
    `column` are 1-based and 0 when the position is unknown.
    """

    message: str
    path: str = ""
    file: str = ""
    line: int = 0
    column: int = 0
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = self.file or "<policy>"
        if self.line:
            where = f"{where}:{self.line}:{self.column}"
        field = f" {self.path}:" if self.path else ""
        prefix = "" if self.severity is Severity.ERROR else " warning:"
        return f"{where}:{prefix}{field} {self.message}"


class RetentionError(Exception):
    """Base class of every error `retention` raises on purpose."""

    exit_code: int = ExitCode.FAILED


class PolicyError(RetentionError):
    """The policy is invalid. Carries every issue found, not just the first."""

    exit_code = ExitCode.INVALID

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


class UsageError(RetentionError):
    """The command line asks for something that cannot be done."""

    exit_code = ExitCode.INVALID


class StoreError(RetentionError):
    """A store cannot be reached, or its schema does not match the policy."""


class SafetyLimitError(RetentionError):
    """A safety limit (max rows, max fraction) stopped a rule before it touched a row."""

    exit_code = ExitCode.SAFETY_LIMIT

"""Diagnostics: errors collected with their source location rather than raised one at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Span:
    path: str
    line: int
    col: int
    end_col: Optional[int] = None


@dataclass(frozen=True)
class Diagnostic:
    message: str
    span: Optional[Span] = None
    hint: Optional[str] = None
    severity: str = "error"

    def format(self, source: Optional[str] = None) -> str:
        """``PATH:LINE:COL: error: MESSAGE``, then the source line with a caret, then the hint."""
        if self.span is None:
            head = f"{self.severity}: {self.message}"
        else:
            head = f"{self.span.path}:{self.span.line}:{self.span.col}: {self.severity}: {self.message}"
        lines = [head]
        if self.span is not None and source is not None:
            src_lines = source.split("\n")
            if 1 <= self.span.line <= len(src_lines):
                text = src_lines[self.span.line - 1].expandtabs(1)
                width = max(1, (self.span.end_col or self.span.col + 1) - self.span.col)
                lines.append(f"  {self.span.line:>4} | {text}")
                lines.append(f"       | {' ' * (self.span.col - 1)}{'^' * width}")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class DslError(Exception):
    """An error meant for the user: printed without a traceback."""

    def __init__(self, message: str, diagnostics: Optional[list[Diagnostic]] = None,
                 sources: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.diagnostics: list[Diagnostic] = diagnostics or [Diagnostic(message)]
        self.sources: dict[str, str] = sources or {}

    def format(self) -> str:
        return "\n".join(d.format(self.sources.get(d.span.path) if d.span else None) for d in self.diagnostics)


class SpecError(DslError):
    """An invalid spec (exit code 1). ``str()`` lists every problem."""

    def __str__(self) -> str:
        return self.format()


class DataError(DslError):
    """Bad data in a file the spec names; the message starts with FILE:LINE."""

    def __init__(self, path: str, line: Optional[int], message: str, hint: Optional[str] = None) -> None:
        span = Span(str(path), line or 0, 1) if line else None
        loc = f"{path}:{line}" if line else str(path)
        super().__init__(f"{loc}: {message}", [Diagnostic(message, span, hint)] if span else
                         [Diagnostic(f"{loc}: {message}", None, hint)])
        self.path, self.line = str(path), line


class LockError(DslError):
    pass


class StepFailed(DslError):
    pass

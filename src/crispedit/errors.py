"""User-facing errors: one line that names the problem and the fix.

The CLI prints ``str(err)`` and exits with ``err.exit_code``; no traceback is shown for these.
"""

from __future__ import annotations


class CrispEditError(Exception):
    """A mistake in the user's input or environment, with a fix the user can apply."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} {('— ' + fix) if fix else ''}".strip())


class InputError(CrispEditError):
    """Bad image, mask, path or option given by the user."""


class ProblemsError(InputError):
    """Several problems of one input (a workflow file, a job table), found together and reported together:
    ``messages`` holds one line per problem; the error's text is ``"ORIGIN: N problems"`` followed by them.
    Subclasses set ``fix_text``."""

    fix_text = "fix the problems above"

    def __init__(self, messages: list[str], origin: str):
        self.messages = list(messages)
        n = len(self.messages)
        head = f"{origin}: {n} problem{'s' if n != 1 else ''}"
        body = "\n".join(f"  - {m}" for m in self.messages)
        super().__init__(f"{head}\n{body}\n ", self.fix_text)


class ModelError(CrispEditError):
    """A model could not be found or loaded (missing weights, refused pickle, ...)."""

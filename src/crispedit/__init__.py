"""crispedit: AI image edits of 4K-and-larger images that survive 100% zoom.

>>> import crispedit
>>> result = crispedit.edit("photo.jpg", "mask.png", engine="classical")   # doctest: +SKIP
>>> result.image.save("out.png")                                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

__version__ = "0.2.0"
__all__ = ["edit", "EditResult", "CrispEditError", "__version__"]

from crispedit.errors import CrispEditError

# The library logs its fallback decisions (``logging.getLogger("crispedit.<module>")``); the application decides
# where they go. Without this, Python's last-resort handler would print warnings on stderr.
logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    # Lazy: the harness pulls in OpenCV; `import crispedit` stays cheap for the CLI's --help.
    if name in ("edit", "EditResult"):
        from crispedit import harness

        return getattr(harness, name)
    if name == "generate":
        from crispedit import harness

        if hasattr(harness, "generate"):
            return harness.generate
    raise AttributeError(f"module 'crispedit' has no attribute {name!r}")

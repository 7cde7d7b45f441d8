"""A shared check for data readers: each bad file content gives a located DataError with the expected text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sdk.errors import DataError


def assert_data_errors(path: Path, cases: dict[str, str], read: Callable[[Path], Any]) -> None:
    """Write each case's text (one file content) to ``path`` and assert ``read(path)`` raises a DataError whose
    message contains the case's expected text (``FILE:LINE: ...`` where the case says so)."""
    for text, message in cases.items():
        path.write_text(text + "\n")
        with pytest.raises(DataError) as info:
            read(path)
        assert message in str(info.value), (text, str(info.value))

"""Acquisition month of a scene, from its tags or its file name."""

import re
from pathlib import Path

_DATE_COMPACT = re.compile(r"(?<!\d)(?:19|20)\d\d(0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)")
_DATE_SEPARATED = re.compile(
    r"(?<!\d)(?:19|20)\d\d[-:/](0[1-9]|1[0-2])[-:/](?:0[1-9]|[12]\d|3[01])(?!\d)"
)


def parse_month(text: object) -> int | None:
    """Month of the first date in ``text`` (``YYYYMMDD``, ``YYYY-MM-DD`` or ``YYYY:MM:DD``).

    Args:
        text: any value; non-strings are converted with ``str``.

    Returns:
        The month 1..12, or None when no plausible date is found.
    """
    if text is None:
        return None
    text = str(text)
    match = _DATE_SEPARATED.search(text) or _DATE_COMPACT.search(text)
    return int(match.group(1)) if match else None


def acquisition_month(path: str | Path, tags: dict | None) -> int | None:
    """Acquisition month of a scene from its tags, else from its file name.

    Looks at, in order: ``ACQUISITION_DATE`` / ``ACQUISITION_START_TIME``, tags whose name
    contains "date", any tag value holding a date such as ``20170613``, the file name
    (``..._20170613T...`` or ``..._20170613_...``), and last ``TIFFTAG_DATETIME``, which
    usually records when the file was written rather than when the scene was acquired.

    Args:
        path: file (or folder) whose name may carry the date.
        tags: dataset tags, e.g. ``src.tags()``.

    Returns:
        The month 1..12, or None when nothing gives one.
    """
    tags = dict(tags or {})
    by_key = {str(key).upper(): value for key, value in tags.items()}
    candidates = [by_key.get("ACQUISITION_DATE"), by_key.get("ACQUISITION_START_TIME")]
    candidates += [value for key, value in by_key.items() if "DATE" in key and "TIFFTAG" not in key]
    candidates += [value for key, value in by_key.items() if "TIFFTAG" not in key]
    candidates += [Path(path).name, by_key.get("TIFFTAG_DATETIME")]
    for value in candidates:
        month = parse_month(value)
        if month is not None:
            return month
    return None

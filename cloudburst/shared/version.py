"""Version exchange: the client sends its version in its first status query, the
scheduler answers with its own; each side logs one warning per differing version
(naming both). Versions are not negotiated: a mismatch may still work, the warning
says where to look when it does not."""

from __future__ import annotations

import logging

from cloudburst import __version__

_warned: set[tuple[str, str]] = set()


def mismatch(mine: str, theirs: str, me: str, them: str) -> str | None:
    """The warning for a peer of another version (None: same, or the peer did not say)."""
    if not theirs or theirs == mine:
        return None
    return (
        f"version mismatch: this {me} is cloudburst {mine}, the {them} is cloudburst "
        f"{theirs}; upgrade one of them if calls fail"
    )


def check(log: logging.Logger, theirs: str, me: str, them: str, mine: str | None = None) -> bool:
    """Log :func:`mismatch` once per (peer role, version); True if it differs."""
    text = mismatch(mine or __version__, theirs, me, them)
    if text is None:
        return False
    if (them, theirs) not in _warned:
        _warned.add((them, theirs))
        log.warning(text)
    return True

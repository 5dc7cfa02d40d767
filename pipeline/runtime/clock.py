"""How long something took or will take, as a person reads it: `m:ss`, or `h:mm:ss` from an hour on.

One copy for the console's stage lines and the training's progress messages
(its ETA): in training's code identity, so kept to this.
"""

from __future__ import annotations


def duration(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour on: how long something took or will take."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"

"""Upstream JSON made fit to store and forward: bounded depth, storable text, no token.

Pure functions. The client cleans every record and list entry with the token it sent
(``clean(value, secrets)``), so nothing downstream (the rules, the row, the webhook body)
ever holds the token; the rules clean again without it (``verdict.clean_json``), so a value
that did not come through the client is held to the same bounds.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

# The documented record is two levels deep (``queue_data``); 64 leaves room for any plausible
# extension while keeping every later step (the digest, the JSON encoder, the driver, jsonb)
# far from its own recursion limit. A 1 KB body of brackets is 500 levels deep.
MAX_DEPTH: Final = 64
# What a container nested deeper than MAX_DEPTH becomes (docs/security.md, "Hostile input").
PRUNED: Final = f"[pruned: nested deeper than {MAX_DEPTH} levels]"
# What the token becomes wherever the upstream echoed it (the client's messages use it too).
REDACTED: Final = "[redacted]"

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Text every column can store, without the token.

    No NUL (Postgres refuses it), no lone UTF-16 surrogate (a split emoji that JSON allows but
    UTF-8 cannot encode); each secret becomes ``[redacted]``. Everything else is kept.
    """
    text = _UNSTORABLE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
            if secret in text:  # the replacement itself recreated it: keep nothing
                return ""
    return text


def clean(value: Any, secrets: tuple[str, ...] = ()) -> Any:
    """A JSON value as received, minus what no column can store or nobody may read.

    Strings and keys go through ``clean_text``; NaN and Infinity (not JSON; jsonb refuses them)
    become null; an object or array nested deeper than ``MAX_DEPTH`` becomes the string
    ``PRUNED``. Iterative, so no depth of input can exhaust the interpreter's stack.
    """
    holder: list[Any] = [None]
    # (value to clean, container to put it in, key or index there, depth of the value)
    pending: list[tuple[Any, Any, Any, int]] = [(value, holder, 0, 0)]
    while pending:
        item, into, where, depth = pending.pop()
        if isinstance(item, dict | list) and depth >= MAX_DEPTH:
            into[where] = PRUNED
        elif isinstance(item, dict):
            out: dict[str, Any] = {}
            into[where] = out
            children = [(clean_text(str(k), secrets), v) for k, v in item.items()]
            for key, _ in children:
                out[key] = None  # the keys in their order now; the values as they are cleaned
            # reversed, so the children are cleaned in order and, if two keys became one,
            # the later one wins as it would in a plain dict
            pending.extend((v, out, key, depth + 1) for key, v in reversed(children))
        elif isinstance(item, list):
            slots: list[Any] = [None] * len(item)
            into[where] = slots
            pending.extend((v, slots, i, depth + 1) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, str):
            into[where] = clean_text(item, secrets)
        elif isinstance(item, float) and not math.isfinite(item):
            into[where] = None
        else:
            into[where] = item
    return holder[0]

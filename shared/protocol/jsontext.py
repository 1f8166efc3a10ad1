"""JSON from strangers, parsed in bounded time: nesting checked by a linear scan before `json.loads`
recurses through it, and every way `json.loads` can fail (bad bytes, bad syntax, an integer past
CPython's 4,300-digit conversion limit, recursion) turned into one 400 naming what is wrong.

The depth scan must itself be linear. Strings are removed first, since "[[[" inside a string nests
nothing; doing that with one regex for "a string with its escapes" backtracks quadratically on an
unterminated string full of escapes (`"\\"\\"\\"...`). So escapes go first (`\\.` pairs, left to right),
then strings are plain `"[^"]*"` runs, then brackets are counted with numpy in slices.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from shared.errors import MalformedRequest

_CHUNK = 1 << 14  # small slices: the scan's own arrays stay a fraction of the body
_BACKSLASH, _QUOTE = 0x5C, 0x22
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1


def deepest(raw: bytes) -> int:
    """How deep arrays and objects nest in `raw` (which need not be valid JSON), in O(len(raw)).

    A byte is escaped when an odd run of backslashes precedes it; an unescaped quote toggles "inside a
    string"; brackets count only outside strings. All of it vectorised, a slice at a time, carrying the
    backslash run, the string state and the depth from one slice to the next.
    """
    run_in = parity = depth = most = 0
    view = memoryview(raw)
    for start in range(0, len(raw), _CHUNK):
        a = np.frombuffer(view[start : start + _CHUNK], dtype=np.uint8)
        pos = np.arange(a.size, dtype=np.int32)
        slash = a == _BACKSLASH
        last_other = np.maximum.accumulate(np.where(slash, np.int32(-1), pos))
        run = pos - last_other  # backslashes ending at each byte
        if run_in:
            run[last_other < 0] += run_in  # the run that began in the slice before
        before = np.empty_like(run)
        before[0], before[1:] = run_in, run[:-1]
        escaped = before % 2 == 1
        quote = (a == _QUOTE) & ~escaped
        quotes = np.cumsum(quote, dtype=np.int32)
        inside = (parity + quotes - quote) % 2 == 1
        steps = _DEPTH_STEP[a]
        steps[inside | escaped] = 0
        levels = np.cumsum(steps, dtype=np.int32) + np.int32(depth)
        most, depth = max(most, int(levels.max())), int(levels[-1])
        run_in, parity = int(run[-1]) if slash[-1] else 0, int(parity + quotes[-1]) % 2
    return most


def check_depth(raw: bytes, max_depth: int, what: str = "request JSON") -> None:
    # Fast exit for the usual body: it cannot nest deeper than it has opening brackets.
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return
    levels = deepest(raw)
    if levels > max_depth:
        raise MalformedRequest(f"{what} is nested too deeply: {levels:,} levels, over SLIMSERVE_MAX_JSON_DEPTH={max_depth:,}")


def loads(raw: bytes | str, max_depth: int | None = None, what: str = "request body") -> Any:
    """Parsed JSON, or MalformedRequest saying why not; `max_depth` checked first when given."""
    if max_depth is not None:
        check_depth(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw, max_depth, what)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MalformedRequest(f"{what} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except UnicodeDecodeError:
        raise MalformedRequest(f"{what} is not valid JSON: not UTF-8") from None
    except ValueError as exc:  # CPython's int conversion limit: "Exceeds the limit (4300 digits)..."
        raise MalformedRequest(f"{what} holds a number JSON cannot carry here: {str(exc).split(';')[0][:120]}") from None
    except RecursionError:
        raise MalformedRequest(f"{what} is nested too deeply") from None


def loads_object(raw: bytes, max_depth: int | None = None, what: str = "request body") -> dict:
    doc = loads(raw, max_depth, what)
    if not isinstance(doc, dict):
        raise MalformedRequest(f"{what} must be a JSON object")
    return doc


def dumps(doc: Any) -> bytes:
    """Compact, strict JSON (never NaN or Infinity, which JSON has no words for)."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()

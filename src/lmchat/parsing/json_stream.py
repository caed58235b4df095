"""Incremental re-serialisation of one JSON value into its canonical text, for streamed tool-call arguments.

:class:`JsonStream` reads a JSON value a piece at a time and answers each piece with the canonical text of what
that piece completed: the text :func:`lmchat.parsing.scan.dumps` gives for ``json.loads`` of the whole value
(``json.dumps`` defaults, non-ASCII kept, ``", "`` and ``": "`` separators, no other whitespace). So, for any
split of a well-formed value into pieces, the answers joined are exactly ``dumps(loads(value))`` (but for an
object with a repeated key, which is passed on as written instead of keeping only the last one).

What is sent when:

* ``{``, ``[``, ``}``, ``]`` as soon as they are read; string contents as they decode (an escape cut by the end of
  a piece, or a high surrogate that may still get its low half, waits for the next piece);
* a number or ``true``/``false``/``null`` once the character after it shows it is complete, as
  ``dumps(loads(token))`` (``1.50`` -> ``1.5``, ``1E5`` -> ``100000.0``);
* a key, with the comma before it, only together with the start of its value, so a key never comes without one.

``JsonStream(verbatim=True)`` sends the value as the model wrote it instead (spacing, number spelling and
escapes kept; a raw control character inside a string, which strict JSON readers refuse, is escaped), at the
same moments and with the same repair rules; joined, the pieces are then the input itself when it is valid.
The tool parsers use it for arguments written as a JSON text of their own (see ``tool_parsers/base.py``).

Reading stops at the end of the value (:attr:`JsonStream.state` ``DONE``; :meth:`JsonStream.feed` says how much of
the piece belonged to it) or at the first character that cannot continue valid JSON (``BROKEN``). A broken or
unfinished value (:meth:`JsonStream.close`) is closed so that the text sent is always valid JSON: an open string
is ended, an unfinished number or literal and a key without a value are dropped, open containers are closed.
:attr:`JsonStream.unread` then holds the input that is not in the text sent (from the dropped item on), so the
caller can keep it. Each character is read once (bar the few of an escape or token cut by a piece's end), so a
long value costs linear time.
"""

from __future__ import annotations

import json
import re

OPEN, DONE, BROKEN = "open", "done", "broken"
JSON_SPACE = " \t\n\r"
_SPACE_RUN = re.compile(r"[ \t\n\r]+")
_PLAIN_RUN = re.compile(r'[^"\\]+')  # string characters taken as written (raw control characters too, as the
#                                      lenient decoder of lmchat.parsing.scan.loads accepts them)
_TOKEN = re.compile(r"[0-9A-Za-z+\-.]+")  # the characters of a number or a literal
_TOKEN_START = frozenset("-0123456789tfnNI")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LITERALS = frozenset({"true", "false", "null", "NaN", "Infinity", "-Infinity"})  # what json.loads accepts
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_HEX = frozenset("0123456789abcdefABCDEF")

# what the next non-space character must be
_VALUE, _FIRST_VALUE, _FIRST_KEY, _KEY, _COLON, _AFTER = range(6)
_MORE = None  # an escape or token is cut by the end of the text: wait for more
_BAD = -1


def encode_string_part(text: str) -> str:
    """``text`` as it stands inside a canonical JSON string (without the quotes)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def canonical_token(token: str) -> str | None:
    """The canonical text of a number or literal token; None when it is neither."""
    if token not in _LITERALS and not _NUMBER.fullmatch(token):
        return None
    try:
        return json.dumps(json.loads(token))
    except ValueError:  # an integer too long for Python to read
        return None


class JsonStream:
    """One JSON value read piece by piece; see the module docstring."""

    def __init__(self, *, object_rest: bool = False, verbatim: bool = False) -> None:
        """``object_rest``: start inside an object just after a member's value (to read, and drop, the members
        that follow and the closing brace; the text sent is then meaningless). ``verbatim``: send the value as
        written instead of its canonical text (see the module docstring)."""
        self.state = OPEN
        self.unread = ""
        self._verbatim = verbatim
        self._stack: list[str] = ["}"] if object_rest else []  # the closers of the open containers
        self._next = _AFTER if object_rest else _VALUE
        self._held = ""  # canonical text waiting for the start of the next value: ", " and/or '"key": '
        self._held_raw = True  # verbatim: the held input can be sent as written (its key has no raw control char)
        self._string: str | None = None  # inside a string: "value" or "key"
        self._key: list[str] = []
        self._token = False  # a number or literal is being read (from self._resume)
        self._raw = ""  # input read since the text sent last caught up with it
        self._resume = 0  # where reading goes on in self._raw + the next piece
        self._resume_at = 0  # where a cut escape starts
        self._sent = 0  # while reading: the index of the work text up to which the text sent covers it

    def feed(self, text: str) -> tuple[str, int]:
        """Read ``text``: the text it completes and how many of its characters were read (all of them, unless
        the value ended inside ``text``; a broken value reads all and keeps the rest in :attr:`unread`)."""
        if self.state != OPEN:
            return "", 0
        work = self._raw + text
        base = len(self._raw)
        out: list[str] = []
        pos = self._read(work, self._resume, out)
        sync = self._sent
        if self.state == DONE:
            self._raw, self._resume = "", 0
            return "".join(out), max(pos - base, 0)
        if self.state == BROKEN:
            out.append(self._closing())
            self.unread = work[sync:]
            self._raw, self._resume = "", 0
            return "".join(out), len(text)
        self._raw, self._resume = work[sync:], pos - sync
        return "".join(out), len(text)

    def close(self) -> str:
        """The text ended inside the value: the text that completes it (see the module docstring)."""
        if self.state != OPEN:
            return ""
        out: list[str] = []
        work, self._sent = self._raw, 0
        if self._token:
            canonical = canonical_token(work[self._resume :])
            if canonical is not None:
                self._send(out, work, self._resume, len(work), canonical)
                self._after_value()
        if self.state == OPEN:
            out.append(self._closing())
            self.state = BROKEN
        self.unread = work[self._sent :]
        self._raw, self._resume = "", 0
        return "".join(out)

    # --- reading ------------------------------------------------------------------------------------------
    def _send(self, out: list[str], work: str, start: int, end: int, canonical: str, in_string: bool = False) -> None:
        """Send the value text ``work[start:end]`` (``canonical`` in its canonical form), with what is held."""
        if self._verbatim:
            piece = work[start:end]
            if in_string:
                piece = _CONTROL.sub(_escape_control, piece)
            held = work[self._sent : start] if self._held_raw else self._held
            out.append(held + piece)
        else:
            out.append(self._held + canonical)
        self._held, self._held_raw, self._sent = "", True, end

    def _read(self, work: str, pos: int, out: list[str]) -> int:
        """Read ``work`` from ``pos`` (``self._sent`` says how much of it the text sent covers): the index
        reached."""
        self._sent = 0
        size = len(work)
        while pos < size and self.state == OPEN:
            if self._string is not None:
                pos = self._read_string(work, pos, out)
                if pos is _MORE:
                    return self._resume_at
                if pos == _BAD:
                    self.state = BROKEN
                    return size
                continue
            char = work[pos]
            if char in JSON_SPACE:
                pos = _SPACE_RUN.match(work, pos).end()
                continue
            expected = self._next
            if expected in (_VALUE, _FIRST_VALUE):
                if char == "]" and expected == _FIRST_VALUE:
                    pos = self._close_container(work, pos, out)
                elif char in "{[":
                    self._send(out, work, pos, pos + 1, char)
                    self._stack.append("}" if char == "{" else "]")
                    self._next = _FIRST_KEY if char == "{" else _FIRST_VALUE
                    pos += 1
                elif char == '"':
                    self._send(out, work, pos, pos + 1, '"')
                    self._string = "value"
                    pos += 1
                elif char in _TOKEN_START:
                    token = _TOKEN.match(work, pos)
                    if token.end() == size:  # it may go on in the next piece
                        self._token = True
                        return pos
                    canonical = canonical_token(token.group())
                    if canonical is None:
                        self.state = BROKEN
                        return size
                    self._send(out, work, pos, token.end(), canonical)
                    pos = token.end()
                    self._after_value()
                else:
                    self.state = BROKEN
            elif expected in (_FIRST_KEY, _KEY):
                if char == '"':
                    self._string, self._key = "key", []
                    pos += 1
                elif char == "}" and expected == _FIRST_KEY:
                    pos = self._close_container(work, pos, out)
                else:
                    self.state = BROKEN
            elif expected == _COLON:
                if char == ":":
                    self._next = _VALUE
                    pos += 1
                else:
                    self.state = BROKEN
            elif char == ",":
                self._held = ", "
                self._next = _KEY if self._stack[-1] == "}" else _VALUE
                pos += 1
            elif self._stack and char == self._stack[-1]:
                pos = self._close_container(work, pos, out)
            else:
                self.state = BROKEN
        self._token = False
        return pos

    def _close_container(self, work: str, pos: int, out: list[str]) -> int:
        self._send(out, work, pos, pos + 1, work[pos])
        self._stack.pop()
        self._after_value()
        return pos + 1

    def _after_value(self) -> None:
        if self._stack:
            self._next = _AFTER
        else:
            self.state = DONE

    def _read_string(self, work: str, pos: int, out: list[str]) -> int | None:
        """Read string characters from ``pos``: the index reached, or _MORE / _BAD."""
        is_value = self._string == "value"
        run = _PLAIN_RUN.match(work, pos)
        if run is not None:
            if is_value:
                self._send(out, work, pos, run.end(), encode_string_part(run.group()), in_string=True)
            else:
                self._key.append(run.group())
            return run.end()
        if work[pos] == '"':
            self._string = None
            if is_value:
                self._send(out, work, pos, pos + 1, '"')
                self._after_value()
                return pos + 1
            key = "".join(self._key)
            self._held += json.dumps(key, ensure_ascii=False) + ": "
            self._held_raw = not _CONTROL.search(key)
            self._next = _COLON
            return pos + 1
        decoded = _escape(work, pos)
        if decoded is _MORE:
            self._resume_at = pos
            return _MORE
        if decoded == _BAD:
            return _BAD
        chars, end = decoded
        if is_value:
            self._send(out, work, pos, end, encode_string_part(chars))
        else:
            self._key.append(chars)
        return end

    def _closing(self) -> str:
        """What ends the open string (a value's; an unfinished key is dropped) and the open containers."""
        quote = '"' if self._string == "value" else ""
        self._string = None
        return quote + "".join(reversed(self._stack))


_CONTROL = re.compile(r"[\x00-\x1f]")


def _escape_control(found: re.Match[str]) -> str:
    return json.dumps(found.group())[1:-1]


def _escape(work: str, pos: int) -> tuple[str, int] | int | None:
    """The characters of the escape at ``work[pos]`` (a backslash) and the index past it; _MORE or _BAD."""
    if pos + 1 >= len(work):
        return _MORE
    kind = work[pos + 1]
    if kind != "u":
        return (_ESCAPES[kind], pos + 2) if kind in _ESCAPES else _BAD
    digits = work[pos + 2 : pos + 6]
    if len(digits) < 4:
        return _MORE if all(char in _HEX for char in digits) else _BAD
    if not _HEX4.fullmatch(digits):
        return _BAD
    code, end = int(digits, 16), pos + 6
    if 0xD800 <= code <= 0xDBFF:  # a high surrogate: combined with a low one written right after it
        after = work[end : end + 6]
        if len(after) < 6 and "\\u".startswith(after[:2]) and all(char in _HEX for char in after[2:]):
            return _MORE
        if after.startswith("\\u") and _HEX4.fullmatch(after[2:]):
            low = int(after[2:], 16)
            if 0xDC00 <= low <= 0xDFFF:
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), end + 6
    return chr(code), end

"""A parser for protobuf text format (``.prototxt``), schema-free: it reads any field, so old (V1) and new (V2)
Caffe files, and training-only settings this project ignores, all parse; a syntax error names line and column."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from deepvis.core.errors import ModelError
from deepvis.core.files import read_text
from deepvis.models.caffe.message import Ident, Message

_TOKEN = re.compile(r"""
    (?P<skip>[ \t\r\n\f\v]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)[fF]?)(?![\w.])
  | (?P<ident>-?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}<>:,;\[\]])
""", re.VERBOSE)
_CLOSING = {"{": "}", "<": ">"}
_FLOAT_WORDS = {"inf": float("inf"), "infinity": float("inf"), "nan": float("nan")}


class _Token:
    __slots__ = ("kind", "text", "line", "column")

    def __init__(self, kind: str, text: str, line: int, column: int):
        self.kind, self.text, self.line, self.column = kind, text, line, column


def read_prototxt(path: str | Path) -> Message:
    """Parse a ``.prototxt`` file into a :class:`Message` (a missing or unreadable file is a ``ModelError``)."""
    path = Path(path)
    return parse_prototxt(read_text(path, "prototxt"), path.name)


def parse_prototxt(text: str, source: str = "<prototxt>") -> Message:
    """Parse protobuf text format; ``source`` prefixes error positions (``source:line:column``)."""
    parser = _Parser(_tokenize(text, source), source)
    root = parser.fields(Message(f"{source}:1:1"), closing=None)
    return root


def _tokenize(text: str, source: str) -> list[_Token]:
    tokens = []
    position, line, line_start = 0, 1, 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        column = position - line_start + 1
        if match is None:
            raise ModelError(f"{source}:{line}:{column}: syntax error: unexpected character {text[position]!r}")
        kind = match.lastgroup
        if kind != "skip":
            tokens.append(_Token(kind, match.group(), line, column))
        newlines = match.group().count("\n")
        if newlines:
            line += newlines
            line_start = match.start() + match.group().rindex("\n") + 1
        position = match.end()
    tokens.append(_Token("end", "end of file", line, position - line_start + 1))
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Token], source: str):
        self.tokens, self.source, self.index = tokens, source, 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def error(self, token: _Token, expected: str) -> ModelError:
        found = token.text if token.kind == "end" else repr(token.text)
        return ModelError(f"{self.source}:{token.line}:{token.column}: syntax error: expected {expected}, "
                          f"found {found}")

    def fields(self, message: Message, closing: str | None) -> Message:
        """Fields up to ``closing`` (or the end of the file at top level)."""
        while True:
            token = self.peek()
            if token.kind == "end" and closing is None or token.text == closing and token.kind == "punct":
                if closing is not None:
                    self.take()
                return message
            if token.kind != "ident":
                raise self.error(token, f"a field name or '{closing}'" if closing else "a field name")
            self.field(message)
            if self.peek().text in (",", ";") and self.peek().kind == "punct":
                self.take()

    def field(self, message: Message) -> None:
        name = self.take()
        token = self.peek()
        colon = token.kind == "punct" and token.text == ":"
        if colon:
            self.take()
            token = self.peek()
        if token.kind == "punct" and token.text in _CLOSING:
            self.take()
            child = Message(f"{self.source}:{name.line}:{name.column}")
            message.add(name.text, self.fields(child, _CLOSING[token.text]))
        elif not colon:
            raise self.error(token, f"':' or '{{' after field name '{name.text}'")
        elif token.kind == "punct" and token.text == "[":
            self.take()
            while not (self.peek().kind == "punct" and self.peek().text == "]"):
                message.add(name.text, self.scalar(name.text))
                if self.peek().kind == "punct" and self.peek().text == ",":
                    self.take()
                elif not (self.peek().kind == "punct" and self.peek().text == "]"):
                    raise self.error(self.peek(), "',' or ']'")
            self.take()
        else:
            message.add(name.text, self.scalar(name.text))

    def scalar(self, field: str):
        token = self.take()
        if token.kind == "string":
            text = _unquote(token.text)
            while self.peek().kind == "string":  # adjacent strings concatenate, as in C
                text += _unquote(self.take().text)
            return text
        if token.kind == "number":
            return _number(token.text)
        if token.kind == "ident":
            word = token.text.lstrip("-").lower()
            if word in _FLOAT_WORDS:
                return -_FLOAT_WORDS[word] if token.text.startswith("-") else _FLOAT_WORDS[word]
            return Ident(token.text)
        raise self.error(token, f"a value for field '{field}'")


def _unquote(quoted: str) -> str:
    body = quoted[1:-1]
    if "\\" not in body:
        return body
    return codecs.escape_decode(body.encode("utf-8"))[0].decode("utf-8", errors="replace")


def _number(text: str) -> int | float:
    lowered = text.lower()
    if lowered.lstrip("+-").startswith("0x"):
        return int(lowered, 16)
    if any(c in lowered for c in ".e") or lowered.endswith("f"):
        return float(lowered.rstrip("f"))
    return int(lowered)

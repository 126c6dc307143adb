"""Evaluate a few variable `validation` conditions, because Terraform cannot run here.

Deliberately small: it knows only what the conditions it is used on are written with
(string, number, bool and null literals, lists, `var.<name>`, `==`, `!=`, `<`, `<=`, `>`,
`>=`, `!`, `&&`, `||`, parentheses, and the functions `contains`, `can`, `regex`,
`length` and `floor`). Anything else raises Unsupported, and `can()` never swallows Unsupported, so a
condition rewritten with other syntax fails its test loudly instead of being guessed at.
It is not an HCL interpreter: teach it a construct only when a tested condition needs it.

Semantics kept from Terraform: `regex()` is an unanchored search that fails when nothing
matches (hence `can(regex(...))`); `==` between values of different types is false;
`&&` and `||` take booleans only and evaluate both sides (no short-circuit, the stricter
reading: an error on either side is an error). Python's `re` stands in for RE2, which
is the same language for the character classes and anchors these patterns use.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from terraform_helpers import expr


class Unsupported(Exception):
    """The condition uses syntax this evaluator does not know: extend it, or don't use it."""


class EvalError(Exception):
    """What Terraform would report as an evaluation error (what `can()` turns into false)."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "str", "num", "name", "op"
    value: Any


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>\d+(?:\.\d+)?)
      | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
      | (?P<op>\|\||&&|==|!=|<=|>=|[<>!()\[\],.])
      | (?P<quote>")
    )""",
    re.X,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def _read_string(text: str, pos: int) -> tuple[str, int]:
    """An HCL quoted string starting after its opening quote: (value, position after it)."""
    out = []
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\":
            nxt = text[pos + 1 : pos + 2]
            if nxt not in _ESCAPES:
                raise Unsupported(f"string escape \\{nxt} in {text!r}")
            out.append(_ESCAPES[nxt])
            pos += 2
            continue
        if text.startswith(("${", "%{"), pos):
            raise Unsupported(f"template sequence in a string literal: {text!r}")
        out.append(char)
        pos += 1
    raise Unsupported(f"unterminated string in {text!r}")


def _tokens(text: str) -> list[_Token]:
    tokens, pos = [], 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        match = _TOKEN.match(text, pos)
        if not match:
            raise Unsupported(f"cannot read {text[pos:pos + 20]!r} in {text!r}")
        pos = match.end()
        if match["quote"]:
            value, pos = _read_string(text, pos)
            tokens.append(_Token("str", value))
        elif match["num"]:
            number = float(match["num"])
            tokens.append(_Token("num", int(number) if number.is_integer() else number))
        elif match["name"]:
            tokens.append(_Token("name", match["name"]))
        else:
            tokens.append(_Token("op", match["op"]))
    return tokens


def _same_type(left: Any, right: Any) -> bool:
    def kind(value: Any) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, (int, float)):
            return "number"
        return type(value).__name__

    return kind(left) == kind(right)


class _Parser:
    """Recursive descent over the token list, evaluating as it goes.

    Grammar (lowest precedence first, as in HCL):
        or   := and ("||" and)*
        and  := cmp ("&&" cmp)*
        cmp  := unary (("=="|"!="|"<"|"<="|">"|">=") unary)?
        unary:= "!" unary | atom
        atom := literal | "[" list "]" | "(" or ")" | "var" "." NAME | FUNC "(" args ")"
    `can(x)` needs x unevaluated, so each rule takes `live`: False while skipping over
    an argument that must not raise.
    """

    FUNCTIONS = ("contains", "can", "regex", "length", "floor")

    def __init__(self, text: str, variables: dict[str, Any]) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.pos = 0
        self.variables = variables

    def _peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, kind: str, value: Any = None) -> _Token:
        token = self._peek()
        if token is None or token.kind != kind or (value is not None and token.value != value):
            raise Unsupported(f"expected {value or kind} at token {self.pos} of {self.text!r}, got {token}")
        self.pos += 1
        return token

    def _at(self, kind: str, value: Any) -> bool:
        token = self._peek()
        return token is not None and token.kind == kind and token.value == value

    def parse(self) -> Any:
        value = self._or()
        if self._peek() is not None:
            raise Unsupported(f"unexpected {self._peek()} in {self.text!r}")
        return value

    def _bool(self, value: Any, op: str) -> bool:
        if not isinstance(value, bool):
            raise EvalError(f"{op} needs booleans, got {value!r}")
        return value

    def _or(self) -> Any:
        value = self._and()
        while self._at("op", "||"):
            self.pos += 1
            right = self._and()
            value = self._bool(value, "||") | self._bool(right, "||")
        return value

    def _and(self) -> Any:
        value = self._cmp()
        while self._at("op", "&&"):
            self.pos += 1
            right = self._cmp()
            value = self._bool(value, "&&") & self._bool(right, "&&")
        return value

    def _cmp(self) -> Any:
        left = self._unary()
        token = self._peek()
        if token and token.kind == "op" and token.value in ("==", "!=", "<", "<=", ">", ">="):
            self.pos += 1
            right = self._unary()
            if token.value in ("==", "!="):
                equal = _same_type(left, right) and left == right
                return equal if token.value == "==" else not equal
            for side in (left, right):
                if isinstance(side, bool) or not isinstance(side, (int, float)):
                    raise EvalError(f"{token.value} needs numbers, got {side!r}")
            return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[token.value]
        return left

    def _unary(self) -> Any:
        if self._at("op", "!"):
            self.pos += 1
            return not self._bool(self._unary(), "!")
        return self._atom()

    def _atom(self) -> Any:
        token = self._peek()
        if token is None:
            raise Unsupported(f"unexpected end of {self.text!r}")
        self.pos += 1
        if token.kind in ("str", "num"):
            return token.value
        if token.kind == "op" and token.value == "(":
            value = self._or()
            self._take("op", ")")
            return value
        if token.kind == "op" and token.value == "[":
            items = []
            while not self._at("op", "]"):
                items.append(self._or())
                if not self._at("op", "]"):
                    self._take("op", ",")
            self._take("op", "]")
            return items
        if token.kind == "name":
            if token.value in ("true", "false"):
                return token.value == "true"
            if token.value == "null":
                return None
            if token.value == "var":
                self._take("op", ".")
                name = self._take("name").value
                if self._at("op", ".") or self._at("op", "["):
                    raise Unsupported(f"attribute or index access on var.{name} in {self.text!r}")
                if name not in self.variables:
                    raise KeyError(f"var.{name} has no value in this evaluation")
                return self.variables[name]
            if token.value in self.FUNCTIONS and self._at("op", "("):
                return self._call(token.value)
        raise Unsupported(f"{token.value!r} in {self.text!r}")

    def _call(self, name: str) -> Any:
        self._take("op", "(")
        if name == "can":
            # Evaluate the argument; only a Terraform evaluation error becomes false.
            start = self.pos
            try:
                self._or()
                result = True
            except EvalError:
                result = False
                self.pos = start
                self._skip_to_closing_paren()
            self._take("op", ")")
            return result
        args = [self._or()]
        while self._at("op", ","):
            self.pos += 1
            args.append(self._or())
        self._take("op", ")")
        return getattr(self, f"_fn_{name}")(*args)

    def _skip_to_closing_paren(self) -> None:
        """After an error inside can(...): move to its closing parenthesis.

        Every token is still checked to be one the tokenizer knows, so an unsupported
        construct after the error point cannot hide inside can()."""
        depth = 0
        while True:
            token = self._peek()
            if token is None:
                raise Unsupported(f"unbalanced parentheses in {self.text!r}")
            if token.kind == "name" and token.value not in (*self.FUNCTIONS, "var", "true", "false", "null"):
                if self.pos == 0 or self.tokens[self.pos - 1] != _Token("op", "."):
                    raise Unsupported(f"{token.value!r} in {self.text!r}")
            if token.kind == "op" and token.value in ("(", "["):
                depth += 1
            elif token.kind == "op" and token.value in (")", "]"):
                if depth == 0:
                    return
                depth -= 1
            self.pos += 1

    @staticmethod
    def _fn_contains(collection: Any, value: Any) -> bool:
        if not isinstance(collection, list):
            raise EvalError(f"contains() needs a list, got {collection!r}")
        return any(_same_type(item, value) and item == value for item in collection)

    @staticmethod
    def _fn_regex(pattern: Any, string: Any) -> str:
        if not isinstance(pattern, str) or not isinstance(string, str):
            raise EvalError(f"regex() needs strings, got {pattern!r}, {string!r}")
        match = re.search(pattern, string)
        if match is None:
            raise EvalError(f"regex {pattern!r} does not match {string!r}")
        return match.group(0)

    @staticmethod
    def _fn_floor(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EvalError(f"floor() needs a number, got {value!r}")
        return math.floor(value)

    @staticmethod
    def _fn_length(value: Any) -> int:
        if not isinstance(value, (str, list, dict)):
            raise EvalError(f"length() of {value!r}")
        return len(value)


def evaluate(condition: str, variables: dict[str, Any]) -> Any:
    """The value of one condition (HCL source, with or without its "${...}")."""
    return _Parser(expr(condition) or condition, variables).parse()


def failed_validations(variable: dict, variables: dict[str, Any]) -> list[str]:
    """The error messages of a variable's validations that fail for these values.

    A condition that errors (rather than being false) fails too, as Terraform reports it
    as an invalid value for the variable all the same."""
    failures = []
    for validation in variable.get("validation", []):
        try:
            ok = evaluate(validation["condition"], variables)
        except EvalError:
            ok = False
        if not isinstance(ok, bool):
            raise Unsupported(f"condition {validation['condition']!r} is not a boolean: {ok!r}")
        if not ok:
            failures.append(validation["error_message"])
    return failures

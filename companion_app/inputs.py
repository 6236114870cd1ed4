"""What every form post and API body is checked for before anything is asked of the box: no
control characters, and no field the form always sends missing.

Why here, once: a NUL or an escape sequence stored in a profile field or a rule would reach the
vendors, the audit log, the CLI and the box's screen; and a field that is missing is not a field
left empty — read as empty, a `/rules/` post with no fields used to save every weight as 0 and
the terms filter off. Each page checks its own fields with `form_errors` so the message appears
next to the field (status 400, nothing changed); `pages.change` refuses a change whose request
holds a control character anywhere, as a last net; the API checks every string of its JSON body
(`json_control`).

Control characters are Unicode category Cc (C0, DEL and C1; NUL included). Tab, CR and LF are
let through only in the fields that are text areas (`MULTILINE`), where a browser sends them for
a line break; anywhere else, a one-line field, they can only come from a crafted request.
"""
from __future__ import annotations

import unicodedata
from typing import Any, Iterable

from device.textsafe import escape

# The app's <textarea>s: a review, a pasted claim, the rules' advanced JSON.
MULTILINE = frozenset({"text", "token", "attr_filters", "attr_weights"})
LINE_BREAKS = frozenset("\t\r\n")
MISSING = "missing from what was sent: nothing was changed (reload the page and try again)"


def control_char(value: str, multiline: bool = False) -> str | None:
    """The first control character of `value` (tab, CR, LF allowed when `multiline`), or None."""
    for ch in value:
        if unicodedata.category(ch) == "Cc" and not (multiline and ch in LINE_BREAKS):
            return ch
    return None


def control_message(ch: str) -> str:
    return (f"holds a control character ({escape(ch)}), which is not allowed here: remove it "
            "(nothing was changed)")


def _values(form: Any, name: str) -> list[Any]:
    return list(form.getlist(name)) if hasattr(form, "getlist") else [form.get(name)]


def control_errors(form: Any, multiline: Iterable[str] = MULTILINE) -> dict[str, str]:
    """{field: message} for each field (or field name) holding a control character."""
    multi = frozenset(multiline)
    errors: dict[str, str] = {}
    for name in form:
        if (ch := control_char(name)) is not None:
            errors["_form"] = f"a field name {control_message(ch)}"
            continue
        for value in _values(form, name):
            if isinstance(value, str) and (ch := control_char(value, name in multi)) is not None:
                errors[name] = control_message(ch)
                break
    return errors


def missing(form: Any, required: Iterable[str]) -> list[str]:
    return [name for name in required if name not in form]


def form_errors(form: Any, required: Iterable[str] = (), multiline: Iterable[str] = MULTILINE) -> dict[str, str]:
    """Field errors for a form post: each missing field, each field with a control character,
    and '_form', one sentence naming them all (for the top of the page, and for the fields a
    page has no place for, such as a hidden `next`). {} when the post may go on."""
    errors = control_errors(form, multiline)
    gone = missing(form, required)
    if not errors and not gone:
        return {}
    parts = [f"missing from the form: {', '.join(gone)} (reload the page and try again)"] if gone else []
    parts += [f"the field {k!r} {v.removesuffix(' (nothing was changed)')}" if k != "_form" else v
              for k, v in errors.items()]
    for name in gone:
        errors[name] = MISSING
    errors["_form"] = "Nothing was changed: " + "; ".join(parts) + "."
    return errors


def summary(errors: dict[str, str]) -> str:
    """One message for a page with no place next to each field (an error page)."""
    return errors.get("_form") or "Nothing was changed: " + "; ".join(f"{k}: {v}" for k, v in errors.items())


def json_control(value: Any, path: str = "body") -> tuple[str, str] | None:
    """(where, character) for the first string (object key or value) in a JSON document that
    holds a control character, or None."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            if (ch := control_char(v)) is not None:
                return where, ch
        elif isinstance(v, dict):
            for k, item in v.items():
                key = str(k)
                if (ch := control_char(key)) is not None:
                    return f"{where} (a key)", ch
                stack.append((key if where == "body" else f"{where}.{key}", item))
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(v))
    return None

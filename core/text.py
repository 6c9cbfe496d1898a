"""Values as text: user text shown literally (`escape_markdown`) and JSON with numpy values (`to_json`); no core imports.

Streamlit renders markdown (links, images, emphasis, headings, LaTeX, emoji shortcodes) in
`st.markdown`, `st.write`, `st.title`, `st.subheader`, `st.success`, `st.error`... A user string put
there unescaped is markup, not text: a name like ``[click](http://evil.example)`` becomes a link.
`escape_markdown` backslash-escapes every character markdown could act on, so the rendered text is
the string as typed. It lives in its own module, at the bottom of core's layers (no imports), so
every page and core module can use it without reaching across layers.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that can start or
# close markup: links/images [ ] ( ) !, emphasis * _ ~, code `, headings #, HTML and block quotes
# < >, tables |, lists and rules + - . =, entities &, Streamlit's LaTeX $ and :emoji: / :color[...]
# directives, and the backslash itself (escaped first, so the escapes added here stay escapes).
MARKDOWN_SPECIAL = "\\`*_{}[]()#+-.!|~<>$:&="
_SPECIAL_RE = re.compile("([" + re.escape(MARKDOWN_SPECIAL) + "])")


def escape_markdown(text: str) -> str:
    r"""`text` escaped so markdown shows it literally (no link, image, HTML, emphasis or heading).

    >>> print(escape_markdown("[click](http://x) <b>**bold**</b>"))
    \[click\]\(http\://x\) \<b\>\*\*bold\*\*\</b\>
    >>> escape_markdown("AAPL")
    'AAPL'
    """
    return _SPECIAL_RE.sub(r"\\\1", str(text))


def to_json(value: Any) -> str:
    """JSON with sorted keys; numpy scalars, dates and paths become plain values (storage and reports alike)."""
    return json.dumps(value, default=_json_default, sort_keys=True)


def to_strict_json(value: Any) -> str:
    """`to_json` for files other programs read: NaN and infinities (an undefined metric, e.g. ROC AUC of a
    one-class fold) become null, because strict JSON parsers reject Python's bare `NaN`."""
    return json.dumps(json_safe(value), default=_json_default, sort_keys=True, allow_nan=False, indent=1)


def json_safe(value: Any) -> Any:
    """JSON-safe values: NaN / inf become None, numpy scalars become Python ones (dicts and lists walked)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")

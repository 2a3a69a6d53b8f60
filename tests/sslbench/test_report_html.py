"""The HTML report is rendered from a Jinja2 template with the same content as the 0.1 string-built page."""

from __future__ import annotations

import html
import json
from pathlib import Path

from sslbench.reports import _html

DATA = Path(__file__).parent / "data"


def test_html_from_the_template_matches_the_string_built_page() -> None:
    blocks = [(k, tuple(v) if isinstance(v, list) else v) for k, v in json.loads((DATA / "report_blocks.json").read_text())]
    new = _html(blocks, "title <&> 'x'")
    old = (DATA / "report_0.1.html").read_text(encoding="utf-8")
    assert html.unescape(new) == html.unescape(old)  # the same text and tags, entities aside (&#39; vs &#x27;)
    assert "<b>" not in new and "&lt;b&gt;para" in new  # every value escaped

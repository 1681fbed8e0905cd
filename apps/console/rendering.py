"""Artifacts as the console shows them: LLM output, so untrusted, rendered so nothing in it runs.

Markdown goes through markdown-it-py with raw HTML off (a `<script>` is shown as text, and its
link validation drops `javascript:` URLs), then through nh3, an allow-list sanitiser, in case a
rule ever lets something through. JSON is pretty-printed as text; anything else is shown as text.
Jinja escapes every text it inserts; only `Rendered.html` is marked safe, after nh3.
"""

import json
from dataclasses import dataclass

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

# Past this an artifact is linked, not rendered: a page stays quick whatever a node wrote.
MAX_RENDERED_BYTES = 512 * 1024

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


@dataclass(frozen=True, slots=True)
class Rendered:
    """An artifact for a page: sanitised HTML, or text to show preformatted."""

    html: Markup | None = None
    text: str | None = None


def render_markdown(source: str) -> Markup:
    """`source` as HTML, without raw HTML, sanitised."""
    html = nh3.clean(_markdown.render(source), link_rel="noopener noreferrer nofollow")
    return Markup(html)


def render_artifact(content: bytes, media_type: str) -> Rendered:
    """Markdown as HTML, JSON pretty-printed, anything else as text."""
    text = content.decode("utf-8", errors="replace")
    if media_type.startswith("text/markdown"):
        return Rendered(html=render_markdown(text))
    if media_type.startswith("application/json") or media_type.endswith("+json"):
        try:
            return Rendered(text=json.dumps(json.loads(text), indent=2, ensure_ascii=False))
        # Not JSON, or nested past what the parser recurses into: LLM output, shown as it is.
        except (ValueError, RecursionError):
            return Rendered(text=text)
    return Rendered(text=text)

"""Artifacts rendered for the console, and a DAG laid out: no markup from the input survives."""

from apps.console.dag import NODE_WIDTH, lay_out
from apps.console.rendering import render_artifact, render_markdown


def test_markdown_keeps_its_formatting_and_drops_raw_html_and_script_urls() -> None:
    html = render_markdown(
        "# Title\n\n**bold** <script>alert(1)</script>\n\n"
        '<img src=x onerror="alert(2)">\n\n[link](javascript:alert(3)) [ok](https://example.com)'
    )
    assert "<h1>Title</h1>" in html and "<strong>bold</strong>" in html
    assert "<script" not in html and "<img" not in html and "javascript:" not in html.split("](")[0]
    assert "&lt;script&gt;" in html
    assert 'href="https://example.com"' in html and 'rel="noopener noreferrer nofollow"' in html
    assert 'href="javascript' not in html


def test_json_is_pretty_printed_and_other_types_are_text() -> None:
    rendered = render_artifact(b'{"a": [1, 2], "b": "<b>"}', "application/json")
    assert (
        rendered.html is None
        and rendered.text == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": "<b>"\n}'
    )
    assert render_artifact(b"{not json", "application/json").text == "{not json"
    assert render_artifact(b"<b>plain</b>", "text/plain").text == "<b>plain</b>"


def test_a_dag_is_layered_left_to_right_by_its_longest_path() -> None:
    nodes = [
        {"id": "1", "key": "plan", "status": "succeeded", "deps": []},
        {"id": "2", "key": "a", "status": "running", "deps": ["plan"]},
        {"id": "3", "key": "b", "status": "pending", "deps": ["plan", "a"]},
        {"id": "4", "key": "c", "status": "pending", "deps": ["plan"]},
    ]
    layout = lay_out(nodes)
    x = {node.key: node.x for node in layout.nodes}
    assert x["plan"] < x["a"] == x["c"] < x["b"]
    assert len(layout.edges) == 4
    assert layout.width >= x["b"] + NODE_WIDTH
    assert lay_out([]).nodes == []

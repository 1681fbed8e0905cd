"""Reading the YAML and JSON documents operators write: gate policies and settings.

Both readers are strict where a silent guess would hide a mistake: a key given twice is an error
(PyYAML and `json` would keep the last one), and YAML aliases are refused, so a small document
cannot expand into a huge one. Errors say where, as `line L, column C: what`. A YAML scalar that
looks like a value Python cannot build (`2020-13-45`, an integer of 5,000 digits) stays the text
it was written as, for the checks of its field to judge.
"""

import json
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode


class DocumentError(ValueError):
    """A document that is not well-formed YAML or JSON; the message says where and why."""


class _StrictLoader(yaml.SafeLoader):
    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError):
            if not isinstance(node, ScalarNode):
                raise
        self.recursive_objects.pop(node, None)
        self.constructed_objects[node] = node.value
        return node.value

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ComposerError(None, None, "aliases (*name) are not accepted", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) or key is None:
                if key in seen:
                    raise ConstructorError(
                        None, None, f"key {key!r} is given twice", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """The one YAML document in `text` (JSON is YAML too), or `DocumentError` saying where."""
    try:
        # A SafeLoader subclass: builds plain data only, never Python objects.
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise DocumentError(f"{where}{error.problem}") from None
    except yaml.YAMLError as error:
        raise DocumentError(str(error)) from None
    except RecursionError:
        raise DocumentError("the document is nested too deeply") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise DocumentError(f"key {key!r} is given twice")
        document[key] = value
    return document


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        # Past `sys.get_int_max_str_digits()`: reading it would cost quadratic time.
        raise DocumentError(f"an integer of {len(text.lstrip('-'))} digits is too long") from None


def read_json(data: bytes) -> Any:
    """The JSON document in `data`, or `DocumentError` saying where."""
    try:
        return json.loads(data, object_pairs_hook=_unique_keys, parse_int=_integer)
    except json.JSONDecodeError as error:
        raise DocumentError(f"line {error.lineno}, column {error.colno}: {error.msg}") from None
    except UnicodeDecodeError:
        raise DocumentError("the document is not UTF-8 text") from None
    except RecursionError:
        raise DocumentError("the document is nested too deeply") from None

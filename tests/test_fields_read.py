"""Every field a dataclass of the product keeps is read by the product: no parsed field nobody reads.

Read from the source like :mod:`tests.test_layers`: a field counts as read where product code (not
the tools layer: the command line, demo, FakeHelix) loads it as an attribute, ``x.field``.
"""

from __future__ import annotations

import ast

from .test_layers import LAYERS, layer_of, sources

TOOLS = len(LAYERS) - 1
READ_OTHERWISE = {
    # to_private() copies it into the pipe's body, where read_conversation() reads it back by name
    "helix_pipeline.conversation.Conversation.chat_id",
}
ANSWERS = (
    "helix_pipeline.stores.base.RecordResult",
    "helix_pipeline.stores.base.ConversationSummary",
)
"""What a store answers its callers (the command line, the tests), not anything parsed."""


def product_trees() -> dict[str, ast.Module]:
    return {
        name: ast.parse(text)
        for name, (text, _) in sources().items()
        if (layer_of(name) or 0) < TOOLS
    }


def dataclass_fields(trees: dict[str, ast.Module]) -> dict[str, list[str]]:
    """``module.Class`` -> the names of its fields, for each ``@dataclass`` of the product."""
    found = {}
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                "dataclass" in ast.unparse(decorator) for decorator in node.decorator_list
            ):
                found[f"{module}.{node.name}"] = [
                    item.target.id
                    for item in node.body
                    if isinstance(item, ast.AnnAssign)
                    and isinstance(item.target, ast.Name)
                    and "ClassVar" not in ast.unparse(item.annotation)
                ]
    return found


def attributes_read(trees: dict[str, ast.Module]) -> set[str]:
    return {
        node.attr
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)
    }


def test_every_field_of_a_product_dataclass_is_read() -> None:
    trees = product_trees()
    read = attributes_read(trees)
    unread = [
        f"{owner}.{field}"
        for owner, fields in dataclass_fields(trees).items()
        if owner not in ANSWERS
        for field in fields
        if field not in read and f"{owner}.{field}" not in READ_OTHERWISE
    ]
    assert not unread, "fields no product code reads: " + ", ".join(unread)

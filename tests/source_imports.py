"""The modules a Python source file imports, read from its syntax tree (never run)."""

from __future__ import annotations

import ast


def imported_modules(source: str, filename: str) -> list[tuple[str, bool]]:
    """``(top-level module, imported at module level)`` for every absolute import.

    An import inside a function, a class, or an ``if``/``try`` block does not count as
    module level (an optional dependency imported where it is used).
    """
    tree = ast.parse(source, filename=filename)
    module_level = {
        id(node) for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.extend((name.split(".")[0], id(node) in module_level) for name in names)
    return found

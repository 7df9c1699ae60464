"""Fail when a function in avemo/ is longer than LIMIT lines, from `def` to its last line (docstring included,
decorators not counted): `make lint` runs it beside ruff's complexity limit (C90, 12)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LIMIT = 60


def long_functions(root: Path, limit: int = LIMIT) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1  # decorators (e.g. click options) not counted
                if length > limit:
                    out.append(f"{path}:{node.lineno}: {node.name} is {length} lines (limit {limit})")
    return out


if __name__ == "__main__":
    found = long_functions(Path(sys.argv[1] if len(sys.argv) > 1 else "avemo"))
    print("\n".join(found) or f"no function over {LIMIT} lines")
    sys.exit(1 if found else 0)

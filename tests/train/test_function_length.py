"""train/ stays readable: no function longer than 150 lines (issue 22)."""

import ast
from pathlib import Path

import speakerprint.train

LIMIT = 150


def test_no_function_in_train_is_longer_than_the_limit():
    root = Path(speakerprint.train.__file__).parent
    too_long = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LIMIT:
                    too_long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert len(list(root.glob("*.py"))) >= 8  # the package was found
    assert too_long == []

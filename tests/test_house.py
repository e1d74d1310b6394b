"""House rules the code keeps: library strings spell no CLI flags; no function over 80 lines. (The floors
are an import-linter contract, run by ``make lint``.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import wsiseg


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, text)`` of a module's strings that are not docstrings; an f-string is one text, its fields
    written ``{}``."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    in_fstrings = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                   for part in node.values}
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            texts.append((node.lineno, "".join(p.value if isinstance(p, ast.Constant) else "{}"
                                               for p in node.values)))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
              and id(node) not in in_fstrings):
            texts.append((node.lineno, node.value))
    return texts


def test_library_messages_name_no_command_line_flags() -> None:
    """Outside wsiseg.cli, strings name options as wsiseg.errors.option does (`slide_mpp`), never as flags
    (--slide-mpp); a whole command to run, in backticks (`wsiseg models add-base FILE`), may hold flags."""
    package = Path(wsiseg.__file__).parent
    flag = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
    command = re.compile(r"`wsiseg [^`]*`")
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] == "cli":
            continue
        for line, text in _strings(ast.parse(path.read_text(encoding="utf-8"))):
            found += [f"{path.relative_to(package)}:{line}: {m}" for m in flag.findall(command.sub("", text))]
    assert not found, found


def test_no_function_is_longer_than_80_lines() -> None:
    package = Path(wsiseg.__file__).parent
    long = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > 80:
                    long.append(f"{path.relative_to(package)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long

"""Reading manifests for a person: a missing file, a directory or bad YAML is one clear line,
never a traceback. Each document keeps the line it starts at (for GitHub annotations)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from canary.cli.api import CliError

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Doc:
    file: str
    line: int  # 1-based line of the document's first line
    data: Any
    lines: dict[str, int]  # "spec.analysis.stepWeight" -> its 1-based line (mapping keys only)


def _key_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = f"{prefix}.{key.value}" if prefix else str(key.value)
            out.setdefault(name, key.start_mark.line + 1)
            _key_lines(value, name, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            name = f"{prefix}.{i}"
            out.setdefault(name, item.start_mark.line + 1)
            _key_lines(item, name, out)


def expand(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        path = Path(p)
        if p != "-" and path.is_dir():
            found = sorted(str(f) for f in path.rglob("*") if f.suffix in SUFFIXES and f.is_file())
            if not found:
                raise CliError(f"{p}: no .yaml, .yml or .json file in the directory")
            out.extend(found)
        else:
            out.append(p)
    return out


def read_docs(file: str) -> list[Doc]:
    """The documents of a YAML (or JSON) file, with their lines; CliError for what cannot be read."""
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{file}: is a directory") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"{file}: cannot read it: {e}") from None
    name = "<stdin>" if file == "-" else file
    docs = []
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if node is None:
                continue
            lines: dict[str, int] = {}
            _key_lines(node, "", lines)
            data = yaml.SafeLoader(yaml.serialize(node)).get_single_data()
            docs.append(Doc(name, node.start_mark.line + 1, data, lines))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CliError(f"{name}{where}: not valid YAML: {problem}") from None
    return docs

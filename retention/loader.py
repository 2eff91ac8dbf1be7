"""Load a policy file: YAML 1.2 with positions -> ${ENV} -> validated `Policy`.

Every problem in a file is collected and raised together as one `PolicyError`,
each issue located as ``FILE:LINE:COL: path.to.field: message``. Nothing here
touches a store.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.reader import ReaderError

from retention.errors import Issue, PolicyError, Severity
from retention.policy import Policy, reference_issues

__all__ = ["LoadedPolicy", "load_policy", "load_text", "render_path"]

TreePath = tuple[str | int, ...]
_ENV = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})")
_SUBSTITUTED = {"url", "root"}


@dataclass(frozen=True)
class LoadedPolicy:
    """A validated policy with the file it came from and where each field sits in it."""

    policy: Policy
    file: str
    positions: Mapping[TreePath, tuple[int, int]] = field(repr=False)
    warnings: tuple[Issue, ...] = ()
    #: Values substituted from the environment; never to be printed.
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def base_dir(self) -> Path:
        """Directory of the policy file (relative SQLite paths and the audit file live here)."""
        return Path(self.file).resolve().parent

    def issue(self, path: TreePath, message: str, severity: Severity = Severity.ERROR) -> Issue:
        """An issue about the field at `path`, located in the file."""
        line, column = _nearest(self.positions, path)
        return Issue(message, render_path(path), self.file, line, column, severity)


def render_path(path: TreePath) -> str:
    """``('rules', 2, 'period')`` -> ``rules[2].period``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_policy(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    extra_holds: Sequence[Mapping[str, Any]] = (),
) -> LoadedPolicy:
    """Read and validate the policy file at `path`; raise `PolicyError` listing every issue.

    `extra_holds` (holds kept in the audit store) are validated as if the file listed
    them after its own holds."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PolicyError([Issue("no such policy file", file=file)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([Issue(f"cannot read the policy file: {exc}", file=file)]) from None
    return load_text(text, file, os.environ if env is None else env, extra_holds)


def load_text(
    text: str,
    file: str = "<policy>",
    env: Mapping[str, str] | None = None,
    extra_holds: Sequence[Mapping[str, Any]] = (),
) -> LoadedPolicy:
    """Validate a policy given as YAML text (see `load_policy`)."""
    env = os.environ if env is None else env
    reader = _TreeReader(file)
    tree = reader.read(text)
    issues = reader.issues
    if tree is None:
        raise PolicyError(issues or [Issue("the policy file is empty", file=file)])
    if not isinstance(tree, dict):
        issues.append(
            Issue("the policy must be a mapping (key: value)", file=file, line=1, column=1)
        )
        raise PolicyError(issues)

    first_extra = len(tree.get("holds") or []) if isinstance(tree.get("holds"), list) else 0

    def locate(path: TreePath, message: str, key: bool = False) -> Issue:
        if extra_holds and path[:1] == ("holds",) and len(path) > 1:
            index = path[1]
            if isinstance(index, int) and index >= first_extra:
                name = extra_holds[index - first_extra].get("name", "?")
                rest = render_path(path[2:])
                return Issue(message, f"hold {name}" + (f": {rest}" if rest else ""), "audit store")
        positions = reader.keys if key and path in reader.keys else reader.values
        line, column = _nearest(positions, path)
        return Issue(message, render_path(path), file, line, column)

    if extra_holds:
        held = tree.get("holds")
        tree["holds"] = [*(held if isinstance(held, list) else []), *map(dict, extra_holds)]
    secrets = _substitute(tree, (), env, issues, locate)
    issues.extend(locate(path, message) for path, message in reference_issues(tree))
    policy: Policy | None = None
    try:
        policy = Policy.model_validate(tree)
    except ValidationError as exc:
        issues.extend(_validation_issues(exc, tree, locate))
    else:
        issues.extend(locate(path, message) for path, message in policy.semantic_issues())
    issues = _unique_sorted(issues)
    if issues or policy is None:
        raise PolicyError(issues)
    return LoadedPolicy(policy, file, reader.values, (), tuple(secrets))


# --- YAML with positions -----------------------------------------------------


class _TreeReader:
    """Compose YAML 1.2 into plain Python data, remembering each node's position."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.values: dict[TreePath, tuple[int, int]] = {}
        self.keys: dict[TreePath, tuple[int, int]] = {}
        self.issues: list[Issue] = []
        self._yaml = YAML(typ="safe", pure=True)
        self._yaml.version = (1, 2)

    def read(self, text: str) -> Any:
        self._text = text
        try:
            node = self._yaml.compose(text)
        except ReaderError as exc:
            line, column = _line_col(text, exc.position)
            self.issues.append(
                Issue(
                    f"YAML error: {exc.reason} (character {exc.character!r})",
                    "",
                    self.file,
                    line,
                    column,
                )
            )
            return None
        except MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
            problem = exc.problem or exc.context or "invalid YAML"
            self.issues.append(Issue(f"YAML syntax error: {problem}", "", self.file, line, column))
            return None
        except YAMLError as exc:
            self.issues.append(Issue(f"YAML error: {exc}", "", self.file))
            return None
        if node is None:
            return None
        self._open: set[int] = set()
        return self._build(node, ())

    def _at(self, node: Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def _build(self, node: Node, path: TreePath) -> Any:
        self.values[path] = self._at(node)
        if isinstance(node, MappingNode | SequenceNode):
            if id(node) in self._open:
                self._issue(node, path, "recursive YAML alias")
                return None
            self._open.add(id(node))
            try:
                return self._collection(node, path)
            finally:
                self._open.discard(id(node))
        return self._scalar(node, path)

    def _collection(self, node: Node, path: TreePath) -> Any:
        if isinstance(node, MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if (
                    key_node.tag == "tag:yaml.org,2002:merge"
                    or getattr(key_node, "value", None) == "<<"
                ):
                    self._issue(key_node, path, "YAML merge keys ('<<') are not supported")
                    continue
                key = self._scalar(key_node, path)
                if key == "<<":
                    self._issue(key_node, path, "YAML merge keys ('<<') are not supported")
                    continue
                if not isinstance(key, str):
                    self._issue(key_node, path, f"keys must be strings, got {key!r}")
                    continue
                if key in out:
                    first = self.keys[(*path, key)]
                    self._issue(
                        key_node,
                        (*path, key),
                        f"duplicate key {key!r} (first defined at line {first[0]})",
                    )
                    continue
                self.keys[(*path, key)] = self._at(key_node)
                out[key] = self._build(value_node, (*path, key))
            return out
        return [self._build(item, (*path, i)) for i, item in enumerate(node.value)]

    def _scalar(self, node: Node, path: TreePath) -> Any:
        if not isinstance(node, ScalarNode):
            return self._build(node, path)
        try:
            return self._yaml.constructor.construct_object(node, deep=True)
        except Exception as exc:  # ruamel raises several types for malformed tagged scalars
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._issue(node, path, f"cannot read value {node.value!r} ({node.tag}): {reason}")
            return node.value

    def _issue(self, node: Node, path: TreePath, message: str) -> None:
        line, column = self._at(node)
        self.issues.append(Issue(message, render_path(path), self.file, line, column))


def _line_col(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def _nearest(positions: Mapping[TreePath, tuple[int, int]], path: TreePath) -> tuple[int, int]:
    for end in range(len(path), -1, -1):
        if path[:end] in positions:
            return positions[path[:end]]
    return (0, 0)


# --- environment substitution ------------------------------------------------


def _substitute(
    tree: Any,
    path: TreePath,
    env: Mapping[str, str],
    issues: list[Issue],
    locate: Any,
) -> list[str]:
    """Replace ${VAR} in store URLs/roots in place; flag it anywhere else."""
    secrets: list[str] = []
    items: Any = (
        tree.items()
        if isinstance(tree, dict)
        else enumerate(tree)
        if isinstance(tree, list)
        else ()
    )
    for key, value in list(items):
        here = (*path, key)
        if isinstance(value, dict | list):
            secrets += _substitute(value, here, env, issues, locate)
        elif isinstance(value, str) and "${" in value:
            allowed = len(here) == 3 and here[0] == "stores" and here[2] in _SUBSTITUTED
            if not allowed:
                issues.append(
                    locate(here, "${...} substitution is only done in store 'url' and 'root'")
                )
                continue
            tree[key] = _expand(value, here, env, issues, locate, secrets)
    return secrets


def _expand(
    value: str,
    path: TreePath,
    env: Mapping[str, str],
    issues: list[Issue],
    locate: Any,
    secrets: list[str],
) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group("name"), match.group("default")
        got = env.get(name)
        if got is None or (got == "" and default is not None):
            if default is None:
                issues.append(locate(path, f"environment variable {name} is not set"))
                return ""
            return default
        if got:
            secrets.append(got)
        return got

    return _ENV.sub(replace, value)


# --- pydantic errors -> located issues -----------------------------------------


def _tree_path(tree: Any, loc: tuple[str | int, ...]) -> TreePath:
    """Map a pydantic error location onto the YAML tree, dropping union tags."""
    path: list[str | int] = []
    node = tree
    for part in loc:
        if isinstance(node, dict) and part in node:  # noqa: SIM114 (mypy narrows each branch)
            path.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        elif isinstance(part, str) and not _is_tag(part):
            path.append(part)
            node = None
    return tuple(path)


def _is_tag(part: str) -> bool:
    return "[" in part or part in {
        "sql",
        "files",
        "null",
        "redact",
        "hash",
        "truncate_ip",
        "generalize",
        "mask_email",
        "int",
        "str",
    }


def _validation_issues(exc: ValidationError, tree: Any, locate: Any) -> list[Issue]:
    issues: list[Issue] = []
    suggested: set[TreePath] = set()
    errors = exc.errors(include_url=False)
    for error in errors:
        if error["type"] == "extra_forbidden":
            path = _tree_path(tree, tuple(error["loc"]))
            close = difflib.get_close_matches(
                str(path[-1]), sorted(_known_fields(tuple(error["loc"])[:-1])), n=1, cutoff=0.6
            )
            if close:
                suggested.add((*path[:-1], close[0]))
    for error in errors:
        loc = tuple(error["loc"])
        path = _tree_path(tree, loc)
        kind = error["type"]
        if kind == "extra_forbidden":
            key = path[-1] if path else ""
            hint = _did_you_mean(str(key), _known_fields(loc[:-1]))
            issues.append(locate(path, f"unknown key {key!r}{hint}", key=True))
            continue
        if kind == "missing":
            if path in suggested:
                continue  # reported as the misspelled key that should have been it
            issues.append(locate(path, f"missing required key {path[-1]!r}"))
            continue
        message = str(error["msg"])
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        given = error.get("input")
        if kind == "unknown_strategy" and isinstance(given, Mapping):
            message = f"{message} (got {given.get('strategy')!r})"
        if kind == "unknown_store_kind" and isinstance(given, Mapping):
            message = f"{message} (got {given.get('kind')!r})"
        if kind in {"literal_error", "string_pattern_mismatch"} or kind.endswith(
            ("_type", "_parsing")
        ):
            message = f"{message} (got {error.get('input')!r})"
        issues.append(locate(path, message))
    return issues


def _did_you_mean(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    if known:
        return f"; expected one of {', '.join(sorted(known))}"
    return ""


def _models_in(annotation: Any) -> list[Any]:
    """Model classes reachable from a type annotation (through Optional/Union/Annotated)."""
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _models_in(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [annotation]


def _known_fields(loc: tuple[str | int, ...]) -> set[str]:
    current: list[Any] = [Policy]
    for part in loc:
        following: list[Any] = []
        for annotation in current:
            for kind in _models_in(annotation):
                if isinstance(kind, type) and issubclass(kind, BaseModel):
                    for name, info in kind.model_fields.items():
                        if part in (name, info.alias):
                            following.append(info.annotation)
                elif get_origin(kind) in (list, tuple) and isinstance(part, int):
                    following.extend(get_args(kind)[:1])
                elif get_origin(kind) is dict:
                    following.append(get_args(kind)[1])
        if following:
            current = following
    names: set[str] = set()
    for annotation in current:
        for kind in _models_in(annotation):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                names |= {info.alias or name for name, info in kind.model_fields.items()}
    return names


def _unique_sorted(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple[Any, ...]] = set()
    out: list[Issue] = []
    for issue in issues:
        key = (issue.line, issue.column, issue.path, issue.message)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return sorted(out, key=lambda i: (i.severity is not Severity.ERROR, i.line, i.column))

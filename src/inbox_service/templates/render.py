"""Template checking and rendering in a Jinja2 `SandboxedEnvironment`.

Two walls between a template and Python internals:

1. At save time, `check` accepts only a small grammar: text, `{{ placeholder }}` from the
   catalog (or `vars.name`), the filters in `FILTERS`, `if`/`elif`/`else`, comparisons, and
   string or number constants as filter arguments. No loops, no `set`, no calls, no
   arithmetic, no attribute access off anything but a catalog root, no name starting with
   `_`. Unknown placeholders and syntax errors are refused with their line and column.
2. At render time the sandbox (no globals, `SecurityError` on unsafe attributes) renders
   plain dicts of strings.

Because the grammar has no loops or arithmetic, rendering is linear in the template's
size; templates, variable values and the output are size-capped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from jinja2 import Template, TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.sandbox import SandboxedEnvironment

from inbox_service.templates.catalog import CUSTOM_ROOT, ROOTS

MAX_TEMPLATE_CHARS = 20_000
MAX_OUTPUT_CHARS = 100_000
MAX_VAR_CHARS = 2_000
FILTERS = frozenset(
    {"default", "d", "upper", "lower", "title", "capitalize", "trim", "truncate", "e", "escape"}
)
_ALLOWED = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.If,
    nodes.Name,
    nodes.Getattr,
    nodes.Const,
    nodes.Filter,
    nodes.Test,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.CondExpr,
    nodes.Concat,
    nodes.Keyword,
)
_TESTS = frozenset({"defined", "undefined", "none", "string"})


@dataclass(frozen=True)
class TemplateProblem(Exception):
    """Why a template was refused, and where (1-based line and column)."""

    message: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.message} (line {self.line}, column {self.column})"


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(autoescape=False, undefined=Undefined, keep_trailing_newline=True)
    env.globals.clear()  # no range, lipsum, cycler, joiner, namespace, dict
    env.filters = {name: env.filters[name] for name in FILTERS}
    env.tests = {name: env.tests[name] for name in _TESTS}
    return env


_ENV = _environment()


def _column(source: str, line: int, needle: str) -> int:
    lines = source.splitlines() or [""]
    text = lines[min(max(line, 1), len(lines)) - 1]
    found = text.find(needle)
    return found + 1 if found >= 0 else 1


def _path(node: nodes.Getattr | nodes.Name) -> list[str] | None:
    """`contact.first_name` → ["contact", "first_name"]; None if not a plain dotted path."""
    parts: list[str] = []
    current: nodes.Node = node
    while isinstance(current, nodes.Getattr):
        parts.append(current.attr)
        current = current.node
    if not isinstance(current, nodes.Name):
        return None
    parts.append(current.name)
    return list(reversed(parts))


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def check(source: str) -> list[str]:
    """The placeholders `source` uses (dotted names), or `TemplateProblem`."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateProblem(f"template is longer than {MAX_TEMPLATE_CHARS} characters", 1, 1)
    if "\x00" in source:
        raise TemplateProblem("template contains a NUL character", 1, source.index("\x00") + 1)
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        line = exc.lineno or 1
        raise TemplateProblem(f"syntax error: {exc.message}", line, 1) from exc
    used: list[str] = []
    for node in _walk(tree):
        line = getattr(node, "lineno", 1) or 1
        if not isinstance(node, _ALLOWED):
            kind = type(node).__name__
            raise TemplateProblem(f"{kind} is not allowed in templates", line, 1)
        if isinstance(node, nodes.Filter) and node.name not in FILTERS:
            raise TemplateProblem(
                f"unknown filter {node.name!r}", line, _column(source, line, node.name)
            )
        if isinstance(node, nodes.Test) and node.name not in _TESTS:
            raise TemplateProblem(
                f"unknown test {node.name!r}", line, _column(source, line, node.name)
            )
        if isinstance(node, nodes.Const) and not isinstance(node.value, str | int | float | bool):
            raise TemplateProblem("only string and number constants", line, 1)
        if isinstance(node, nodes.Getattr | nodes.Name):
            _check_reference(source, node, line, used)
    return list(dict.fromkeys(used))


def _check_reference(
    source: str, node: nodes.Getattr | nodes.Name, line: int, used: list[str]
) -> None:
    path = _path(node)
    if path is None:
        raise TemplateProblem(
            f"attribute {getattr(node, 'attr', '?')!r} of a non-placeholder is not allowed",
            line,
            _column(source, line, "." + str(getattr(node, "attr", ""))),
        )
    dotted = ".".join(path)
    if isinstance(node, nodes.Name) or any(p.startswith("_") for p in path):
        # a bare name is only fine as the root of a path, which the Getattr above checks
        if any(p.startswith("_") for p in path) or path[0] not in (*ROOTS, CUSTOM_ROOT):
            raise TemplateProblem(
                f"unknown placeholder {dotted!r}", line, _column(source, line, dotted)
            )
        return
    if len(path) != 2:
        # the inner Getattr of a longer chain is visited too; report the whole chain once
        raise TemplateProblem(
            f"unknown placeholder {dotted!r}", line, _column(source, line, dotted)
        )
    root, attr = path
    if root == CUSTOM_ROOT or attr in ROOTS.get(root, frozenset()):
        used.append(dotted)
        return
    raise TemplateProblem(f"unknown placeholder {dotted!r}", line, _column(source, line, dotted))


def _bare_names_ok(source: str) -> None:
    """A bare root (`{{ contact }}`) would print a dict: refuse it."""
    tree = _ENV.parse(source)
    parents: set[int] = set()
    for node in _walk(tree):
        if isinstance(node, nodes.Getattr):
            inner = node.node
            parents.add(id(inner))
    for node in _walk(tree):
        if isinstance(node, nodes.Name) and id(node) not in parents:
            line = node.lineno or 1
            raise TemplateProblem(
                f"unknown placeholder {node.name!r}", line, _column(source, line, node.name)
            )


def validate(source: str) -> list[str]:
    """`check` plus the bare-root rule: what saving a template runs."""
    used = check(source)
    _bare_names_ok(source)
    return used


def render(source: str, context: Mapping[str, Mapping[str, str]]) -> str:
    """Render a validated template; missing values are Undefined (`default` applies)."""
    try:
        template = _ENV.from_string(source)
        output = _render(template, context)
    except (TemplateError, TypeError, ValueError) as exc:  # SecurityError, UndefinedError, …
        raise TemplateProblem(f"template could not be rendered: {exc}", 1, 1) from None
    if len(output) > MAX_OUTPUT_CHARS:
        raise TemplateProblem(f"rendered text is longer than {MAX_OUTPUT_CHARS} characters", 1, 1)
    return output


def _render(template: Template, context: Mapping[str, Mapping[str, str]]) -> str:
    return template.render(
        {
            root: {k: v[:MAX_VAR_CHARS] for k, v in values.items()}
            for root, values in context.items()
        }
    )


def empty_placeholders(used: list[str], context: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The placeholders of `used` that have no value in `context` (rendered empty or fell
    back to their default)."""
    empty = []
    for dotted in used:
        root, _, attr = dotted.partition(".")
        if not context.get(root, {}).get(attr):
            empty.append(dotted)
    return empty

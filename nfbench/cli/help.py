"""The key list of ``nfbench train --help``: every key of the schema with its one-line meaning.

The meanings are the comments of nfbench/config.py, read from its source when help is asked for:
a key's comment is the one at the end of its line, else the block of comment lines right above it,
whose first sentence is shown.  So the schema's comments stay the one place where a key is
explained, and no generated file has to be kept in step with them.  conf/hydra/help/nfbench.yaml
takes the list through the ``nfbench.keys_help`` resolver, with each key's value in the config
that ``--help`` composed (``nfbench train data=cifar10 --help`` shows CIFAR-10's values).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import typing
from functools import cache
from typing import Any, Iterator, Optional

from omegaconf import DictConfig, OmegaConf

from nfbench.config import OPTION_SCHEMAS, Config
from nfbench.engine.hooks import HOOKS
from nfbench.loggers import LOGGERS

RESOLVER = "nfbench.keys_help"
# A sentence ends at a full stop and a space, but not after "e.g.", "i.e." or "et al.".
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)(?<!et al)\.\s")
_CODE = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER, tokenize.COMMENT}


@cache
def _explained(cls: type) -> tuple[str, dict[str, str]]:
    """Dataclass ``cls``'s own docstring ("" without one), and each field -> the comment that explains it
    ("" where there is none)."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in _CODE:
            code_lines.add(tok.start[0])
    meanings = {}
    definition = ast.parse(source).body[0]
    assert isinstance(definition, ast.ClassDef)
    for node in definition.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if node.end_lineno in comments:  # a comment at the end of the field's own line
            meanings[node.target.id] = comments[node.end_lineno]
            continue
        block: list[str] = []
        line = node.lineno - 1
        while line in comments and line not in code_lines:
            block.insert(0, comments[line])
            line -= 1
        meanings[node.target.id] = " ".join(block)
    return " ".join((ast.get_docstring(definition) or "").split()), meanings


def first_sentence(text: str) -> str:
    return _SENTENCE_END.split(text, maxsplit=1)[0].strip().rstrip(".")


def _schema_class(hint: Any) -> Optional[type]:
    """The dataclass behind a field's type (``Optional[WandbLoggerConfig]`` included), else None."""
    for t in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(t):
            return t  # type: ignore[return-value]
    return None


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


@dataclasses.dataclass(frozen=True)
class Key:
    """One overridable key of the schema."""

    name: str  # dotted: data.batch_size
    default: Any  # the schema's own default, before any config file
    meaning: str  # the first sentence of its comment


@dataclasses.dataclass(frozen=True)
class Section:
    """A nested dataclass of the schema: its dotted name and its docstring's first sentence."""

    name: str
    meaning: str
    keys: list[Key]


def sections(cls: type = Config, prefix: str = "", name: str = "") -> Iterator[Section]:
    """The schema's keys, grouped by the dataclass that holds them (top-level keys first); after a
    group's own keys, each option's own (``init=nf``: ``init.alpha``, ...)."""
    hints = typing.get_type_hints(cls)
    doc, comments = _explained(cls)
    keys, nested = [], []
    for f in dataclasses.fields(cls):
        if f.name not in comments:  # inherited: listed with the group's keys
            continue
        sub = _schema_class(hints[f.name])
        if sub is None:
            keys.append(Key(prefix + f.name, _default(f), first_sentence(comments[f.name])))
        else:
            nested.append((sub, f"{prefix}{f.name}."))
    if keys:
        yield Section(name or prefix.rstrip("."), first_sentence(doc), keys)
    for sub, sub_prefix in nested:
        yield from sections(sub, sub_prefix)
        group = sub_prefix.rstrip(".")
        for option, schema in OPTION_SCHEMAS.get(group, {}).items() if not prefix else ():
            yield from sections(schema, sub_prefix, f"{group}={option} only")
    if not prefix:  # each registered logger's and hook's own keys (nfbench/loggers.py, nfbench/engine/hooks.py)
        for group, registry in (("logger", LOGGERS), ("hooks", HOOKS)):
            for option in registry.names():
                yield from sections(registry.get(option).config, f"{group}.{option}.")


def _format(value: Any) -> str:
    """A value as it is written in an override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format(v) for v in value) + "]"
    return str(value)


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return dataclasses.MISSING
        tree = tree[part]
    return tree


def keys_help(cfg: Optional[DictConfig] = None, width: int = 38, line: int = 118) -> str:
    """Every key as ``key=value  meaning``, a paragraph per section, meanings wrapped at ``line``
    characters.  Values are ``cfg``'s, unresolved (``???``: required), else the schema's default (the
    options of a group not selected, such as ``logger.wandb.*``).  Dollars are doubled for Hydra's
    ``string.Template``."""
    raw = {} if cfg is None else OmegaConf.to_container(cfg, resolve=False)
    paragraphs = []
    for section in sections():
        lines = [f"{section.name}: {section.meaning}" if section.name else section.meaning]
        for key in section.keys:
            value = _lookup(raw, key.name)
            setting = f"{key.name}={_format(key.default if value is dataclasses.MISSING else value)}"
            lead = f"  {setting:<{width}}  "
            lines.append(
                textwrap.fill(
                    key.meaning, line, initial_indent=lead, subsequent_indent=" " * len(lead), break_on_hyphens=False
                )
                if key.meaning
                else lead.rstrip()
            )
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs).replace("$", "$$")


def _resolve_keys_help(*, _root_: DictConfig) -> str:
    return keys_help(_root_)


def register_help() -> None:
    """The resolver conf/hydra/help/nfbench.yaml calls; registered before Hydra composes."""
    OmegaConf.register_new_resolver(RESOLVER, _resolve_keys_help, replace=True)

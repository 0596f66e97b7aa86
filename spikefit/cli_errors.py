"""One line for every user mistake on the command line.

The argument parser (jsonargparse) wraps an error in one layer per nesting level
(``Parser key "model": … Problem with given class_path …``) and the constructors' own
:class:`~spikefit.checks.InputError` sits at the bottom of that chain. :func:`explain` walks
the chain down to the innermost cause and names the field by its full dotted option name.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from spikefit.checks import InputError

#: How the help lists a run's options.
HELP = "python -m spikefit fit --help"
#: How the parser's wrapping layers begin.
WRAPPERS = re.compile(r'Parser key "|Does not validate against any|Problem with given class_path')
#: The sections of a ``fit`` config.
SECTIONS = ("model", "data", "trainer", "ckpt_path", "seed_everything")


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and its chain of explicit causes, outermost first."""
    chain: list[BaseException] = []
    while error is not None and all(error is not seen for seen in chain):
        chain.append(error)
        error = error.__cause__
    return chain


def find_class(config: Any, name: str, path: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """The option path of the first object of class ``name`` in a parsed ``config`` (nested
    dicts with ``class_path``/``init_args``), without the ``init_args`` levels."""
    if not isinstance(config, dict):
        return None
    class_path = config.get("class_path")
    if isinstance(class_path, str) and class_path.rsplit(".", 1)[-1] == name:
        return path
    for key, value in config.items():
        found = find_class(value, name, path if key == "init_args" else (*path, key))
        if found is not None:
            return found
    return None


def locate(error: InputError, config: dict | None) -> InputError:
    """``error`` with its ``Class.argument`` field renamed to the option's full dotted name
    in ``config`` (unchanged when the class is not in it)."""
    owner, _, rest = error.field.partition(".")
    path = find_class(config, owner) if rest and config is not None else None
    if path is None:
        return error
    return InputError(".".join((*path, rest)), error.problem, error.expected)


def _types(subtypes: str) -> str:
    """``[<class 'float'>, <class 'NoneType'>]`` → ``float or null``."""
    names = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", subtypes.strip()[1:-1])
    parts, depth, current = [], 0, ""
    for character in names:
        if character in "[(":
            depth += 1
        elif character in "])":
            depth -= 1
        if character == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += character
    parts.append(current.strip())
    return " or ".join("null" if part == "NoneType" else part for part in parts if part)


def _imported(class_path: str | None) -> type | None:
    """The class at ``class_path`` (None if it cannot be imported)."""
    module, _, name = (class_path or "").rpartition(".")
    try:
        return getattr(import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _options(class_path: str | None) -> list[str]:
    """The constructor arguments of ``class_path`` (empty if it cannot be imported)."""
    try:
        parameters = inspect.signature(_imported(class_path)).parameters
    except (TypeError, ValueError):
        return []
    return [p for p in parameters if p not in ("self", "args", "kwargs")]


def _subclasses(class_path: str | None) -> str:
    """``A or B``: the names of the direct subclasses of ``class_path`` ('' if none)."""
    target = _imported(class_path)
    return (
        " or ".join(sub.__name__ for sub in target.__subclasses__())
        if isinstance(target, type)
        else ""
    )


@dataclass
class ParserError:
    """What a chain of parser errors says: the nested keys down to the innermost error, the
    class being parsed there, the Union it was tried against, and the innermost message."""

    keys: list[str]
    class_path: str | None
    subtypes: str | None
    innermost: str
    cause: BaseException

    @property
    def field(self) -> str:
        return ".".join(self.keys)


def read_chain(chain: list[BaseException]) -> ParserError:
    """The :class:`ParserError` of a chain of causes (outermost first)."""
    keys, texts, class_path, subtypes = [], [], None, None
    for error in chain:
        text = str(error)
        if text in texts:
            continue
        texts.append(text)
        if match := re.match(r'Parser key "([^"]+)":', text):
            keys.append(match.group(1))
            subtypes = None  # a Union further out says nothing of this key
        if match := re.match(r"Problem with given class_path '([^']+)'", text):
            class_path = match.group(1)
        if match := re.match(
            r"Does not validate against any of the Union subtypes\s*"
            r"Subtypes: (\[.*?\])\s*\n",
            text,
            re.S,
        ):
            subtypes = match.group(1)
    return ParserError(keys, class_path, subtypes, texts[-1].strip(), chain[-1])


def _not_accepted(error: ParserError, match: re.Match) -> InputError:
    options = _options(error.class_path)
    close = difflib.get_close_matches(match.group(1), options, n=1)
    owner = error.class_path.rsplit(".", 1)[-1] if error.class_path else "this object"
    kinds = "" if options else _subclasses(error.class_path)
    expected = (
        f"an option of {owner}: did you mean {close[0]}?"
        if close
        else f"an option of {owner}: {', '.join(options)}"
        if options
        else f"the class first, --{error.field} {kinds}, then its options"
        if kinds
        else None
    )
    return InputError(".".join([*error.keys, match.group(1)]), "is not an option", expected)


def _not_a_section(error: ParserError, match: re.Match) -> InputError:
    option = match.group(1)
    close = difflib.get_close_matches(option.split(".")[0], SECTIONS, n=1)
    hint = f"did you mean {close[0]}?" if close else f"one listed by {HELP}"
    return InputError(option, "is not an option", f"an option of fit: {hint}")


def _wrong_type(error: ParserError, match: re.Match) -> InputError:
    expected = _types(error.subtypes) if error.subtypes else _types(f"[{match.group(1)}]")
    return InputError(
        error.field or "arguments", f"{match.group(2).strip()!r} is not valid", expected
    )


def _not_a_class_path(error: ParserError, match: re.Match) -> InputError:
    base = re.search(r"<class '([\w.]+)'>", error.subtypes or "")
    kinds = _subclasses(base.group(1)) if base else ""
    return InputError(
        error.field or "class_path",
        f"{match.group(1)!r} is not a class path",
        f"{kinds}, or the import path of a class" if kinds else IMPORT_PATH,
    )


#: The expected form of a class option.
IMPORT_PATH = "the import path of a class, e.g. spikefit.tasks.LikelihoodFit"
#: The innermost messages of the parser and what each says of its field.
PARSER_MESSAGES: list[tuple[re.Pattern, Callable[[ParserError, re.Match], InputError]]] = [
    (re.compile(r"Option '([^']+)' is not accepted"), _not_accepted),
    (
        re.compile(r"^unrecognized arguments: (\S+)"),
        lambda error, match: InputError(
            match.group(1), "is not an option", f"an option listed by {HELP}"
        ),
    ),
    (re.compile(r"does not accept option '([^']+)'"), _not_a_section),
    (
        re.compile(r"^the following arguments are required: (.*)"),
        lambda error, match: InputError(
            error.field or "arguments", f"missing {match.group(1)}", f"values for {match.group(1)}"
        ),
    ),
    (
        re.compile(r"^File does not exist: '(.*)'"),
        lambda error, match: InputError(
            match.group(1), "no such file", "an existing YAML config file"
        ),
    ),
    (re.compile(r"^Expected a (.+?)\. Got value: (.*)", re.S), _wrong_type),
    (re.compile(r"^Expected a dot import path string: (.*)"), _not_a_class_path),
]


def from_parser(chain: list[BaseException]) -> InputError:
    """The innermost cause of a parser error, its field named by the nested keys."""
    error = read_chain(chain)
    for pattern, explained in PARSER_MESSAGES:
        if match := pattern.search(error.innermost):
            return explained(error, match)
    if error.class_path is not None and isinstance(error.cause, ImportError | AttributeError):
        return InputError(
            error.field or "class_path", f"cannot import {error.class_path!r}", IMPORT_PATH
        )
    return InputError(error.field or "arguments", error.innermost.splitlines()[0].rstrip(":"))


#: Lightning's names for a trainer setting inside its messages: `max_epochs`, `Trainer(devices=…)`.
TRAINER_FIELD = re.compile(r"`(?:Trainer\()?(\w+)")


def from_trainer(error: Exception) -> InputError:
    """A trainer setting Lightning refused, named ``trainer.<setting>``."""
    text = str(error).strip().splitlines()[0].replace("`", "")
    match = TRAINER_FIELD.search(str(error))
    field = f"trainer.{match.group(1)}" if match else "trainer"
    if rule := re.match(r"\w+ must be (.+?)\. You passed in (.+?)\.?$", text):
        return InputError(field, f"{rule.group(2)} is out of range", rule.group(1))
    return InputError(field, text.rstrip("."), f"a setting the Trainer accepts ({HELP})")


def explain(error: BaseException, config: dict | None = None) -> InputError | None:
    """The user mistake behind ``error`` as one :class:`InputError` with the full option
    name, or None when ``error`` is not a user mistake (a bug: its traceback is shown)."""
    chain = causes(error)
    own = [cause for cause in chain if isinstance(cause, InputError)]
    if own:
        return locate(own[-1], config)
    if any(type(cause).__name__ == "ArgumentError" for cause in chain):
        return from_parser(chain)
    if isinstance(error, OSError) and error.filename is not None:
        return InputError(
            error.filename,
            (error.strerror or str(error)).lower(),
            "a path this run can read and write",
        )
    if type(error).__name__ == "MisconfigurationException":
        return from_trainer(error)
    if isinstance(error, ValueError | FileNotFoundError | FileExistsError):  # plain messages
        plain = next(cause for cause in chain if not WRAPPERS.match(str(cause)))
        message = str(plain).strip().splitlines()[0]
        return (
            InputError(*message.split(": ", 1))
            if ": " in message
            else InputError("arguments", message)
        )
    return None

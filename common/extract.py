"""Pull the program out of a model's answer.

`extract_code(text)` returns the program in an answer, or raises `ExtractionError` saying why
there is none:

1. The text is `clean`ed: CRLF and lone CR line endings become LF, byte-order marks go.
2. The program is the last Python block (tag none, python, py or python3) among its
   `fenced_blocks` that defines `transform` at its top level.
3. An answer without any fence: its `code_region`.

A `transform` written `async def` cannot be called as a plain function: it is reported as such.

Fences, as models write them (CommonMark, loosely): a run of 3 or more backticks and the language
tag, at the start of a line (indented up to 12 columns, as in a markdown list; more info may
follow the tag, as in ```` ```python title=x.py ````), or after text on a line with nothing after
the tag. A block closes at the next run of 3 or more backticks that starts or ends a line, or at
the end of the text (a cut-off answer); a ``` inside a line of code (a string literal) does not
close it. The body of an indented fence is dedented. Every pattern here runs in linear time.
"""

from __future__ import annotations

import re
import textwrap

PYTHON_TAGS = ("", "python", "py", "python3")

# Every regex here runs in linear time: the fence ones start with a literal ``` (a fast search),
# `(?<!````)` keeps to the start of a run of backticks, a repeat that could backtrack far is either
# bounded (a run of at most 12 backticks, 8 blanks, a tag of at most 30 characters) or atomic
# (`(?=(?P<x>...))(?P=x)` never backtracks into `...`).
_AT_LINE_START = "|".join(rf"(?<=^[ \t]{{{k}}}```)" for k in range(13))  # ``` at a line start, indented < 13
_TAG = r"`{0,9}(?!`)[ \t]{0,8}[\w+-]{0,30}"  # the rest of the run, the language tag
_CLOSER = r"```(?<!````)(?:" + _AT_LINE_START + r"|`*[ \t]*$)"  # a run starting or ending a line
_FENCE = re.compile(
    r"```(?<!````)(?=`{0,9}(?!`)[ \t]{0,8}(?P<lang>[\w+-]{0,30}))"
    r"(?:(?:" + _AT_LINE_START + ")" + _TAG + r"(?:(?<=[\w+-])[ \t][^`\n]*)?"  # info after a tag at a line start,
    r"|" + _TAG + r"(?:(?<=[\w+-])[ \t]*)?)\n"  # none after text on the line
    r"(?P<body>.*?)(?:" + _CLOSER + r"|\Z)",
    re.DOTALL | re.MULTILINE)
_CLOSE = re.compile(_CLOSER, re.MULTILINE)
_DEF = re.compile(r"^def[ \t]+transform[ \t]*\(", re.MULTILINE)

# A top-level line that looks like Python: import, def, class, decorator, comment, docstring,
# compound statement header, simple statement, assignment, call.
_CODE = (r"(?=[\w@#\"'])(?:(?:import|from[ \t]+[\w.]+[ \t]+import|(?:async[ \t]+)?def|class)[ \t]|@[\w.]|#"
         r"|[rRbBuUfF]{0,2}(?:\"\"\"|''')"
         r"|(?:if|elif|else|for|while|with|try|except|finally|async)\b[^\n]*:[ \t]*(?:#[^\n]*)?$"
         r"|(?:assert|raise|del|pass|return)\b"
         r"|(?=(?P<name>[A-Za-z_][\w.]*))(?P=name)(?:\("  # a name, then a call or an assignment
         r"|(?:\[[^\]\n]*\])*(?:[ \t]*,[ \t]*[A-Za-z_][\w.]*)*[ \t]*(?::[ \t]*[\w.\[\], |]+)?"
         r"(?:[-+*/%&|^@]|//|\*\*|<<|>>)?=(?!=)))")
_CODE_LINE = re.compile(r"^" + _CODE, re.MULTILINE)
# Matched from a position, the greedy `.*` backs up from the end to the last code line.
_LAST_CODE_LINE = re.compile(r"(?s:.*)^(?=" + _CODE + ")", re.MULTILINE)
# The first line of a top-level statement: not indented, not a closing bracket or `else:`-like clause.
_STATEMENT = re.compile(r"^(?=[^\s)\]}])(?!(?:else|elif|except|finally)\b)", re.MULTILINE)
_CHECK_LIMIT = 40_000  # longer regions are not compiled: compile time grows faster than linearly


class ExtractionError(ValueError):
    """No usable program in the completion; the message says why."""


def clean(text: str) -> str:
    """`text` with LF line endings (CRLF and lone CR converted) and without byte-order marks."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag, body), both as written, of each fenced block of a `clean` text, in order;
    an unclosed block runs to the end of the text."""
    return _FENCE.findall(text)


def block_program(body: str, entry: re.Pattern[str] = _DEF) -> str | None:
    """A block's body as a program, without its leading newlines and trailing blanks and dedented
    (an indented fence's body is indented), when it defines the `entry` function at its top level;
    else None."""
    if "def" not in body:
        return None
    code = body.lstrip("\n").rstrip()
    if code[:1].isspace():
        code = textwrap.dedent(code)
    return code if entry.search(code) else None


def first_fence(text: str) -> int | None:
    """Where the first run of 3 or more backticks that starts or ends a line begins, if any."""
    m = _CLOSE.search(text)
    return m.start() if m else None


def compiles(code: str) -> bool:
    """Whether `code` compiles as a module (never runs it)."""
    try:
        compile(code, "<completion>", "exec")
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
        return False
    return True


def code_region(text: str) -> str | None:
    """The program in a `clean` text without fences; None when no line starts `def transform(`.

    The region runs from the first top-level line that looks like code (import, def, class,
    decorator, assignment, comment, compound statement, call) to the end of the last top-level
    statement starting with such a line, its indented lines included: the prose before and after
    it is dropped. When the region does not compile, the code-like statements in it that compile
    on their own are joined instead (dropping prose in the middle), if that compiles and defines
    `transform`; otherwise the region is returned as it is, for the sandbox to report its error.
    A region over `_CHECK_LIMIT` characters is returned without compiling anything.
    """
    text = text.rstrip()
    if not _DEF.search(text):
        return None
    start = _CODE_LINE.search(text).start()  # found: the `def transform` line is one
    last = _LAST_CODE_LINE.match(text, start).end()
    line_end = text.find("\n", last)
    after = _STATEMENT.search(text, line_end + 1) if line_end >= 0 else None
    end = after.start() if after else len(text)
    region = text[start:end].rstrip()
    if len(region) > _CHECK_LIMIT or compiles(region):
        return region
    heads = [m.start() for m in _STATEMENT.finditer(text, start, end)] + [end]
    kept, decorators = [], ""
    for a, b in zip(heads, heads[1:]):
        statement = text[a:b]
        if statement.startswith("@"):  # a decorator goes with the statement after it
            decorators += statement
            continue
        statement, decorators = decorators + statement, ""
        if _CODE_LINE.match(statement) and compiles(statement):
            kept.append(statement)
    joined = "".join(kept).rstrip()
    if joined != region and _DEF.search(joined) and compiles(joined):
        return joined
    return region


def missing(text: str, reason: str, entry: str = "transform") -> ExtractionError:
    """The error for a `clean` text without a program: `reason`, unless the entry point
    (a regex alternative, e.g. `transform|main`) is only there as an `async def`."""
    m = "async" in text and re.search(rf"^[ \t]*async\s+def\s+({entry})\s*\(", text, re.MULTILINE)
    if m:
        return ExtractionError(f"`{m[1]}` is defined with `async def`: it must be a plain function")
    return ExtractionError(reason)


def extract_code(text: str) -> str:
    """Return the program in an answer in arcsynth's format (see the module's docstring), or
    raise `ExtractionError` with the reason."""
    text = clean(text)
    blocks = fenced_blocks(text)
    if not blocks:
        code = code_region(text)
        if code is not None:
            return code
        raise missing(text, "no code block and no `def transform` in the completion")
    python_blocks = [body for lang, body in blocks if lang.lower() in PYTHON_TAGS]
    for body in reversed(python_blocks):
        code = block_program(body)
        if code is not None:
            return code
    if python_blocks:
        raise missing(text, "no Python code block defines `transform`")
    raise missing(text, "no Python code block in the completion")


def normalise(code: str) -> str:
    """Whitespace-insensitive identity of a program, for counting distinct train-perfect programs (the
    execute worker runs programs that differ in any character apart: whitespace in a string matters)."""
    return "\n".join(line.rstrip() for line in code.strip().splitlines() if line.strip())

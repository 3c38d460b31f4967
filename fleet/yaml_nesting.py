"""How deep a YAML text nests, found without recursion, whichever PyYAML (and libyaml) is installed.

PyYAML's composers recurse once per level: the pure-Python one exhausts Python's stack near 500 levels, PyYAML
6.0.3's libyaml composer crashes the whole process (a segmentation fault at 200,000 levels: 400 KB of brackets),
and PyYAML 6.0.4's libyaml refuses 1,001 levels with a `ScannerError` that names no depth. Both parsers, though,
emit events from an explicit state stack: counting collection starts over the event stream tells the depth of
any text in constant stack space, and stops at the first level too deep. So callers check the depth first, even
where libyaml composes, and compose only texts that nest within their limit.
"""

from __future__ import annotations

import yaml

_PARSERS: tuple[type[yaml.SafeLoader], ...] = tuple(
    dict.fromkeys((getattr(yaml, "CSafeLoader", yaml.SafeLoader), yaml.SafeLoader))
)
"""libyaml's parser first (fast); the pure-Python one where libyaml stops with an error of its own."""


def first_too_deep(text: str, limit: int) -> int | None:
    """The 1-based line of the first collection nested deeper than ``limit`` levels, or None.

    None also when the text is not valid YAML before any level gets that deep: composing it then fails at a
    depth within the limit, with the parser's own message.
    """
    for parser in _PARSERS:
        depth = 0
        try:
            for event in yaml.parse(text, Loader=parser):
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > limit:
                        mark = event.start_mark  # both parsers mark every event; the type allows None
                        return mark.line + 1 if mark is not None else 1
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
        except yaml.YAMLError:
            continue  # libyaml's own depth limit, or a syntax error: the next parser tells which
        return None
    return None

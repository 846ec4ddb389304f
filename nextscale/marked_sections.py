"""Documents whose tables are generated: the text between `<!-- TAG:NAME -->` and `<!-- /TAG:NAME -->` is replaced by
what a script computes from recorded data, and everything else is left as written (docs/scripts use it)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from nextscale.errors import UsageError


def replace_marked_sections(document: str, tag: str, sections: dict[str, str]) -> str:
    """`document` with each `<!-- tag:name -->` … `<!-- /tag:name -->` section holding `sections[name]`; a missing
    section is a UsageError naming it."""
    for name, text in sections.items():
        pattern = re.compile(rf"(<!-- {tag}:{name} -->\n).*?(<!-- /{tag}:{name} -->)", re.S)
        if not pattern.search(document):
            raise UsageError(f"no <!-- {tag}:{name} --> … <!-- /{tag}:{name} --> section in the document")
        document = pattern.sub(lambda match, text=text: match.group(1) + text + match.group(2), document)
    return document


def check_document(path: Path, rendered: str, source: Path, script: str) -> int:
    """A generated document's `--check`: 0 when `path` holds `rendered`, else 1 and a line on stderr saying to run
    `script` (which makes it from `source`)."""
    if path.read_text() == rendered:
        return 0
    print(f"{path} is not what {source} gives: run {script}", file=sys.stderr)
    return 1

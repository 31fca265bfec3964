"""What an operator sees and what a pasted line does: a terminal emulator (pyte) and a sandboxed shell.

`screen(text)` renders output the way a terminal on a tty would (the tty turns `\\n` into `\\r\\n`; every
other byte reaches the emulator as it is). `shown(s)` is how the contract says an input string
appears in text output (docs/contract.md §11, docs/threat-model.md), written here independently of
`processor.core.display`. `paste(line, tmp)` runs one pasted line in `bash --noprofile --norc` whose
PATH starts with a stub `access-eval` that records its argv (then /usr/bin and /bin, so that an
injected `touch` would run and leave its file behind).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pyte

#: DerivedCoreProperties.txt, Default_Ignorable_Code_Point=yes (Unicode 15.1).
_IGNORABLE = [
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
]


def forbidden(ch: str) -> bool:
    """A character a terminal could act on or a reader could not see, or white space other than ' '."""
    if any(lo <= ord(ch) <= hi for lo, hi in _IGNORABLE):
        return True
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") or (ch.isspace() and ch != " ")


def shown(text: str) -> str:
    """The contract's rendering: `\\` doubled, every forbidden character as \\xNN, \\uNNNN or \\UNNNNNNNN."""
    out = []
    for ch in text:
        cp = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif forbidden(ch):
            out.append(f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}")
        else:
            out.append(ch)
    return "".join(out)


@dataclass
class Screen:
    lines: list[str]  # the rendered rows, right-trimmed, without the empty rows below the output
    title: str
    raw_lines: list[str]  # the output's own lines, right-trimmed

    @property
    def literal(self) -> bool:
        """The terminal showed exactly the text: no character of it was obeyed as a control."""
        return self.lines == self.raw_lines


def screen(text: str) -> Screen:
    raw_lines = [ln.rstrip() for ln in text.rstrip("\n").split("\n")]
    columns = 2 * max(len(ln) for ln in raw_lines) + 8  # no character takes more than 2 columns: nothing wraps
    scr = pyte.Screen(columns, len(raw_lines) + 4)
    pyte.Stream(scr).feed(text.replace("\n", "\r\n"))
    lines = [ln.rstrip() for ln in scr.display]
    while lines and not lines[-1]:
        lines.pop()
    return Screen(lines, scr.title, raw_lines)


STUB = """#!/bin/sh
exec {python} -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> "$ARGV_LOG"
"""


def paste(line: str, tmp: Path) -> tuple[list[list[str]], list[str]]:
    """Run `line` as pasted into bash, in an empty directory, against a stub `access-eval`:
    (the argv of every stub call, the files the line created besides the log)."""
    tmp.mkdir(parents=True, exist_ok=True)
    bin_dir, work = tmp / "bin", tmp / "work"
    shutil.rmtree(work, ignore_errors=True)
    bin_dir.mkdir(exist_ok=True)
    work.mkdir()
    stub = bin_dir / "access-eval"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(0o755)
    log = tmp / "argv.log"
    log.unlink(missing_ok=True)
    # /usr/bin and /bin after the stub: `touch` is there, so an injected `$(touch pwned)` would work.
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "ARGV_LOG": str(log), "HOME": str(work)}
    subprocess.run(["bash", "--noprofile", "--norc", "-c", line], cwd=work, env=env, timeout=30,
                   stdin=subprocess.DEVNULL, capture_output=True, check=False)
    calls = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    created = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")
                     if p.is_file() and p not in (stub, log))
    return calls, created

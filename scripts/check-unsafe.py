#!/usr/bin/env python3
"""Enforce vblk's unsafe rules on the module sources.

1. `unsafe` appears only under rust/sys (the abstraction layer).
2. Every `unsafe { ... }` block and `unsafe impl` is preceded by a comment
   block containing `// SAFETY:` (directly above the statement it is in).
3. Every `unsafe fn` has a doc comment with a `# Safety` section.

Usage: check-unsafe.py [ROOT]   (default: the repo's rust/ directory)
Exits 1 and lists the offending lines on any violation.
"""
import pathlib
import re
import sys

UNSAFE_WORD = re.compile(r"\bunsafe\b")
UNSAFE_BLOCK = re.compile(r"\bunsafe\s*\{|\bunsafe\s+impl\b")
UNSAFE_FN = re.compile(r"\bunsafe\s+(extern\s+\"C\"\s+)?fn\b")


def code_part(line):
    """The line without a trailing // comment (good enough: no // in strings here)."""
    return line.split("//", 1)[0]


def comment_block_above(lines, i):
    """Comment lines directly above line i, after skipping the lines of the
    statement that line i continues."""
    j = i - 1
    # Walk up over continuation lines of the same statement.
    while j >= 0:
        s = lines[j].strip()
        if s.startswith("//") or s == "" or s.startswith("#["):
            break
        if re.search(r"[;{}]\s*$", code_part(s)):
            break
        j -= 1
    # Skip attributes, then collect the comment block.
    while j >= 0 and lines[j].strip().startswith("#["):
        j -= 1
    block = []
    while j >= 0 and lines[j].strip().startswith("//"):
        block.append(lines[j].strip())
        j -= 1
    return block


def check(root):
    problems = []
    for path in sorted(root.rglob("*.rs")):
        if path.name == "bindings_generated.rs":
            continue
        rel = path.relative_to(root.parent)
        in_sys = rel.parts[:2] == ("rust", "sys")
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            code = code_part(line)
            if not UNSAFE_WORD.search(code):
                continue
            if not in_sys:
                problems.append(f"{rel}:{i + 1}: unsafe outside rust/sys: {line.strip()}")
                continue
            if UNSAFE_BLOCK.search(code):
                if not any("SAFETY:" in c for c in comment_block_above(lines, i)):
                    problems.append(f"{rel}:{i + 1}: unsafe block/impl without a // SAFETY: comment")
            if UNSAFE_FN.search(code):
                if not any("# Safety" in c for c in comment_block_above(lines, i)):
                    problems.append(f"{rel}:{i + 1}: unsafe fn without a `# Safety` doc section")
    return problems


def self_test():
    """Prints TAP: the checker must flag planted violations and pass clean code."""
    import tempfile
    cases = [
        ("clean", {"sys/a.rs": "fn a() {\n    // SAFETY: fine.\n    let x = unsafe { f() };\n}\n"}, 0),
        ("multi-line statement", {"sys/a.rs": "// SAFETY: fine.\nlet x =\n    unsafe { f() };\n"}, 0),
        ("block without SAFETY", {"sys/a.rs": "fn a() {\n    let x = unsafe { f() };\n}\n"}, 1),
        ("impl without SAFETY", {"sys/a.rs": "unsafe impl Send for X {}\n"}, 1),
        ("unsafe outside sys", {"vblk/a.rs": "// SAFETY: no.\nunsafe impl Send for X {}\n"}, 1),
        ("unsafe fn without # Safety", {"sys/a.rs": "/// Does it.\npub unsafe fn f() {}\n"}, 1),
        ("unsafe fn with # Safety", {"sys/a.rs": "/// Does it.\n///\n/// # Safety\n/// Caller ...\npub unsafe fn f() {}\n"}, 0),
    ]
    failed = 0
    for n, (name, files, want) in enumerate(cases, 1):
        with tempfile.TemporaryDirectory() as d:
            root = pathlib.Path(d) / "rust"
            for rel, text in files.items():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_text(text)
            got = len(check(root))
        good = (got > 0) == (want > 0)
        failed += not good
        print(f"{'ok' if good else 'not ok'} {n} - unsafe checker: {name}")
    print(f"1..{len(cases)}")
    return 1 if failed else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    root = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent / "rust"
    problems = check(root)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Check that the C shim holds only one-line helpers.

rust/sys/shim.c exists for what bindgen cannot make callable: static inline
functions and macros. Every rule lives in Rust, so each C function is one
statement that calls (or evaluates) one of those:

1. Every function defined at file scope has at most one statement in its
   body (a top-level `;`), no nested `{` block, and no `if`, `for`,
   `while`, `do`, `switch` or `goto`.
2. A file-scope initialiser with braces (`static const struct x y = {...};`)
   needs a comment directly above it that contains "static table:".
3. The file has at most 150 lines.

Comments, string and char literals and preprocessor lines are blanked
first; the file is then split into top-level items by brace matching.
(Type definitions such as `struct x { ... };` are not restricted.)

Usage: check-c-shim.py FILE        (e.g. rust/sys/shim.c)
       check-c-shim.py --self-test
Prints `shim.c:LINE: message` per violation and exits 1 on any; on success
prints `shim.c: N functions, all one statement`.
"""
import os
import re
import sys

MAX_LINES = 150
MAX_STATEMENTS = 1
CONTROL = re.compile(r"\b(if|for|while|do|switch|goto)\b")
TABLE_MARK = "static table:"
# Identifiers in front of a top-level `(...)` that are not the function's
# name (attributes in the declaration).
NOT_A_NAME = re.compile(r"^(__\w*|noinline|notrace|asmlinkage)$")


def strip(text):
    """(code, comments): code is text with comments, string and char
    literal contents and preprocessor lines replaced by spaces (newlines
    kept, so offsets and line numbers match); comments is a list of
    (first line, last line, text)."""
    out = list(text)
    comments = []
    i, n = 0, len(text)
    line = 1

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            comments.append((line, line + text.count("\n", i, j), text[i:j]))
            blank(i, j)
            line += text.count("\n", i, j)
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            comments.append((line, line, text[i:j]))
            blank(i, j)
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            blank(i + 1, min(j, n))
            i = j + 1
        else:
            i += 1
    code = "".join(out)
    # Preprocessor lines, with their backslash continuations.
    lines = code.split("\n")
    cont = False
    for k, l in enumerate(lines):
        if cont or l.lstrip().startswith("#"):
            cont = l.rstrip().endswith("\\")
            lines[k] = " " * len(l)
    return "\n".join(lines), comments


def match_brace(code, i):
    """Offset of the `}` that closes the `{` at offset i (or len(code))."""
    depth = 0
    for j in range(i, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code)


def paren_depth0(s, ch):
    """Offsets of ch in s outside any parentheses or brackets."""
    depth, hits = 0, []
    for k, c in enumerate(s):
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        elif c == ch and depth == 0:
            hits.append(k)
    return hits


def function_name(header, start, code):
    """(name, offset) of the function a definition header declares."""
    depth = 0
    for k, c in enumerate(header):
        if c == "(":
            if depth == 0:
                m = re.search(r"([A-Za-z_]\w*)\s*$", header[:k])
                if m and not NOT_A_NAME.match(m.group(1)):
                    return m.group(1), start + m.start(1)
            depth += 1
        elif c == ")":
            depth -= 1
    return "?", start


def items(code):
    """Top-level items: (kind, header start, header, body start, body end).

    kind: function (header ends with `)`), initialiser (header has a
    top-level `=`) or other (a type definition)."""
    res = []
    i, n = 0, len(code)
    start = None
    while i < n:
        c = code[i]
        if c == ";":
            start = None
        elif c == "{":
            end = match_brace(code, i)
            s = start if start is not None else i
            header = code[s:i]
            h = header.strip()
            if paren_depth0(header, "="):
                kind = "initialiser"
            elif h.endswith(")"):
                kind = "function"
            else:
                kind = "other"
            res.append((kind, s, header, i, end))
            i = end
            # A function body ends its item; others go on to their `;`.
            start = None if kind == "function" else s
        elif not c.isspace() and start is None:
            start = i
        i += 1
    return res


def line_of(code, off):
    return code.count("\n", 0, off) + 1


def comment_above(comments, line):
    """Text of the comments that end right above line (contiguous ones)."""
    by_end = {}
    for first, last, text in comments:
        by_end.setdefault(last, []).append((first, text))
    texts = []
    want = line - 1
    while want in by_end:
        first, text = by_end[want][0]
        texts.append(text)
        want = first - 1
    return "\n".join(texts)


def check_text(name, text):
    """(problems, number of functions)."""
    problems = []
    nlines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    if nlines > MAX_LINES:
        problems.append(f"{name}: {nlines} lines (at most {MAX_LINES} allowed)")
    code, comments = strip(text)
    nfun = 0
    for kind, s, header, b, e in items(code):
        if kind == "function":
            nfun += 1
            fname, off = function_name(header, s, code)
            line = line_of(code, off)
            body = code[b + 1:e]
            ctl = sorted(set(CONTROL.findall(body)))
            nested = "{" in body
            nstmt = len(paren_depth0(body, ";"))
            if ctl or nested:
                what = ", ".join(ctl + (["a nested { block"] if nested else []))
                problems.append(f"{name}:{line}: function {fname} has control flow ({what})")
            if nstmt > MAX_STATEMENTS:
                problems.append(f"{name}:{line}: function {fname} has {nstmt} statements "
                                f"(at most {MAX_STATEMENTS} allowed)")
        elif kind == "initialiser":
            first = line_of(code, s)
            if TABLE_MARK not in comment_above(comments, first).lower():
                m = re.search(r"([A-Za-z_]\w*)\s*(\[[^\]]*\]\s*)*=", header)
                what = m.group(1) if m else "?"
                problems.append(f"{name}:{first}: file-scope initialiser {what} without a "
                                f'"{TABLE_MARK}" comment directly above')
    return problems, nfun


# ---------------------------------------------------------------- self-test

GOOD = """\
// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
#define WORDS(x) \\
	((x) / 8)

bool vblk_shim_module_get(void) { return try_module_get(THIS_MODULE); }
void vblk_shim_cond_resched(void) { cond_resched(); }
void vblk_shim_nothing(void) { }

int vblk_shim_event_wait(u32 *counter, u32 seen)
{
	return wait_var_event_interruptible(counter, READ_ONCE(*counter) != seen);
}

/* Strings and comments hide their ; { if: */
int vblk_shim_name(char *buf, u32 len) { return snprintf(buf, len, "a;b{if(x)} '%s'", ";"); }
char vblk_shim_brace(void) { return '{'; } // while (1) { }

/* static table: the control device's operations. */
static const struct file_operations vblk_fops = {
	.owner = THIS_MODULE,
	.open = nonseekable_open,
};

struct vblk_pair {
	u32 a, b;
};
static u32 vblk_counter = 0;
"""

CASES = [
    ("one-statement functions, a marked table", GOOD, 0),
    ("two statements", "void f(int *p)\n{\n\tg(p);\n\th(p);\n}\n", 1),
    ("a declaration and a return", "int f(void)\n{\n\tint x = g();\n\treturn x;\n}\n", 1),
    ("if", "int f(int x) { if (x) return 1; }\n", 1),
    ("if without braces, on its own lines", "void f(int x)\n{\n\tif (x)\n\t\tg();\n}\n", 1),
    ("for(;;) loop", "void f(void) { for (;;) g(); }\n", 1),
    ("while", "void f(void) { while (g()) ; }\n", 1),
    ("nested block", "void f(void) { { g(); } }\n", 1),
    ("goto", "void f(void) { goto out; }\n", 1),
    ("table without comment", "static const struct x y = {\n\t.a = 1,\n};\n", 1),
    ("table with a blank line under its comment", "/* static table: y */\n\nstatic int y[] = { 1, 2 };\n", 1),
    ("table with an unrelated comment", "/* The ops. */\nstatic const struct x y = { .a = 1 };\n", 1),
    ("marked array table", "// Static table: sizes.\nstatic const u32 sizes[] = { 1, 2, 4 };\n", 0),
    ("too long", "/* long */\n" + "\n" * 150 + "void f(void) { g(); }\n", 1),
    ("attribute before the name", "__attribute__((unused)) static void f(void) { g(); h(); }\n", 1),
]


def self_test():
    failed = 0
    for n, (name, text, want) in enumerate(CASES, 1):
        got, _ = check_text("shim.c", text)
        good = bool(got) == bool(want)
        failed += not good
        print(f"{'ok' if good else 'not ok'} {n} - C shim: {name}")
        if not good:
            for p in got or ["(no violation reported)"]:
                print(f"#   {p}")
    # The messages name the function and its line.
    got, nfun = check_text("shim.c", CASES[1][1])
    want = ["shim.c:1: function f has 2 statements (at most 1 allowed)"]
    good = got == want
    failed += not good
    print(f"{'ok' if good else 'not ok'} {len(CASES) + 1} - C shim: message format")
    if not good:
        print(f"#   got {got}")
    _, nfun = check_text("shim.c", GOOD)
    good = nfun == 6
    failed += not good
    print(f"{'ok' if good else 'not ok'} {len(CASES) + 2} - C shim: counts 6 functions (got {nfun})")
    print(f"1..{len(CASES) + 2}")
    return 1 if failed else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    if len(argv) != 1 or argv[0].startswith("-"):
        print(__doc__.strip().split("\n\n")[-1], file=sys.stderr)
        return 2
    path = argv[0]
    name = os.path.basename(path)
    with open(path, encoding="utf-8") as f:
        problems, nfun = check_text(name, f.read())
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"{name}: {nfun} functions, all one statement")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

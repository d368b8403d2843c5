#!/usr/bin/env python3
"""Check the SAFETY comments of the abstraction layer (rust/sys).

1. Every `unsafe { ... }` block and every `unsafe impl` is preceded by a
   `// SAFETY:` comment: in the comment lines right above the line with
   `unsafe` (attribute lines `#[...]` may sit in between), or right above
   the start of the statement that line continues (at most 3 code lines up,
   e.g. `let x =` / `to_result(` / a call's earlier arguments). A code line
   that ends a statement or block (`;`, `{`, `}`), a blank line, or a line
   with an `unsafe` of its own ends the search.
2. The SAFETY paragraph (from `SAFETY:` to a blank `//` line or the end of
   the comment) says something: not empty, not just "as above", "see
   above", "same as above" or "as before", and when it starts with one of
   those, it goes on to at least 6 words in all.
3. Every `unsafe fn` (including `unsafe extern "C" fn` definitions, but not
   the declarations inside an `extern` block, nor function pointer types)
   has a doc comment with a `# Safety` section.

String and char literals and comments are blanked before looking for
`unsafe`, so neither a string nor a comment that mentions it counts.
bindings.rs and bindings_generated.rs (bindgen output) are skipped.

Usage: check-safety-comments.py DIR|FILE...   (e.g. rust/sys)
       check-safety-comments.py --self-test
Prints `path:LINE: message` per violation; exits 1 on any.
"""
import pathlib
import re
import sys

SKIP_FILES = {"bindings.rs", "bindings_generated.rs"}
MAX_STATEMENT_LINES = 3

UNSAFE_BLOCK = re.compile(r"\bunsafe\s*\{")
UNSAFE_IMPL = re.compile(r"\bunsafe\s+impl\b")
# A definition or declaration with a name; `unsafe extern "C" fn(` (a
# function pointer type) has none. String contents are blanked, quotes kept.
UNSAFE_FN = re.compile(r"\bunsafe\s+(?:extern\s*(?:\"[^\"]*\")?\s*)?fn\s+([A-Za-z_]\w*)")
EXTERN_BLOCK = re.compile(r"\bextern\s*(?:\"[^\"]*\")?\s*$")
WORD = re.compile(r"\bunsafe\b")
LAZY_PHRASES = ["as above", "see above", "same as above", "as before"]
MIN_WORDS_AFTER_LAZY = 6


# ---------------------------------------------------------------- lexing


def lex(text):
    """Splits Rust source into per-line (code, comment) pairs.

    code: the line with comments removed and the contents of string and
    char literals replaced by spaces (the quotes stay).
    comment: the text of the `//` comment on the line ('' if none), or
    None when the line has no comment at all. Lines inside /* */ comments
    get code '' and comment None; they count as comment lines (see
    `kind`) via the `in_block` flag.
    Returns a list of dicts with keys code, comment, in_block.
    """
    out = []
    code = []
    comment = None
    in_block_line = False
    i, n = 0, len(text)
    block_depth = 0
    state = "code"  # code | str | rawstr
    raw_hashes = 0

    def end_line():
        nonlocal code, comment, in_block_line
        out.append({"code": "".join(code), "comment": comment, "in_block": in_block_line})
        code, comment, in_block_line = [], None, block_depth > 0

    while i < n:
        c = text[i]
        if c == "\n":
            end_line()
            i += 1
            continue
        if block_depth:
            in_block_line = True
            if text.startswith("/*", i):
                block_depth += 1
                i += 2
            elif text.startswith("*/", i):
                block_depth -= 1
                i += 2
            else:
                i += 1
            continue
        if state == "str":
            if c == "\\" and i + 1 < n and text[i + 1] != "\n":
                code.append("  ")
                i += 2
            elif c == '"':
                code.append('"')
                state = "code"
                i += 1
            else:
                code.append(" ")
                i += 1
            continue
        if state == "rawstr":
            if c == '"' and text.startswith("#" * raw_hashes, i + 1):
                code.append('"' + "#" * raw_hashes)
                i += 1 + raw_hashes
                state = "code"
            else:
                code.append(" ")
                i += 1
            continue
        # state == code
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            comment = text[i:j]
            i = j
            continue
        if text.startswith("/*", i):
            block_depth = 1
            in_block_line = True
            i += 2
            continue
        m = re.match(r"b?r(#*)\"", text[i:i + 260])
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            raw_hashes = len(m.group(1))
            code.append(m.group(0))
            i += len(m.group(0))
            state = "rawstr"
            continue
        if c == '"':
            code.append('"')
            state = "str"
            i += 1
            continue
        if c == "'":
            # A char literal ('x', '\n', '\u{1f600}'), or a lifetime/label.
            m = re.match(r"'(?:\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'\n])'", text[i:i + 16])
            if m:
                code.append("'" + " " * (len(m.group(0)) - 2) + "'")
                i += len(m.group(0))
                continue
        code.append(c)
        i += 1
    if code or comment is not None or in_block_line:
        out.append({"code": "".join(code), "comment": comment, "in_block": in_block_line})
    return out


def kind(line):
    """blank | comment | attr | code."""
    code = line["code"].strip()
    if not code:
        if line["comment"] is not None or line["in_block"]:
            return "comment"
        return "blank"
    if re.match(r"#!?\[.*\]$", code):
        return "attr"
    return "code"


def comment_text(line):
    """The text of a `//` comment line without its marker ('' otherwise)."""
    c = line["comment"]
    if c is None:
        return ""
    return re.sub(r"^//[/!]?", "", c).strip()


# ---------------------------------------------------------------- SAFETY


def comment_block_above(lines, i):
    """The comment lines (top-down, as line indices) that a SAFETY comment
    for the unsafe on line i may be in, or [] if there are none."""
    j = i - 1
    code_lines = 0
    while j >= 0:
        k = kind(lines[j])
        if k == "comment":
            break
        if k == "blank":
            return []
        if k == "attr":
            j -= 1
            continue
        code = lines[j]["code"].rstrip()
        if code_lines >= MAX_STATEMENT_LINES or code.endswith((";", "{", "}")) or WORD.search(code):
            return []
        code_lines += 1
        j -= 1
    block = []
    while j >= 0 and kind(lines[j]) in ("comment", "attr"):
        if kind(lines[j]) == "comment":
            block.append(j)
        j -= 1
    return block[::-1]


def safety_paragraph(lines, block):
    """(line index, text) of the last SAFETY paragraph in block, or None."""
    starts = [j for j in block if lines[j]["comment"] is not None
              and re.match(r"SAFETY:", comment_text(lines[j]))]
    if not starts:
        return None
    start = starts[-1]
    parts = [comment_text(lines[start])[len("SAFETY:"):]]
    for j in block[block.index(start) + 1:]:
        t = comment_text(lines[j])
        if lines[j]["comment"] is None or not t:
            break
        parts.append(t)
    return start, " ".join(p.strip() for p in parts).strip()


def lazy_reason(text):
    """Why a SAFETY paragraph says nothing, or None if it is fine."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    if not words:
        return "empty SAFETY comment"
    joined = " ".join(words)
    for p in LAZY_PHRASES:
        if joined == p:
            return f'SAFETY comment only says "{p}": state the reason'
        if joined.startswith(p + " ") and len(words) < MIN_WORDS_AFTER_LAZY:
            return (f'SAFETY comment is "{p}" plus {len(words) - len(p.split())} word(s): '
                    "state the reason")
    return None


# ---------------------------------------------------------------- # Safety


def doc_above(lines, i):
    """The doc comment text (and attributes) right above line i."""
    j = i - 1
    docs = []
    while j >= 0 and kind(lines[j]) in ("comment", "attr"):
        if kind(lines[j]) == "attr":
            docs.append(lines[j]["code"])
        elif lines[j]["comment"] is not None and lines[j]["comment"].startswith("///"):
            docs.append(lines[j]["comment"])
        j -= 1
    return docs


def extern_block_lines(lines):
    """Set of line indices inside an `extern "ABI" { ... }` block."""
    inside = set()
    stack = []  # True for an extern block's brace
    pending_extern = False
    for idx, line in enumerate(lines):
        code = line["code"]
        if any(stack):
            inside.add(idx)
        for m in re.finditer(r"[{}]|;", code):
            ch = m.group(0)
            if ch == "{":
                before = code[:m.start()]
                is_extern = bool(EXTERN_BLOCK.search(before)) or (pending_extern and not before.strip())
                stack.append(is_extern)
                pending_extern = False
            elif ch == "}":
                if stack:
                    stack.pop()
            else:
                pending_extern = False
        if EXTERN_BLOCK.search(code.rstrip()):
            pending_extern = True
    return inside


# ---------------------------------------------------------------- driver


def check_text(name, text):
    """Problems in one file's text, as `name:LINE: message` strings."""
    lines = lex(text)
    problems = []
    in_extern = extern_block_lines(lines)
    for i, line in enumerate(lines):
        code = line["code"]
        if not WORD.search(code):
            continue
        if UNSAFE_BLOCK.search(code) or UNSAFE_IMPL.search(code):
            what = "unsafe impl" if UNSAFE_IMPL.search(code) and not UNSAFE_BLOCK.search(code) else "unsafe block"
            para = safety_paragraph(lines, comment_block_above(lines, i))
            if para is None:
                problems.append(f"{name}:{i + 1}: {what} without a // SAFETY: comment above")
            else:
                reason = lazy_reason(para[1])
                if reason:
                    problems.append(f"{name}:{i + 1}: {reason} (line {para[0] + 1})")
        m = UNSAFE_FN.search(code)
        if m and i not in in_extern:
            if not any("# Safety" in d for d in doc_above(lines, i)):
                problems.append(f"{name}:{i + 1}: unsafe fn {m.group(1)} without a `# Safety` doc section")
    return problems


def files_of(args):
    for a in args:
        p = pathlib.Path(a)
        paths = sorted(p.rglob("*.rs")) if p.is_dir() else [p]
        for f in paths:
            if f.name not in SKIP_FILES:
                yield f


# ---------------------------------------------------------------- self-test

GOOD_FN = "/// Does it.\n///\n/// # Safety\n///\n/// `p` must be valid.\npub(crate) unsafe fn f(p: *mut u8) {}\n"
CASES = [
    ("SAFETY right above", "fn a() {\n    // SAFETY: `p` is valid.\n    unsafe { f(p) }\n}\n", 0),
    ("multi-line SAFETY above let", "fn a() {\n    // SAFETY: `p` is valid\n    // for the call.\n"
     "    let x = unsafe { f(p) };\n}\n", 0),
    ("SAFETY above to_result(unsafe {", "fn a() -> Result {\n    // SAFETY: `p` is valid.\n"
     "    to_result(unsafe {\n        f(p)\n    })\n}\n", 0),
    ("SAFETY two lines above let x = unsafe { in a multi-line call",
     "fn a() {\n    // SAFETY: `p` is valid for the whole call.\n    let x = g(\n        a,\n"
     "        unsafe { f(p) },\n    );\n}\n", 0),
    ("SAFETY above a let broken before unsafe", "fn a() {\n    // SAFETY: `p` is valid.\n    let x =\n"
     "        unsafe { f(p) };\n}\n", 0),
    ("attribute between SAFETY and block", "fn a() {\n    // SAFETY: `p` is valid.\n"
     "    #[allow(clippy::x)]\n    unsafe { f(p) };\n}\n", 0),
    ("other comment lines after SAFETY", "fn a() {\n    // SAFETY: `p` is valid.\n    //\n"
     "    // Note: nothing else.\n    unsafe { f(p) };\n}\n", 0),
    ("missing SAFETY", "fn a() {\n    let x = unsafe { f(p) };\n}\n", 1),
    ("SAFETY of the previous statement", "fn a() {\n    // SAFETY: `p` is valid.\n"
     "    let y = unsafe { f(p) };\n    let x = unsafe { f(p) };\n}\n", 1),
    ("SAFETY above an enclosing block", "fn a() {\n    // SAFETY: `p` is valid.\n    if c {\n"
     "        unsafe { f(p) };\n    }\n}\n", 1),
    ("blank line between", "fn a() {\n    // SAFETY: `p` is valid.\n\n    unsafe { f(p) };\n}\n", 1),
    ("too far above", "fn a() {\n    // SAFETY: `p` is valid.\n    let x = g(\n        a,\n        b,\n"
     "        c,\n        unsafe { f(p) },\n    );\n}\n", 1),
    ("as above", "fn a() {\n    // SAFETY: as above.\n    unsafe { f(p) };\n}\n", 1),
    ("See Above!", "fn a() {\n    // SAFETY: See Above!\n    unsafe { f(p) };\n}\n", 1),
    ("as above, for the data", "fn a() {\n    // SAFETY: as above, for the data.\n    unsafe { f(p) };\n}\n", 1),
    ("as above plus a reason", "fn a() {\n    // SAFETY: as above; control ioctls run in process\n"
     "    // context.\n    unsafe { f(p) };\n}\n", 0),
    ("empty SAFETY", "fn a() {\n    // SAFETY:\n    unsafe { f(p) };\n}\n", 1),
    ("unsafe impl with SAFETY", "// SAFETY: `X` owns its pointer.\nunsafe impl Send for X {}\n", 0),
    ("unsafe impl without SAFETY", "/// Docs only.\nunsafe impl<T: Q> Sync for X<T> {}\n", 1),
    ("unsafe impl with as above", "// SAFETY: as above.\nunsafe impl Sync for X {}\n", 1),
    ("unsafe in strings and comments", "fn a() {\n    // an unsafe { block } in a comment\n"
     "    let s = \"unsafe { x }\";\n    let r = r#\"unsafe impl \"# ;\n    /* unsafe {\n"
     "       unsafe fn g() */\n    let c = '{';\n}\n", 0),
    ("unsafe fn with # Safety", GOOD_FN, 0),
    ("unsafe fn without # Safety", "/// Does it.\npub(crate) unsafe fn f(p: *mut u8) {}\n", 1),
    ("unsafe extern fn without # Safety", "/// A callback.\nunsafe extern \"C\" fn cb(p: *mut u8) {}\n", 1),
    ("unsafe fn with # Safety and an attribute", "/// Does it.\n///\n/// # Safety\n///\n/// Never.\n"
     "#[inline]\nunsafe fn f() {}\n", 0),
    ("extern block declarations", "unsafe extern \"C\" {\n    pub unsafe fn g(p: *mut u8);\n}\n"
     "extern \"C\" {\n    fn h();\n    unsafe fn k();\n}\n", 0),
    ("function pointer type", "struct Ops {\n    f: Option<unsafe extern \"C\" fn(p: *mut u8)>,\n}\n", 0),
    ("lifetimes do not start char literals", "fn a<'a>(x: &'a u8) -> &'a u8 {\n"
     "    // SAFETY: `x` is valid.\n    unsafe { f(x) }\n}\n", 0),
]


def self_test():
    failed = 0
    for n, (name, text, want) in enumerate(CASES, 1):
        got = check_text("t.rs", text)
        good = bool(got) == bool(want)
        failed += not good
        print(f"{'ok' if good else 'not ok'} {n} - safety comments: {name}")
        if not good:
            for p in got or ["(no violation reported)"]:
                print(f"#   {p}")
    print(f"1..{len(CASES)}")
    return 1 if failed else 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    if not argv or argv[0].startswith("-"):
        print(__doc__.strip().split("\n\n")[-1], file=sys.stderr)
        return 2
    problems = []
    for f in files_of(argv):
        problems += check_text(str(f), f.read_text())
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

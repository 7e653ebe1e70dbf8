#!/usr/bin/env python3
"""Print README.md's table of error codes, generated from the sources that
define them, so the table can not drift from the code:

  - shm/include/shoal/error.h: the X-macro SHOAL_ERRNO_MAP (name, offset
    below SHOAL__EBASE, message);
  - libclient/python/shoal/errors.py: _TABLE (offset -> name, exception
    class) and the builtin each class also subclasses;
  - libclient/go/errors.go: the sentinels (ErrX = sentinel(C.SHOAL_NAME));
  - tools/cli/main.c: exit_code() (the CLI's exit status per code).

usage: tools/lib/errors_table.py [ROOT]   (ROOT: the repository, default ..)
Paste the output over the table in README.md's "Error codes" section.
"""

import os
import re
import sys


def read(root, path):
    with open(os.path.join(root, path), encoding="utf-8") as f:
        return f.read()


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..")
    h = read(root, "shm/include/shoal/error.h")
    base = int(re.search(r"#define SHOAL__EBASE \((-?\d+)\)", h).group(1))
    macro = h[h.index("#define SHOAL_ERRNO_MAP(XX)"):]
    macro = macro[:macro.index("\n\n")]
    macro = macro.replace("\\\n", "\n")
    codes = []
    for m in re.finditer(r"XX\((\w+),\s*(\d+),((?:\s*\"(?:[^\"\\]|\\.)*\")+)\s*\)",
                         macro):
        msg = "".join(re.findall(r"\"((?:[^\"\\]|\\.)*)\"", m.group(3)))
        codes.append((m.group(1), int(m.group(2)), msg))

    py = read(root, "libclient/python/shoal/errors.py")
    bases = dict(re.findall(r"^class (\w+)\(Error(?:, (\w+))?\):", py, re.M))
    pycls = {name: cls for name, cls in
             re.findall(r"^\s+\d+: \(\"(\w+)\", (\w+)\),", py, re.M)}

    go = read(root, "libclient/go/errors.go")
    gosent = {name: var for var, name in
              re.findall(r"^\s+(Err\w+) += sentinel\(C\.SHOAL_(\w+)\)", go,
                         re.M)}

    cli = read(root, "tools/cli/main.c")
    fn = cli[cli.index("static int exit_code(int rc)"):]
    fn = fn[:fn.index("\n}\n")]
    exits = {}
    pending = []
    ex_val = dict((k, int(v)) for k, v in
                  re.findall(r"\b(EX_\w+) = (\d+),", cli))
    default = None
    for ln in fn.splitlines():
        labels = re.findall(r"case SHOAL_(\w+):", ln)
        pending += labels
        if re.search(r"default:", ln):
            pending.append(None)
        r = re.search(r"return (EX_\w+);", ln)
        if r:
            for p in pending:
                if p is None:
                    default = ex_val[r.group(1)]
                else:
                    exits[p] = ex_val[r.group(1)]
            pending = []

    print("| code | value | meaning (`shoal_strerror`) | Python | Go | CLI exit |")
    print("|---|---|---|---|---|---|")
    for name, off, msg in codes:
        cls = pycls.get(name, "?")
        b = bases.get(cls)
        pyt = "`shoal.%s`%s" % (cls, " (%s `%s`)" % ("an" if b[0] in "AEIOU" else "a", b) if b else "")
        print("| `SHOAL_%s` | %d | %s | %s | `shoal.%s` | %s |" % (
            name, base - off, msg.replace("|", "\\|"), pyt,
            gosent.get(name, "?"), exits.get(name, default)))


if __name__ == "__main__":
    main()

"""python.install: the package installs with pip, offline, and finds a
libshoal copied next to it.

usage: install_check.py PACKAGE_SOURCE_DIR LIBSHOAL_SO

Copies the source to a temporary directory (pip builds in place and would
leave build/ and *.egg-info behind), runs
``pip install --no-build-isolation --no-index --target``, copies libshoal
into the installed package and imports it with SHOAL_LIB unset. Exit 77
(ctest: skipped) when this interpreter has no pip or no setuptools.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile


def main() -> int:
    src, lib = sys.argv[1], sys.argv[2]
    for mod in ("pip", "setuptools"):
        if subprocess.run([sys.executable, "-c", "import " + mod],
                          capture_output=True).returncode:
            print("SKIP: %s has no %s" % (sys.executable, mod))
            return 77
    with tempfile.TemporaryDirectory(prefix="shoal-pyinstall-") as tmp:
        copy = os.path.join(tmp, "src")
        shutil.copytree(src, copy, ignore=shutil.ignore_patterns(
            "tests", "build", "*.egg-info", "__pycache__"))
        site = os.path.join(tmp, "site")
        p = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-build-isolation",
             "--no-index", "--no-deps", "--disable-pip-version-check",
             "--target", site, copy],
            capture_output=True, text=True)
        print(p.stdout[-2000:], p.stderr[-2000:])
        if p.returncode:
            print("FAIL: pip install exited %d" % p.returncode)
            return 1
        pkg = os.path.join(site, "shoal")
        for f in ("__init__.py", "_ffi.py", "client.py", "errors.py",
                  "py.typed"):
            if not os.path.exists(os.path.join(pkg, f)):
                print("FAIL: %s not installed" % f)
                return 1
        shutil.copy(lib, os.path.join(pkg, "libshoal.so.0"))
        env = {k: v for k, v in os.environ.items()
               if k not in ("SHOAL_LIB", "PYTHONPATH")}
        env["PYTHONPATH"] = site
        code = ("import shoal, os; p = shoal.library_path(); "
                "assert p.startswith(os.path.dirname(shoal.__file__)), p; "
                "assert shoal.__file__.startswith(%r), shoal.__file__; "
                "print('OK', shoal.__file__, p, shoal.library_version())"
                % site)
        p = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp,
                           capture_output=True, text=True)
        print(p.stdout, p.stderr)
        return 0 if p.returncode == 0 and p.stdout.startswith("OK") else 1


if __name__ == "__main__":
    sys.exit(main())

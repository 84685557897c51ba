"""The stubs of the compiled modules (engine/*.pyi) are complete and usable (style E7).

* mypy --strict on tests/typing_usage.py, which pins the stubs' types with
  ``assert_type`` (and is executed too, so it is valid at runtime);
* a call that the stubs forbid is reported, so mypy really reads the stubs;
* ``mypy.stubtest`` compares every stub with the imported extension module: a
  ``def``/``cpdef``/class added to a .pyx without its stub, or a parameter renamed,
  fails here.

mypy runs in a child process (``python -m mypy``) rather than through
``mypy.api.run``: an in-process run leaves ~700k objects behind in the pytest
process, which costs every later full GC pass ~0.5 s and the interpreter exit
several seconds. Errors in the engine's own .py modules are not this file's
concern: imports are followed silently (their types are used, their diagnostics
are not reported).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPILED = ["engine.symbols", "engine.patterns", "engine.matching", "engine.metrics", "engine.predict"]
MYPY_FLAGS = ["--strict", "--follow-imports=silent", "--cache-dir=/dev/null", "--no-error-summary",
              "--show-error-codes", "--python-version=3.11"]
# Cython adds these to every module; they are not part of the engine's API.
STUBTEST_ALLOWLIST = r"engine\.\w+\.__(reduce_cython|setstate_cython|test|pyx_capi)__"




def mypy(*args: str) -> tuple[int, str]:
    """Run ``python -m <args>`` from the repository root (where `engine` and its stubs are)."""
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_mypy_is_installed():
    # The `test` extra installs mypy; a missing one must fail, not skip.
    status, output = mypy("mypy", "--version")
    assert status == 0 and output.startswith("mypy "), output


def test_usage_file_type_checks():
    assert mypy("mypy", *MYPY_FLAGS, "tests/typing_usage.py") == (0, "")


def test_usage_file_runs():
    from tests import typing_usage

    typing_usage.main()


def test_stubs_reject_wrong_calls():
    program = "\n".join([
        "from engine.matching import char_lcs",
        "from engine.patterns import PatternIndex",
        "from engine.symbols import SymbolTable",
        "char_lcs(1, 'a')",
        "PatternIndex().learn('n', [['a']], [], [], '5')",
        "x: str = SymbolTable().intern('a')",
    ])
    status, output = mypy("mypy", *MYPY_FLAGS, "-c", program)
    assert status == 1
    lines = output.splitlines()
    assert len(lines) == 3, output
    assert "[arg-type]" in lines[0] and "char_lcs" in lines[0]
    assert "[arg-type]" in lines[1] and "learn" in lines[1]
    assert "[assignment]" in lines[2]


def test_stubs_match_the_extension_modules(tmp_path):
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nfollow_imports = silent\ncache_dir = /dev/null\n")
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(STUBTEST_ALLOWLIST + "\n")
    status, output = mypy("mypy.stubtest", "--mypy-config-file", str(config), "--allowlist", str(allowlist),
                          *COMPILED)
    assert status == 0, output

"""Re-run the current script under the project's virtualenv when launched with another Python.

The Express README runs ``python3 bench/run.py``; the harness needs httpx and asyncpg, which
live in ``.venv``. Import this module before anything else.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

_VENV_PYTHON = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "python"

if importlib.util.find_spec("httpx") is None or importlib.util.find_spec("asyncpg") is None:
    if _VENV_PYTHON.exists() and Path(sys.prefix).resolve() != _VENV_PYTHON.parent.parent.resolve():
        os.execv(_VENV_PYTHON, [str(_VENV_PYTHON), *sys.argv])  # noqa: S606  (same script, venv python)
    raise SystemExit(f"httpx and asyncpg are needed: run with {_VENV_PYTHON}")

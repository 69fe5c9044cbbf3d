"""The fan-out benchmark (``make bench``): pulsestream against a tutorial-style bridge.

Outside the product: not installed, run from the repository root as
``python -m bench``. See ``bench/__main__.py`` for the options and the README's
"Performance" section for the latest numbers.

Like the tests, it is a development tool, and it starts its services and reads
SSE the way the tests do: with ``tests/support/services.py`` and
``tests/support/sse.py``. That folder is put on ``sys.path`` here, exactly as
pytest's ``pythonpath`` setting (pyproject.toml) puts it there for the tests,
so under pytest and under ``python -m bench`` the modules are imported once, by
the same names (``import services``, ``import sse``).
"""

import sys
from pathlib import Path

_SUPPORT = str(Path(__file__).resolve().parent.parent / "tests" / "support")
if _SUPPORT not in sys.path:
    sys.path.append(_SUPPORT)

"""Drive the real Helm library (helm-sdkpy) from a subprocess: ``lint CHART`` or ``install ...``.

Run as a script, never imported by the tests: the Go library reads
``HELM_DRIVER`` (``memory``, so no release Secrets are written) only from the
environment the process starts with, and keeping its runtime out of the
pytest process keeps its signal handlers away from pytest's.

Prints one JSON object on stdout; exit status 0 on success, 3 on a Helm error.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import helm_sdkpy


def main(argv: list[str]) -> int:
    command, chart = argv[0], argv[1]
    if command == "lint":
        result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(chart))
        print(json.dumps(result))
        return 0
    release, namespace, values_file = argv[2], argv[3], argv[4]
    values = json.loads(Path(values_file).read_text()) or None
    install = helm_sdkpy.Install(helm_sdkpy.Configuration(namespace=namespace))
    try:
        result = asyncio.run(install.run(release, chart, values=values, wait=False, timeout=60))
    except helm_sdkpy.HelmError as error:
        print(json.dumps({"error": str(error)}))
        return 3
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

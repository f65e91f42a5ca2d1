"""What a fresh interpreter imports to run a piece of code: for modules kept out of the serving
process (their memory and import time would land on requests in flight)."""

from __future__ import annotations

import json
import subprocess
import sys


def modules_loaded_by(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))

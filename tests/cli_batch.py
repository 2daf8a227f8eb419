"""Several ``ocs`` command lines in one interpreter: each through ``ocs.cli.main`` as the
``ocs`` command would run it (its exit status, stdout and stderr), with one start-up for all,
which keeps CLI tests within their time on a loaded machine."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

from secure import ADMIN

_BATCH = """
import contextlib, io, json, sys
from ocs.cli import main
out = []
for argv in json.load(sys.stdin):
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 1
    out.append([rc, o.getvalue(), e.getvalue()])
sys.__stdout__.write(json.dumps(out))
"""


def run_batch(argvs: Sequence[Sequence[str]], env: Mapping[str, str] | None = None,
              timeout: float = 60) -> list[SimpleNamespace]:  # fmt: skip
    """Each command line's ``returncode``, ``stdout`` and ``stderr``, run in order; the
    environment is this one without its OCS_* settings, plus ``env``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    full.update(env or {})
    done = subprocess.run([sys.executable, "-c", _BATCH], input=json.dumps(argvs),
                          capture_output=True, text=True, env=full, timeout=timeout,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [SimpleNamespace(returncode=rc, stdout=o, stderr=e)
            for rc, o, e in json.loads(done.stdout)]  # fmt: skip


async def run_all(*argvs: list[str], api: str | None = None) -> list[SimpleNamespace]:
    """:func:`run_batch` from a test's event loop (the OCS under test runs there), with the
    admin token and, given ``api``, OCS_API_URL."""
    env = {"OCS_API_TOKEN": ADMIN, **({"OCS_API_URL": api} if api else {})}
    return await asyncio.to_thread(run_batch, argvs, env)

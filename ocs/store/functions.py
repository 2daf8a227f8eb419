"""The balance scripts as one Redis Functions library (Redis 7.0+).

As EVALSHA scripts, every call runs the lib.lua prelude again: each of its helpers is a
closure created anew, its tables (LEVEL...) built anew. As a library loaded once with
``FUNCTION LOAD``, the prelude runs once per load and every ``FCALL`` runs only the request's
own code. The Lua is the same text: each script's body becomes a function of the library, and
the prelude's per-call values (the lines between ``-- per call {`` and ``-- per call }`` in
lib.lua: the keys, ``now``, the fingerprint and the thresholds' generation) become library
locals that each call assigns before running its body. So the EVALSHA path (Redis 6.2, which
has no Functions) and the Functions path run the same logic, and tests/test_script_equivalence.py
holds both to the frozen scripts.

The library's name carries a digest of its code (``ocs_<12 hex>``), and so do its functions
(``ocs_<12 hex>_reserve``): two versions of the OCS during a rolling upgrade each call their
own, as they would by SHA with EVALSHA. Libraries of older versions stay until an operator
deletes them (``FUNCTION DELETE``); each holds ~34 KB of code.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Final

_BLOCK: Final = re.compile(r"^-- per call \{\n(.*?)^-- per call \}\n", re.S | re.M)
_BINDING: Final = re.compile(r"^local ([A-Za-z_][\w, ]*?) = (.+)$")


@dataclass(frozen=True, slots=True)
class Library:
    """A Functions library: its name, its code and the name of each script's function."""

    name: str
    code: str
    functions: dict[str, str]


def _read(name: str) -> str:
    return (resources.files("ocs.store") / "scripts" / f"{name}.lua").read_text()


def build_library(
    names: Sequence[str], prelude: str | None = None, read: Callable[[str], str] = _read
) -> Library:
    """One library holding the scripts ``names`` (their bodies after the shared prelude).
    ``read`` gives a script's text by name (``"lib"``: the prelude), the package's by default
    (bench/scripts_cost.py builds an earlier revision's)."""
    lib = read("lib") if prelude is None else prelude
    block = _BLOCK.search(lib)
    if block is None:
        raise ValueError("lib.lua: no '-- per call {' ... '-- per call }' block")
    declared: list[str] = []
    assigned: list[str] = []
    for line in block.group(1).splitlines():
        m = _BINDING.match(line)
        if m is None:
            raise ValueError(f"lib.lua, per-call block: not 'local NAMES = EXPRESSIONS': {line!r}")
        declared.append(m.group(1))
        assigned.append(f"  {m.group(1)} = {m.group(2)}")
    prelude_code = (
        lib[: block.start()]
        + "local KEYS, ARGV\n"
        + "".join(f"local {d}\n" for d in declared)
        + lib[block.end() :]
    )
    bodies = {name: read(name) for name in names}
    digest = hashlib.sha1((prelude_code + "".join(bodies[n] for n in names)).encode()).hexdigest()[
        :12
    ]
    lib_name = f"ocs_{digest}"
    parts = [f"#!lua name={lib_name}\n", prelude_code]
    functions = {}
    for name in names:
        fn = f"{lib_name}_{name}"
        functions[name] = fn
        parts.append(f"\nlocal function body_{name}()\n{bodies[name]}\nend\n")
        parts.append(
            f"redis.register_function('{fn}', function(keys, args)\n"
            "  KEYS, ARGV = keys, args\n" + "\n".join(assigned) + "\n"
            f"  return body_{name}()\nend)\n"
        )
    return Library(lib_name, "".join(parts), functions)

"""The load driver's output (bench/load.py): a plain run writes outside the tree, so the
tracked bench/LOAD.md stays, and ``--out-dir`` may name a folder that does not exist yet."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

load = pytest.importorskip("bench.load")
ROOT = Path(__file__).resolve().parent.parent


def test_default_out_dir_is_outside_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOAD_OUT_DIR", raising=False)
    out = Path(load.options([]).out_dir).resolve()
    assert ROOT not in out.parents and out != ROOT
    monkeypatch.setenv("LOAD_OUT_DIR", "/somewhere/else")
    assert load.options([]).out_dir == "/somewhere/else"


def test_report_goes_into_a_missing_folder(tmp_path: Path) -> None:
    locust_page = tmp_path / "locust.html"
    locust_page.write_text("<html><body><p>locust</p></body></html>")
    summary = SimpleNamespace(passed=True, verdicts=["p99 7 ms <= 20 ms"])
    check = SimpleNamespace(markdown=lambda: "every subscriber adds up")
    run = SimpleNamespace(html=locust_page, samples=[], summary=summary, check=check)
    out = tmp_path / "new" / "folder" / "load-report.html"
    load.write_html(run, out)  # type: ignore[arg-type]
    page = out.read_text()
    assert "<p>locust</p>" in page and "every subscriber adds up" in page
    assert page.endswith("</body></html>")

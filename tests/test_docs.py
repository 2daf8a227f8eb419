"""The documentation's examples work as written."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

from tariffs import PlanBook, TariffRater, UsageContext, load_plans, parse_plan

DOCS = Path(__file__).parent.parent / "docs"


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def test_the_complete_example_plan_loads_and_rates_as_the_text_says() -> None:
    text = (DOCS / "tariffs.md").read_text()
    toml = re.search(r"```toml\n(.*?)```", text, re.S)
    assert toml is not None
    rater = TariffRater(PlanBook([parse_plan(toml.group(1), "docs/tariffs.md")]))
    saturday = _ms("2026-11-28T10:00:00+01:00")
    # A national call on a Saturday: 125 s at the weekend rate 0.06/min = 0.125, half off
    # (weekend national) = 0.0625, rounded half-even to the cent: 0.06.
    ctx = UsageContext("example", "voice", started_at=saturday, destination="030 1234567")
    assert rater.cost(ctx, 125) == 60_000
    # Premium beats the weekend rate: connect 0.50 + 2 started minutes x 1.99 = 4.48.
    ctx = UsageContext("example", "voice", started_at=saturday, destination="0900 1234")
    assert rater.cost(ctx, 61) == 4_480_000
    # Terminating call while roaming far away: 2 started minutes at 0.99.
    ctx = UsageContext("example", "voice-mt", started_at=saturday, location="310260")
    assert rater.cost(ctx, 61) == 1_980_000


def test_the_rate_example_prices_the_band_switch() -> None:
    rater = TariffRater(PlanBook(load_plans()))
    ctx = UsageContext(
        "prepaid-basic", "voice", started_at=_ms("2026-11-23T18:59:30+01:00"),
        destination="0049301234",
    )  # fmt: skip
    rating = rater.rate(ctx, 125)
    assert rating.total == 140_000
    assert [ln.text for ln in rating.lines if ln.kind == "usage"] == [
        "peak: 30 x 0.09 per 60",
        "offpeak: 95 x 0.06 per 60",
    ]
    assert "0.14 EUR" in rating.explain()


def test_no_file_holds_a_merge_conflicts_markers() -> None:
    import subprocess

    root = DOCS.parent
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=root, capture_output=True, text=True, check=False
    ).stdout.split()
    marker = re.compile(r"^(<{7} |>{7} |={7}$)", re.M)
    bad = []
    for name in tracked or [str(p.relative_to(root)) for p in DOCS.glob("*.md")]:
        path = root / name
        text = path.suffix in (".md", ".py", ".lua", ".toml", ".yaml", ".yml", ".json", ".js")
        if text and path.is_file() and marker.search(path.read_text(errors="replace")):
            bad.append(name)
    assert bad == []

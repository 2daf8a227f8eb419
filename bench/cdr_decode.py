"""CDR decoding on one core: records/s from file bytes to ``Usage``, for each decoder, and the
simulator's encoders.

The input is what ``ocs switch-sim`` writes: ``make_records`` traffic (55 % MOC, 25 % MTC, 15 %
MO SMS, 5 % MT SMS; 8 % of calls unanswered; 10 % roaming), encoded once per format:

* **ber fast, framed**: TS 32.298 BER records in the TS 32.297 file framing, the default
  decoder (``decode(..., decoder="fast")``): reads only the fields charging needs;
* **ber fast, plain**: the same records without the framing;
* **ber pycrate, framed**: the reference decoder (``decoder="pycrate"``): pycrate's TS 32.298
  module decodes the whole record and checks it against the ASN.1;
* **ascii**: the ASCII format (docs/cdr-formats.md);
* **encode fast / encode pycrate**: the simulator's BER encoder against pycrate's encoder of the
  same values (they write the same bytes: tests/test_switchsim.py).

Each case runs over the whole file (``--records`` records; pycrate's cases over a tenth of it)
in each of ``--rounds`` rounds, cases interleaved; records/s is per CPU second of this process
(``time.process_time``: what survives a noisy machine), the median over rounds; the ratio to the
fast framed decoder is computed within each round, then its median taken.

    .venv/bin/python -m bench.cdr_decode [--records N] [--rounds R]

The hot-billing target is 10,000 records/s through the whole pipeline (decode, rate, debit) on
one process: decoding may take a small part of the 100 µs each record has.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.report import append_section
from ocs.mediation.formats import ber as ber_format
from ocs.mediation.formats import decode
from ocs.sims.switch import Layout, Traffic, make_records, write_files


def _files(n: int) -> dict[str, tuple[bytes, int]]:
    """name -> (file bytes, records) for each format, all records in one file."""
    tz = datetime.timezone(datetime.timedelta(hours=1))
    subs = [f"4917{i:08d}" for i in range(300)]
    start = datetime.datetime(2026, 3, 16, 9, 0, tzinfo=tz)
    recs = make_records(Traffic(subs, rate=1e6, tz=tz), start=start, count=n, seed=11)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name, layout in (
            ("framed", Layout(fmt="ber", framed=True, max_file_bytes=2**31)),
            ("plain", Layout(fmt="ber", framed=False, max_file_bytes=2**31)),
            ("ascii", Layout(fmt="ascii", max_file_bytes=2**31)),
        ):
            sub = Path(d) / name
            sub.mkdir()
            [path] = write_files(recs, sub, layout, tz)
            out[name] = (path.read_bytes(), n)
    return out


def _timed(fn: Callable[[], int]) -> tuple[float, float]:
    """(records per CPU second, records per wall second)."""
    gc.collect()
    c0, w0 = time.process_time(), time.perf_counter()
    count = fn()
    c1, w1 = time.process_time(), time.perf_counter()
    return count / max(c1 - c0, 1e-9), count / max(w1 - w0, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()

    files = _files(args.records)
    small = max(1, args.records // 10)
    small_framed = _files(small)["framed"]
    tz = datetime.timezone(datetime.timedelta(hours=1))
    recs = make_records(
        Traffic([f"4917{i:08d}" for i in range(300)], rate=1e6, tz=tz),
        start=datetime.datetime(2026, 3, 16, 9, 0, tzinfo=tz), count=small, seed=12,
    )  # fmt: skip
    values = [ber_format.record_value(r) for r in recs]
    from pycrate_asn1dir import CDR

    cs = CDR.CSChargingDataTypes.CSRecord

    def run_decode(data: bytes, decoder: str, name: str) -> Callable[[], int]:
        def go() -> int:
            n = 0
            for item in decode(data, switch="MSC01", file=name, decoder=decoder):  # type: ignore[arg-type]
                n += 1
                assert item.__class__.__name__ == "Usage", item
            return n

        return go

    def encode_fast() -> int:
        for r in recs:
            ber_format.encode_record(r)
        return len(recs)

    def encode_pycrate() -> int:
        for v in values:
            cs.set_val(v)
            cs.to_ber()
        return len(values)

    cases: dict[str, Callable[[], int]] = {
        "ber fast, framed": run_decode(files["framed"][0], "fast", "f.ber"),
        "ber fast, plain": run_decode(files["plain"][0], "fast", "p.ber"),
        "ber pycrate, framed": run_decode(small_framed[0], "pycrate", "s.ber"),
        "ascii": run_decode(files["ascii"][0], "fast", "a.txt"),
        "encode fast (simulator)": encode_fast,
        "encode pycrate": encode_pycrate,
    }
    for fn in cases.values():  # warm-up (imports pycrate, fills caches)
        fn()
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    ratios: dict[str, list[float]] = {k: [] for k in cases}
    names = list(cases)
    for rnd in range(args.rounds):
        order = names if rnd % 2 == 0 else names[::-1]
        got = {k: _timed(cases[k]) for k in order}
        for k in names:
            results[k].append(got[k])
            ratios[k].append(got[k][0] / got["ber fast, framed"][0])

    lines = [
        f"{args.records:,} records per file ({small:,} for pycrate), {args.rounds} rounds, cases "
        f"interleaved; framed file {len(files['framed'][0]):,} octets, plain "
        f"{len(files['plain'][0]):,}, ASCII {len(files['ascii'][0]):,}. Records/s per CPU "
        "second; the ratio to the fast framed decoder taken within each round.",
        "",
        "| case | records/s (CPU) | records/s (wall) | µs/record (CPU) | vs fast framed |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in names:
        cpu = statistics.median(c for c, _ in results[k])
        wall = statistics.median(w for _, w in results[k])
        ratio = statistics.median(ratios[k])
        lines.append(f"| {k} | {cpu:,.0f} | {wall:,.0f} | {1e6 / cpu:,.1f} | {ratio:.2f} |")
    speedup = statistics.median(ratios["encode fast (simulator)"][i] / ratios["encode pycrate"][i]
                                for i in range(args.rounds))  # fmt: skip
    decode_speedup = statistics.median(1 / ratios["ber pycrate, framed"][i]
                                       for i in range(args.rounds))  # fmt: skip
    lines += ["", f"Same-run ratios: the fast BER decoder is {decode_speedup:.1f}x pycrate's; "
              f"the simulator's encoder {speedup:.1f}x pycrate's."]  # fmt: skip
    print("\n".join(lines))
    if not args.no_append:
        append_section("CDR decoding: fast BER vs pycrate (bench/cdr_decode.py)", lines,
                       libraries=())  # fmt: skip


if __name__ == "__main__":
    main()

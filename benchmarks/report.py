"""The terminal tables (also pasted into docs/performance.md) and the target verdicts."""

from __future__ import annotations

from typing import Any


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, sep, *body])


def _n(v: float) -> str:
    return f"{v:,.0f}"


def _find(contenders: list[dict[str, Any]], prefix: str) -> dict[str, Any] | None:
    return next((c for c in contenders if c["contender"].startswith(prefix)), None)


def targets(results: dict[str, Any]) -> list[list[str]]:
    """[target, measured, met] for each target of issue 5 §2 that this run measured."""
    out: list[list[str]] = []
    ing = results.get("ingest")
    if ing:
        cs = ing["contenders"]
        ceil, apg = _find(cs, "ceiling"), _find(cs, "asyncpg")
        lg, bw = _find(cs, "sim_schema SimulationLogger"), _find(cs, "sim_schema bulk writer")
        sqlite, row = _find(cs, "SQLAlchemy bulk_insert_mappings -> SQLite"), _find(cs, "row-at")
        assert ceil and apg and sqlite and row

        def ratio(a: dict[str, Any], b: dict[str, Any], need: float, label: str) -> None:
            # Verdict on best vs best: each contender's least disturbed run (the machine may
            # be shared); the median ratio is shown next to it.
            rb = a["best_rows_s"] / b["best_rows_s"]
            r = a["median_rows_s"] / b["median_rows_s"]
            out.append(
                [
                    label,
                    f"{rb:.2f}x best/best ({r:.2f}x median)",
                    "met" if rb >= need else "NOT met",
                ]
            )

        for c, name in ((lg, "logger"), (bw, "bulk writer")):
            if c is None:
                out.append([f"{name}: not available in this run", "-", "-"])
                continue
            ratio(
                c,
                ceil,
                0.8 if name == "logger" else 0.9,
                f"{name} >= {0.8 if name == 'logger' else 0.9}x ceiling",
            )
            ratio(c, apg, 1.0, f"{name} >= 1.0x asyncpg")
        if lg:
            ratio(lg, sqlite, 10, "logger >= 10x SQLAlchemy->SQLite")
            ratio(lg, row, 50, "logger >= 50x row-at-a-time INSERT")
        st, sq = ing["storage_pg"], ing["storage_sqlite"]
        pg_b = (st["heap"] + st["indexes"] + st["toast"]) / st["rows"]
        sq_b = sq["file_bytes"] / sq["rows"]
        out.append(
            [
                "storage <= SQLite bytes/row",
                f"{pg_b:.0f} vs {sq_b:.0f} B/row",
                "met" if pg_b <= sq_b else "NOT met",
            ]
        )
    par = results.get("parallel")
    if par:
        by = {r["simulations"]: r for r in par["runs"]}
        r4 = by[4]["median_rows_s"] / by[1]["median_rows_s"]
        out.append(["4 simulations >= 1.5x one", f"{r4:.2f}x", "met" if r4 >= 1.5 else "NOT met"])
    mem = results.get("memory")
    if mem:
        g = mem["peak_mb"] - mem["start_mb"]
        out.append(
            [
                f"RSS growth < 100 MB ({mem['rows']:,} rows)",
                f"{g:.0f} MB",
                "met" if g < 100 else "NOT met",
            ]
        )
    q = results.get("queries")
    if q:
        for r in q["queries"]:
            if r["target_p50_ms"] is not None:
                out.append(
                    [
                        f"{r['query']} p50 < {r['target_p50_ms']:.0f} ms",
                        f"{r['p50_ms']} ms",
                        "met" if r["met"] else "NOT met",
                    ]
                )
        d = q["delete"]
        out.append(
            [
                "delete 1M-row simulation < 5 s",
                f"{d['delete_s']:.2f} s",
                "met" if d["delete_s"] < 5 else "NOT met",
            ]
        )
        out.append(
            [
                "... without blocking other ingest",
                f"ingest {_n(d['during_rows_s'])} rows/s during vs {_n(d['before_rows_s'])} "
                f"before; longest commit gap {d['max_gap_s']:.2f} s",
                "met" if not d["blocked"] else "NOT met",
            ]
        )
    return out


def render(results: dict[str, Any]) -> str:
    parts: list[str] = []
    ing = results.get("ingest")
    if ing:
        cs = ing["contenders"]
        ceil = _find(cs, "ceiling")
        assert ceil
        rows = [
            [
                c["contender"],
                _n(c["rows"]),
                _n(c["best_rows_s"]),
                _n(c["median_rows_s"]),
                f"{c['best_rows_s'] / ceil['best_rows_s']:.2f}",
            ]
            for c in cs
        ]
        parts.append(
            f"Ingest into sim.agent_states ({ing['shape']['rows']:,} rows, "
            f"{len(ceil['runs_s'])} runs each)"
        )
        parts.append(
            _table(
                ["contender", "rows", "best rows/s", "median rows/s", "x ceiling (best/best)"], rows
            )
        )
        if ing.get("ablation"):
            base = ing["ablation"][0]["median_rows_s"]
            parts.append(
                "\nWhat the ceiling pays for: server COPY of the same file, variants rolled back"
            )
            parts.append(
                _table(
                    ["variant", "median rows/s", "x as is"],
                    [
                        [a["contender"], _n(a["median_rows_s"]), f"{a['median_rows_s'] / base:.2f}"]
                        for a in ing["ablation"]
                    ],
                )
            )
        if ing.get("client_us_per_row"):
            parts.append("\nClient CPU of our path, no database (µs per row)")
            parts.append(
                _table(
                    ["step", "µs/row"], [[k, f"{v}"] for k, v in ing["client_us_per_row"].items()]
                )
            )
        st, sq = ing["storage_pg"], ing["storage_sqlite"]
        n = st["rows"]
        idx = [
            [k.removeprefix("index:"), f"{v / n:.1f}"]
            for k, v in st.items()
            if k.startswith("index:")
        ]
        parts.append("\nStorage per agent-state row (bytes)")
        parts.append(
            _table(
                ["part", "bytes/row"],
                [
                    ["PostgreSQL heap", f"{st['heap'] / n:.1f}"],
                    *idx,
                    ["PostgreSQL toast", f"{st['toast'] / n:.1f}"],
                    ["PostgreSQL total", f"{(st['heap'] + st['indexes'] + st['toast']) / n:.1f}"],
                    [
                        "SQLite file (SQLAlchemy predecessor)",
                        f"{sq['file_bytes'] / sq['rows']:.1f}",
                    ],
                ],
            )
        )
        if ing.get("column_bytes"):
            parts.append("\nAverage stored bytes per column (pg_column_size)")
            parts.append(
                _table(["column", "bytes"], [[k, f"{v}"] for k, v in ing["column_bytes"].items()])
            )
    par = results.get("parallel")
    if par:
        one = par["runs"][0]["median_rows_s"]
        parts.append(
            f"\nParallel ingest ({par['rows_per_simulation']:,} rows per simulation, {par['path']})"
        )
        parts.append(
            _table(
                ["simulations", "best rows/s", "median rows/s", "x one"],
                [
                    [
                        str(r["simulations"]),
                        _n(r["best_rows_s"]),
                        _n(r["median_rows_s"]),
                        f"{r['median_rows_s'] / one:.2f}",
                    ]
                    for r in par["runs"]
                ],
            )
        )
    mem = results.get("memory")
    if mem:
        parts.append(f"\nMemory while logging {mem['rows']:,} rows ({mem['path']})")
        parts.append(
            _table(
                ["start RSS MB", "peak RSS MB", "end RSS MB", "growth MB", "rows/s"],
                [
                    [
                        f"{mem['start_mb']:.0f}",
                        f"{mem['peak_mb']:.0f}",
                        f"{mem['end_mb']:.0f}",
                        f"{mem['peak_mb'] - mem['start_mb']:.0f}",
                        _n(mem["rows_s"]),
                    ]
                ],
            )
        )
    q = results.get("queries")
    if q:
        st = q["storage_pg"]
        parts.append(
            f"\nQueries on {q['shape']['rows']:,} agent states, 10 simulations "
            f"(load {q['load']['insert_s']:.0f} s)"
        )
        parts.append(
            _table(
                ["query", "runs", "p50 ms", "p95 ms", "plan"],
                [
                    [
                        r["query"],
                        str(r["runs"]),
                        f"{r['p50_ms']}",
                        f"{r['p95_ms']}",
                        (
                            ""
                            if r["plan_ok"]
                            else f"SEQ SCAN (p50 {r.get('p50_ms_seqscan_off')} ms with"
                            " enable_seqscan=off): "
                        )
                        + "; ".join(r["plan"]),
                    ]
                    for r in q["queries"]
                ],
            )
        )
        d = q["delete"]
        parts.append(
            f"\nDelete of one simulation ({d['rows']:,} agent states): {d['delete_s']:.2f} s;"
            f" concurrent ingest ({d['path']}) {_n(d['before_rows_s'])} rows/s before,"
            f" {_n(d['during_rows_s'])} during, {_n(d['after_rows_s'])} after;"
            f" longest gap between commits {d['max_gap_s']:.2f} s"
        )
    t = targets(results)
    if t:
        parts.append("\nTargets (issue 5 §2)")
        parts.append(_table(["target", "measured", "verdict"], t))
    return "\n".join(parts)


def print_report(results: dict[str, Any]) -> None:
    m = results.get("machine", {})
    print(
        f"\nmachine: {m.get('nproc')} CPUs, {m.get('ram_gb')} GB RAM, PostgreSQL "
        f"{m.get('postgresql')}, Python {m.get('python')}, psycopg {m.get('psycopg')}"
    )
    print(render(results))


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.report a.json [b.json ...]`: the tables of one or more runs
    (sections of later files win), e.g. the default run plus the queries run."""
    import json
    import sys
    from pathlib import Path

    merged: dict[str, Any] = {}
    for path in argv if argv is not None else sys.argv[1:]:
        merged.update(json.loads(Path(path).read_text()))
    print_report(merged)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

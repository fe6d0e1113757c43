"""The terminal tables (also pasted into docs/performance.md) and the target verdicts of
issue 12."""

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


def _find(contenders: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    found = next((c for c in contenders if c["contender"].startswith(prefix)), None)
    assert found is not None, prefix
    return found


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _storage_rows(v: dict[str, Any]) -> dict[str, float]:
    """Bytes per agent state (+ its action) of each store."""
    n = v["states"]
    return {
        "sqlite": v["sqlite_bytes"] / n,
        "before": v["before"]["bytes"] / n,
        "after": v["after"]["bytes"] / n,
        "after_rollups": v["after"]["bytes_with_rollups"] / n,
        **(
            {"sqlite_vacuumed": v["sqlite_vacuumed_bytes"] / n}
            if "sqlite_vacuumed_bytes" in v
            else {}
        ),
    }


def targets(results: dict[str, Any]) -> list[list[str]]:
    """[target, measured, verdict] for each issue-12 target this run measured."""
    out: list[list[str]] = []
    st = results.get("storage")
    if st:
        for key, label in (("plain", ""), ("with_extras", ", small JSON extra per state")):
            b = _storage_rows(st[key])
            r, rr = b["after"] / b["sqlite"], b["after_rollups"] / b["sqlite"]
            out.append(
                [
                    f"1. storage <= 0.8x SQLite{label}",
                    f"{r:.2f}x ({b['after']:.1f} vs {b['sqlite']:.1f} B; with rollups {rr:.2f}x;"
                    f" before 0006 {b['before'] / b['sqlite']:.2f}x)",
                    _verdict(rr <= 0.8),
                ]
            )
    ing = results.get("ingest")
    if ing:
        cs = ing["contenders"]
        ceil = _find(cs, "before: ceiling")
        for prefix, label in (
            ("after: sim_schema SimulationLogger", "2. logger (after) >= 1.5x ceiling (before)"),
            ("after: sim_schema bulk writer", "   bulk writer (after) / ceiling (before)"),
            ("after: asyncpg", "   asyncpg (after) / ceiling (before)"),
            ("after: ceiling", "   ceiling (after) / ceiling (before)"),
        ):
            c = _find(cs, prefix)
            med = c["median_rows_s"] / ceil["median_rows_s"]
            best = c["best_rows_s"] / ceil["best_rows_s"]
            out.append(
                [
                    label,
                    f"{med:.2f}x median/median ({best:.2f}x best/best)",
                    _verdict(med >= 1.5) if label.startswith("2.") else "-",
                ]
            )
    par = results.get("parallel")
    if par:
        by = {r["simulations"]: r for r in par["runs"]}
        r4 = by[4]["median_rows_s"] / by[1]["median_rows_s"]
        out.append(["2. 4 simulations >= 1.5x one", f"{r4:.2f}x (median)", _verdict(r4 >= 1.5)])
    q = results.get("queries")
    if q:
        for r in q["queries"]:
            out.append(
                [
                    f"3. {r['query']} p50 < {r['target_p50_ms']:.0f} ms",
                    f"{r['p50_ms']} ms",
                    _verdict(r["met"]),
                ]
            )
        worst = max(q["api_overhead"], key=lambda a: a["ratio"])
        missed = [a["function"] for a in q["api_overhead"] if not a["met"]]
        out.append(
            [
                "4. API <= 1.1x the same SQL, every function",
                f"worst {worst['function']} {worst['ratio']:.2f}x; over 1.1x: "
                f"{', '.join(missed) or 'none'}",
                _verdict(not missed),
            ]
        )
        d = q["delete"]
        out.append(
            [
                "5. delete a 1M-row simulation < 1 s",
                f"{d['delete_s']:.2f} s",
                _verdict(d["delete_s"] < 1),
            ]
        )
        out.append(
            [
                "   ... without blocking other ingest",
                f"{_n(d['during_rows_s'])} rows/s during vs {_n(d['before_rows_s'])} before;"
                f" longest commit gap {d['max_gap_s']:.2f} s",
                _verdict(not d["blocked"]),
            ]
        )
        a = q["archive"]
        out.append(
            [
                "5. archive a 1M-row simulation < 1 s",
                f"{a['archive_s']:.2f} s (export {a['export_s']:.2f}, verify + delete "
                f"{a['verify_and_delete_s']:.2f})",
                _verdict(a["archive_s"] < 1),
            ]
        )
    return out


def _ingest(ing: dict[str, Any]) -> list[str]:
    cs = ing["contenders"]
    ceil = _find(cs, "before: ceiling")
    parts = [
        f"Ingest of {ing['shape']['rows']:,} agent states, {len(ceil['runs_s'])} runs each,"
        " interleaved (before = migrated to version 5, after = current schema)",
        _table(
            ["contender", "runs (s)", "best rows/s", "median rows/s", "x ceiling before (median)"],
            [
                [
                    c["contender"],
                    ", ".join(f"{t:.2f}" for t in c["runs_s"]),
                    _n(c["best_rows_s"]),
                    _n(c["median_rows_s"]),
                    f"{c['median_rows_s'] / ceil['median_rows_s']:.2f}",
                ]
                for c in cs
            ],
        ),
    ]
    ab = ing.get("ablation") or []
    if ab:
        parts.append("\nWhat each ceiling pays for: server COPY of its file, variants rolled back")
        rows = []
        for side in ("before", "after"):
            group = [a for a in ab if a["contender"].startswith(side)]
            base = group[0]["median_rows_s"]
            rows += [
                [a["contender"], _n(a["median_rows_s"]), f"{a['median_rows_s'] / base:.2f}"]
                for a in group
            ]
        parts.append(_table(["variant", "median rows/s", "x as is"], rows))
    return parts


def _storage(st: dict[str, Any]) -> list[str]:
    parts = []
    for key, label in (("plain", ""), ("with_extras", ", with a small JSON extra per state")):
        v = st[key]
        b = _storage_rows(v)
        n = v["states"]
        parts.append(
            f"\nStorage per agent state + its action ({n:,} states, {v['actions']:,} actions"
            f"{label}), bytes incl. indexes and TOAST, after VACUUM"
        )
        parts.append(
            _table(
                ["store", "bytes per state+action", "x SQLite"],
                [
                    [
                        "predecessor SQLite (seed 001 tables, one file per simulation)",
                        f"{b['sqlite']:.1f}",
                        "1.00",
                    ],
                    *(
                        [
                            [
                                "the same SQLite files after VACUUM",
                                f"{b['sqlite_vacuumed']:.1f}",
                                f"{b['sqlite_vacuumed'] / b['sqlite']:.2f}",
                            ]
                        ]
                        if "sqlite_vacuumed" in b
                        else []
                    ),
                    [
                        "before: version 5 (agent_states, agent_actions)",
                        f"{b['before']:.1f}",
                        f"{b['before'] / b['sqlite']:.2f}",
                    ],
                    [
                        "after: agent_states_data, agent_actions_data",
                        f"{b['after']:.1f}",
                        f"{b['after'] / b['sqlite']:.2f}",
                    ],
                    [
                        "after, with population_rollup and action_rollup",
                        f"{b['after_rollups']:.1f}",
                        f"{b['after_rollups'] / b['sqlite']:.2f}",
                    ],
                ],
            )
        )
        rows = []
        for side in ("before", "after"):
            for part, size in {**v[side]["parts"], **v[side]["rollups"]}.items():
                rows.append([f"{side}: {part}", f"{size / n:.1f}"])
        parts.append(_table(["relation", "bytes per state"], rows))
    return parts


def _queries(q: dict[str, Any]) -> list[str]:
    parts = [
        f"\nQueries on {q['shape']['rows']:,} agent states, {q['shape']['sims']} simulations"
        f" (load {q['load']['insert_s']:.0f} s, VACUUM ANALYZE {q['load']['vacuum_analyze_s']:.0f}"
        f" s, database {q['database_bytes'] / 2**30:.1f} GiB)",
        _table(
            ["query (sql/ file)", "rows", "p50 ms", "p95 ms", "target", "server ms", "plan"],
            [
                [
                    f"{r['query']} ({r['library']})",
                    _n(r["rows"]),
                    f"{r['p50_ms']}",
                    f"{r['p95_ms']}",
                    f"< {r['target_p50_ms']:.0f}",
                    f"{r['server_ms']} ({r['buffers_hit'] + r['buffers_read']} buffers)",
                    "; ".join(r["plan"]),
                ]
                for r in q["queries"]
            ],
        ),
        "\nQuery API against the same SQL run directly (psycopg, same async connection,"
        " alternating), p50 ms",
        _table(
            ["function", "reads", "API", "direct", "x", "direct + API's row factory", "x"],
            [
                [
                    a["function"],
                    a["reads"],
                    f"{a['api_p50_ms']:.2f}",
                    f"{a['direct_p50_ms']:.2f}",
                    f"{a['ratio']:.2f}",
                    f"{a['direct_rows_p50_ms']:.2f}",
                    f"{a['ratio_same_rows']:.2f}",
                ]
                for a in q["api_overhead"]
            ],
        ),
    ]
    d, a = q["delete"], q["archive"]
    counts = ", ".join(f"{k} {v:,}" for k, v in d["rows"].items() if v)
    parts.append(
        f"\nDelete of {d['simulation']} ({counts}):"
        f" {d['delete_s']:.2f} s; the other simulation's ingest ({d['path']})"
        f" {_n(d['before_rows_s'])} rows/s before, {_n(d['during_rows_s'])} during"
        f" ({d['commits_during']} commits), {_n(d['after_rows_s'])} after; longest gap between"
        f" its commits {d['max_gap_s']:.2f} s"
    )
    parts.append(
        f"Archive of {a['simulation']}: {a['archive_s']:.2f} s (export {a['export_s']:.2f} s,"
        f" verify + delete {a['verify_and_delete_s']:.2f} s); other ingest"
        f" {_n(a['before_rows_s'])} -> {_n(a['during_rows_s'])} -> {_n(a['after_rows_s'])}"
        f" rows/s; longest commit gap {a['max_gap_s']:.2f} s"
    )
    b = q["delete_breakdown"]
    parts.append(
        f"\nWhere a delete's time goes ({b['simulation']}, each part rolled back): the whole"
        f" DELETE under EXPLAIN ANALYZE {b['total_ms']} ms, {b['total_wal_mb']} MB WAL;"
        " its triggers: " + "; ".join(f"{t['trigger']} {t['ms']} ms" for t in b["triggers"])
    )
    parts.append(
        _table(
            ["statement", "rows", "s", "WAL MB"],
            [
                [s["statement"], _n(s["rows"]), f"{s['s']:.3f}", f"{s['wal_mb']}"]
                for s in b["statements"]
            ],
        )
    )
    return parts


def render(results: dict[str, Any]) -> str:
    parts: list[str] = []
    if results.get("ingest"):
        parts += _ingest(results["ingest"])
    cpu = results.get("cpu")
    if cpu:
        parts.append(
            f"\nWhere the time goes: one run each into the current schema ({cpu['shape']['rows']:,}"
            " rows), CPU seconds of the harness process (client) and of the server backends"
        )
        parts.append(
            _table(
                ["contender", "wall s", "client CPU s", "server CPU s", "rows/s"],
                [
                    [
                        r["contender"],
                        f"{r['wall_s']:.2f}",
                        f"{r['client_cpu_s']:.2f}",
                        f"{r['server_cpu_s']:.2f}",
                        _n(r["rows"] / r["wall_s"]),
                    ]
                    for r in cpu["runs"]
                ],
            )
        )
        if cpu.get("fresh_database"):
            parts.append(
                "\nThe logger into a fresh database (agents just registered, no statistics),"
                " a new database per run, interleaved"
            )
            parts.append(
                _table(
                    ["run", "variant", "wall s", "client CPU s", "server CPU s", "rows/s"],
                    [
                        [
                            str(r["run"]),
                            r["variant"],
                            f"{r['wall_s']:.2f}",
                            f"{r['client_cpu_s']:.2f}",
                            f"{r['server_cpu_s']:.2f}",
                            _n(r["rows"] / r["wall_s"]),
                        ]
                        for r in cpu["fresh_database"]
                    ],
                )
            )
        parts.append(
            "logger's client work per row, no database: "
            + "; ".join(f"{k} {v} µs" for k, v in cpu["client_us_per_row"].items())
        )
    if results.get("storage"):
        parts += _storage(results["storage"])
    par = results.get("parallel")
    if par:
        one = par["runs"][0]["median_rows_s"]
        parts.append(
            f"\nParallel ingest ({par['rows_per_simulation']:,} rows per simulation, {par['path']},"
            " one process each, interleaved)"
        )
        parts.append(
            _table(
                ["simulations", "runs rows/s", "median rows/s", "x one"],
                [
                    [
                        str(r["simulations"]),
                        ", ".join(_n(t) for t in r["runs_rows_s"]),
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
    if results.get("queries"):
        parts += _queries(results["queries"])
    t = targets(results)
    if t:
        parts.append("\nTargets (issue 12)")
        parts.append(_table(["target", "measured", "verdict"], t))
    return "\n".join(parts)


def print_report(results: dict[str, Any]) -> None:
    m = results.get("machine", {})
    print(
        f"\nmachine: {m.get('nproc')} CPUs, {m.get('ram_gb')} GB RAM, PostgreSQL "
        f"{m.get('postgresql')}, Python {m.get('python')}, psycopg {m.get('psycopg')};"
        f" load average at start {results.get('load_average_start')},"
        f" at end {results.get('load_average_end')}"
    )
    print(render(results))


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.report a.json [b.json ...]`: the tables of one or more runs
    (sections of later files win)."""
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

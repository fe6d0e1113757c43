"""What an import did, table by table: rows read, written, found already stored; which
source column each column came from, which got a default and how often, which source
columns were left out and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TableReport:
    """One of our tables, filled from one source table (over every simulation imported)."""

    table: str
    source: str
    rows_read: int = 0
    rows_written: int = 0
    rows_already_stored: int = 0  # identical rows found stored: a re-import or a resume
    mapped: dict[str, str] = field(default_factory=dict)  # our column -> where it came from
    defaulted: Counter[str] = field(default_factory=Counter)  # "column: why" -> rows
    skipped: dict[str, str] = field(default_factory=dict)  # source column -> why left out

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_already_stored": self.rows_already_stored,
            "mapped": dict(self.mapped),
            "defaulted": dict(self.defaulted),
            "skipped": dict(self.skipped),
        }


@dataclass
class ImportReport:
    """Everything one import call did."""

    sources: list[str] = field(default_factory=list)
    experiments: list[str] = field(default_factory=list)  # created by this import
    simulations: list[str] = field(default_factory=list)  # every simulation imported into
    simulations_existing: list[str] = field(default_factory=list)  # their row was there already
    tables: dict[str, TableReport] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def table(self, name: str, source: str) -> TableReport:
        """The report of `name` (created on first use)."""
        found = self.tables.get(name)
        if found is None:
            found = self.tables[name] = TableReport(name, source)
        return found

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    @property
    def rows_written(self) -> int:
        return sum(t.rows_written for t in self.tables.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "sources": self.sources,
            "experiments_created": self.experiments,
            "simulations": self.simulations,
            "simulations_existing": self.simulations_existing,
            "tables": [t.as_dict() for t in self.tables.values()],
            "notes": self.notes,
        }

    def lines(self) -> list[str]:
        """The report as text, one line per fact."""
        out = [
            f"imported {len(self.simulations)} simulation(s) from {len(self.sources)} source(s)"
            f" ({len(self.simulations_existing)} already present)",
        ]
        if self.experiments:
            out.append(f"experiments created: {', '.join(self.experiments)}")
        for t in self.tables.values():
            out.append(
                f"{t.table:22s} <- {t.source:22s} {t.rows_read:>10,} read {t.rows_written:>10,}"
                f" written {t.rows_already_stored:>10,} already stored"
            )
            same = [k for k, v in t.mapped.items() if k == v]
            moved = [f"{k} <- {v}" for k, v in t.mapped.items() if k != v]
            if moved:
                out.append("    mapped:    " + ", ".join(moved))
            if same:
                out.append(f"    mapped:    {len(same)} column(s) of the same name")
            for what, count in t.defaulted.items():
                out.append(f"    defaulted: {what} ({count:,} rows)")
            for column, why in t.skipped.items():
                out.append(f"    skipped:   {column}: {why}")
        out.extend(f"note: {n}" for n in self.notes)
        return out

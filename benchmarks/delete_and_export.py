"""Measure export throughput and deleting a simulation with ~1M agent_states rows.

Seeds with server-side generate_series; while the delete runs, another connection keeps
inserting rows for a different simulation and records its worst insert latency.
usage: bench_delete.py SERVER_DSN [agents] [steps]
"""
import sys, time, tempfile, threading
import psycopg
from psycopg.conninfo import make_conninfo, conninfo_to_dict
from sim_schema.migrations.migration import load_migrations
from sim_schema.migrations.runner import MigrationRunner
from sim_schema import admin
from sim_schema.read.export import export

server = sys.argv[1]; agents = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
with psycopg.connect(server, autocommit=True) as c:
    c.execute("DROP DATABASE IF EXISTS sim_bench_delete"); c.execute("CREATE DATABASE sim_bench_delete")
dsn = make_conninfo(server, dbname="sim_bench_delete")
with psycopg.connect(dsn) as c:
    MigrationRunner(load_migrations(None), schema="sim").migrate(c)
with psycopg.connect(dsn, autocommit=True, options="-c search_path=sim") as conn:
    t = time.perf_counter()
    for sim in ("big", "other"):
        conn.execute("INSERT INTO simulations (simulation_id) VALUES (%s)", (sim,))
        conn.execute("INSERT INTO agents (simulation_id, agent_id, agent_type) SELECT %s, 'a'||g, 't' FROM generate_series(1,%s) g", (sim, agents))
    conn.execute("""INSERT INTO agent_states (simulation_id, step, agent_id, position_x, health, memory)
        SELECT 'big', s, 'a'||a, s*0.5, 1.0, jsonb_build_object('s', s, 'a', a)
        FROM generate_series(0, %s-1) s, generate_series(1, %s) a""", (steps, agents))
    conn.execute("""INSERT INTO agent_actions (simulation_id, step, agent_id, action_type, reward)
        SELECT 'big', s, 'a'||a, 'move', 1 FROM generate_series(0, %s-1) s, generate_series(1, %s, 10) a""", (steps, agents))
    conn.execute("VACUUM ANALYZE")
    n = conn.execute("SELECT count(*) FROM agent_states WHERE simulation_id='big'").fetchone()[0]
    print(f"seeded {n:,} agent_states rows in {time.perf_counter()-t:.1f}s; server {conn.info.server_version}")
    for fmt in ("csv", "jsonl", "parquet"):
        t = time.perf_counter()
        m = export(conn, tempfile.mkdtemp(), simulations=["big"], tables=["agent_states"], fmt=fmt, progress=False)
        dt = time.perf_counter() - t
        r = m.tables["agent_states"]
        print(f"export {fmt:8s} {r.rows:,} rows {r.bytes/1e6:.0f} MB in {dt:.2f}s = {r.rows/dt:,.0f} rows/s")
    stop = threading.Event(); worst = [0.0]; inserted = [0]
    def ingest():
        with psycopg.connect(dsn, autocommit=True, options="-c search_path=sim") as w:
            s = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                w.execute("INSERT INTO agent_states (simulation_id, step, agent_id) VALUES ('other', %s, 'a1')", (s,))
                worst[0] = max(worst[0], time.perf_counter() - t0); s += 1; inserted[0] += 1
    th = threading.Thread(target=ingest); th.start(); time.sleep(0.3)
    t = time.perf_counter()
    deleted = admin.delete_simulation(conn, "big")
    dt = time.perf_counter() - t
    stop.set(); th.join()
    print(f"delete_simulation: {sum(deleted.values()):,} rows ({deleted['agent_states']:,} agent_states) in {dt:.2f}s; "
          f"concurrent ingest into another simulation: {inserted[0]:,} inserts, worst latency {worst[0]*1000:.1f} ms")
with psycopg.connect(server, autocommit=True) as c:
    c.execute("DROP DATABASE sim_bench_delete")

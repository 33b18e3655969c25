#!/usr/bin/python3
# tests/bench/mam_latency.py: XEP-0313 query latency from a large archive (issue 12). One civitasd
# (the build's, default modules), one account whose archive is filled with N rows (default 1,000,000;
# written straight into mam_archive with SQLite while the server is stopped, in the module's own row
# format: mam schema 3), then timed MAM queries of 50 messages over a real TLS client stream: the last page
# (<before/>), a page in the middle (RSM after an id), a 'with' page, and the same without <count/>'s
# cost being avoidable (every query counts). Prints the median and the 90th percentile per kind.
# Not part of `make check`: a measurement, not a test. usage: mam_latency.py [ROWS] [REPEAT]
# (1,000,000 rows: set CIVITAS_TEST_TIMEOUT=1800, filling takes minutes)
import os
import secrets
import sqlite3
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import Tap, Server, connect_login  # noqa: E402
from test_mam import query, rsm, NS_MAM  # noqa: E402,F401

PW = "pw-for-mam-bench"


def fill(db_path, owner, rows):
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA cache_size = -1000000")      # 1 GB of page cache while filling
    t0 = int(time.time() * 1e6) - rows * 1000
    peers = ["peer%d@remote.example" % i for i in range(100)]
    body = ("<message xmlns='jabber:client' from='%s/r' to='" + owner + "' type='chat' id='%d'>"
            "<body>benchmark message number %d with some text in it</body></message>")
    batch = []
    db.execute("BEGIN")
    db.execute("INSERT INTO mam_owners (owner) VALUES (?)", (owner,))
    (oid,) = db.execute("SELECT oid FROM mam_owners WHERE owner = ?", (owner,)).fetchone()
    sql = "INSERT INTO mam_archive (id, oid, peer, peer_res, rnd, dir, xml) VALUES (?, ?, ?, ?, ?, ?, ?)"
    for i in range(rows):
        p = peers[i % len(peers)]
        rnd = secrets.randbits(64) - 2 ** 63
        batch.append(((t0 + i * 1000) << 4 | (rnd & 15), oid, p, "r", rnd, 0, (body % (p, i, i)).encode()))
        if len(batch) == 10000:
            db.executemany(sql, batch)
            batch = []
    if batch:
        db.executemany(sql, batch)
    db.execute("COMMIT")
    db.close()


def main(t):
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 1000000
    repeat = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    # a year of retention, so that the back-dated rows are not expired at start
    with Server(t, extra_yaml="mam:\n  max_age_days: 365\n  max_messages: 100000000\n") as srv:
        srv.adduser("bench@localhost", PW)
        srv.stop()
        t0 = time.time()
        fill(os.path.join(srv.data_dir, "civitas.db"), "bench@localhost", rows)
        t.diag("filled %d rows in %.1f s" % (rows, time.time() - t0))
        srv.start()
        c = connect_login(srv, "bench", PW, resource="b")
        mid = query(c, [], rsm(max_=1, after=None) + "")   # the oldest id, to page from the middle
        first_id = mid.ids()[0] if mid.ids() else None
        kinds = {
            "last page (<before/>)": lambda: query(c, [], rsm(max_=50, before="")),
            "next page (RSM after)": lambda: query(c, [], rsm(max_=50, after=first_id)),
            "with a peer, last page": lambda: query(c, [("with", "peer7@remote.example")], rsm(max_=50, before="")),
        }
        for name, fn in kinds.items():
            lat = []
            for _ in range(repeat):
                s = time.perf_counter()
                p = fn()
                lat.append((time.perf_counter() - s) * 1000)
            t.ok(len(p.results) == 50, "%s: 50 results" % name)
            lat.sort()
            t.diag("%-24s median %.1f ms, p90 %.1f ms (count %s)" % (name, statistics.median(lat),
                                                                    lat[int(len(lat) * 0.9) - 1], p.count))
        c.end()


Tap().main(main)

#!/usr/bin/python3
# tests/bench/upload_bench.py: XEP-0363 throughput on loopback (issue 14): a 10 MiB file uploaded
# (PUT) and downloaded (GET, bytes verified) through civitas's HTTP server over https and over plain
# http, and in the same run through Debian's Prosody with mod_http_file_share (plain http), several
# times each; the slot is requested over XMPP (urn:xmpp:http:upload:0) for every transfer. Prints
# MB/s of the median run and the server's CPU time per MB (utime + stime of its process from
# /proc/<pid>/stat around each transfer). Not part of `make check`: `make bench-upload`.
#   usage: tests/bench/upload_bench.py [--size MiB] [--runs N] [--no-prosody]
# Prosody is skipped (and said so) when it is not installed.
import argparse
import hashlib
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import Tap, Server, Prosody, PeerClient, connect_login, free_port, q  # noqa: E402

NS_UP = "urn:xmpp:http:upload:0"


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect(url, ca):
    u = urllib.parse.urlsplit(url)
    s = socket.create_connection(("127.0.0.1", u.port), timeout=60)
    if u.scheme == "https":
        s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname=u.hostname)
    return s, u


def put(url, data, ca, headers=()):
    s, u = connect(url, ca)
    target = u.path + ("?" + u.query if u.query else "")
    extra = "".join("%s: %s\r\n" % h for h in headers)
    s.sendall(("PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"
               "%sConnection: close\r\n\r\n" % (target, u.netloc, len(data), extra)).encode())
    view = memoryview(data)
    for i in range(0, len(data), 262144):
        s.sendall(view[i:i + 262144])
    resp = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        resp += d
    s.close()
    return resp.split(b" ", 2)[1]


def get(url, ca):
    s, u = connect(url, ca)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (u.path, u.netloc)).encode())
    h = hashlib.sha256()
    n = 0
    head = b""
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        if head is not None:
            head += d
            if b"\r\n\r\n" not in head:
                continue
            head, d = head.split(b"\r\n\r\n", 1)
            head = None
        h.update(d)
        n += len(d)
    s.close()
    return n, h.hexdigest()


def slot(c, to, size):
    """Request an upload slot over XMPP: (put URL, [(header, value)], get URL)."""
    r = c.iq("get", "<request xmlns='%s' filename='bench.bin' size='%d' content-type="
             "'application/octet-stream'/>" % (NS_UP, size), to=to)
    s = r.find(q(NS_UP, "slot")) if r is not None else None
    if s is None:
        raise RuntimeError("no slot from %s: %s" % (to, r))
    p = s.find(q(NS_UP, "put"))
    hdrs = [(h.get("name"), (h.text or "").strip()) for h in p.findall(q(NS_UP, "header"))]
    return p.get("url"), hdrs, s.find(q(NS_UP, "get")).get("url")


def measure(label, c, to, pid, data, digest, runs, ca=None, rewrite=lambda u: u):
    """runs transfers; returns (label, median up MB/s, up CPU ms/MB, down MB/s, down CPU ms/MB)."""
    size = len(data)
    up, down, cpu_up, cpu_down = [], [], [], []
    for _ in range(runs):
        purl, hdrs, gurl = slot(c, to, size)
        purl, gurl = rewrite(purl), rewrite(gurl)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        status = put(purl, data, ca, hdrs)
        c1, t1 = cpu_seconds(pid), time.monotonic()
        n, dg = get(gurl, ca)
        c2, t2 = cpu_seconds(pid), time.monotonic()
        if status != b"201" or n != size or dg != digest:
            raise RuntimeError("%s: transfer failed: PUT %s, GET %d bytes, digest %s"
                               % (label, status, n, dg == digest))
        up.append(size / (t1 - t0) / 1e6)
        down.append(size / (t2 - t1) / 1e6)
        cpu_up.append((c1 - c0) * 1000 / (size / 1e6))
        cpu_down.append((c2 - c1) * 1000 / (size / 1e6))
    return (label, statistics.median(up), statistics.median(cpu_up), statistics.median(down),
            statistics.median(cpu_down))


def prosody_version():
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "prosody"], capture_output=True, text=True)
    return r.stdout.strip() or "?"


def run_prosody(t, data, digest, runs, stream):
    """Prosody with mod_http_file_share on upload.localhost, plain http on 127.0.0.1 only.
    stream False: Prosody's default http_max_content_size (10 MiB): a body up to that size is read
    into memory before the module sees it. True: http_max_content_size below the file's size, so
    Prosody 0.12 streams the body to the file as it arrives (its documented way for large uploads)."""
    size = len(data)
    pros = Prosody(t, ["localhost"])
    http_port = free_port()
    with open(pros.config) as f:
        cfg = f.read()
    # info, not debug: the same log volume as civitasd's default; Prosody's own c2s on plain+STARTTLS
    cfg = cfg.replace('log = { debug = ', 'log = { info = ')
    cfg = cfg.replace("\nVirtualHost", "\nhttp_ports = { %d }\nhttp_interfaces = { \"127.0.0.1\" }\n"
                      "https_ports = { }\n" % http_port
                      + ("http_max_content_size = %d\n" % (size // 2) if stream else "") + "VirtualHost", 1)
    cfg += ('Component "upload.localhost" "http_file_share"\n'
            "    http_file_share_size_limit = %d\n"
            "    http_file_share_daily_quota = %d\n" % (2 * size, 1 << 40))
    with open(pros.config, "w") as f:
        f.write(cfg)
    try:
        pros.register("bench", "localhost", "bench-pw")
        pros.start()
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        c = PeerClient(pros.c2s_port, server_hostname="localhost")
        c.login("bench", "bench-pw", mech="SCRAM-SHA-1", domain="localhost")  # 0.12 has no SCRAM-SHA-256
        row = measure("Prosody %s http%s" % (prosody_version(), ", streamed" if stream else ""), c, "upload.localhost", pros.proc.pid, data,
                      digest, runs)
        c.end()
        return row
    finally:
        pros.cleanup(False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-prosody", action="store_true")
    args = ap.parse_args()
    size = args.size * 1024 * 1024
    t = Tap()
    listen = {"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"], "http": ["127.0.0.1:0"],
              "https": ["127.0.0.1:0"]}
    extra = "upload: {max_file_size: %d, quota_per_day: 0, quota_per_account: 0}\n" % size
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()
    rows = []
    try:
        with Server(t, listen=listen, extra_yaml=extra) as srv:
            srv.adduser("bench@localhost", "bench-pw")
            c = connect_login(srv, "bench", "bench-pw")
            pid = srv.proc.pid
            tls_base = "https://localhost:%d" % srv.port("https")
            plain_base = "http://localhost:%d" % srv.port("http")
            rows.append(measure("civitas https", c, "upload.localhost", pid, data, digest, args.runs, srv.ca))
            rows.append(measure("civitas http", c, "upload.localhost", pid, data, digest, args.runs, srv.ca,
                                lambda u: u.replace(tls_base, plain_base)))
            c.end()
        if args.no_prosody:
            pass
        elif not os.path.exists("/usr/bin/prosody"):
            print("Prosody is not installed (apt-get install prosody): civitas only")
        else:
            rows.append(run_prosody(t, data, digest, args.runs, False))
            rows.append(run_prosody(t, data, digest, args.runs, True))
    except RuntimeError as e:
        print(e)
        return 1
    print("XEP-0363 %d MiB on loopback, median of %d runs (server CPU in ms per MB):" % (args.size, args.runs))
    print("| server, listener | upload MB/s | upload CPU ms/MB | download MB/s | download CPU ms/MB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| %s | %.0f | %.1f | %.0f | %.1f |" % r)
    civ = [r for r in rows if r[0] == "civitas http"]

    def ratio(a, b):
        return "%.2g" % (a / b) if b > 0 else "-"
    for pro in (r for r in rows if r[0].startswith("Prosody")):
        print("civitas http / %s: upload MB/s %s, upload CPU/MB %s, download MB/s %s, download CPU/MB %s"
              % (pro[0], ratio(civ[0][1], pro[1]), ratio(civ[0][2], pro[2]), ratio(civ[0][3], pro[3]),
                 ratio(civ[0][4], pro[4])))
    return 0


sys.exit(main())

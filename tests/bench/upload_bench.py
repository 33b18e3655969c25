#!/usr/bin/python3
# tests/bench/upload_bench.py: XEP-0363 throughput on loopback (issue 14): a 10 MiB file uploaded
# (PUT) and downloaded (GET) through civitas's HTTP server over https and over plain http, several
# times; prints MB/s of the median run and civitasd's CPU time per MB (utime + stime from
# /proc/<pid>/stat around each transfer). Not part of `make check`: `make bench-upload`.
#   usage: tests/bench/upload_bench.py [--size MiB] [--runs N]
import argparse
import hashlib
import os
import socket
import ssl
import statistics
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from harness import Tap, Server, connect_login, q  # noqa: E402

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


def put(url, data, ca):
    s, u = connect(url, ca)
    s.sendall(("PUT %s?%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n"
               "Connection: close\r\n\r\n" % (u.path, u.query, u.hostname, len(data))).encode())
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
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (u.path, u.hostname)).encode())
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    size = args.size * 1024 * 1024
    t = Tap()
    listen = {"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"], "http": ["127.0.0.1:0"],
              "https": ["127.0.0.1:0"]}
    extra = "upload: {max_file_size: %d, quota_per_day: 0, quota_per_account: 0}\n" % size
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()
    rows = []
    with Server(t, listen=listen, extra_yaml=extra) as srv:
        srv.adduser("bench@localhost", "bench-pw")
        c = connect_login(srv, "bench", "bench-pw")
        pid = srv.proc.pid
        for scheme in ("https", "http"):
            up, down, cpu_up, cpu_down = [], [], [], []
            for _ in range(args.runs):
                r = c.iq("get", "<request xmlns='%s' filename='bench.bin' size='%d' content-type="
                         "'application/octet-stream'/>" % (NS_UP, size), to="upload.localhost")
                s = r.find(q(NS_UP, "slot"))
                purl, gurl = s.find(q(NS_UP, "put")).get("url"), s.find(q(NS_UP, "get")).get("url")
                if scheme == "http":
                    purl = purl.replace("https://localhost:%d" % srv.port("https"),
                                        "http://localhost:%d" % srv.port("http"))
                    gurl = gurl.replace("https://localhost:%d" % srv.port("https"),
                                        "http://localhost:%d" % srv.port("http"))
                c0, t0 = cpu_seconds(pid), time.monotonic()
                status = put(purl, data, srv.ca)
                c1, t1 = cpu_seconds(pid), time.monotonic()
                n, dg = get(gurl, srv.ca)
                c2, t2 = cpu_seconds(pid), time.monotonic()
                if status != b"201" or n != size or dg != digest:
                    print("transfer failed: PUT %s, GET %d bytes, digest %s" % (status, n, dg == digest))
                    return 1
                up.append(size / (t1 - t0) / 1e6)
                down.append(size / (t2 - t1) / 1e6)
                cpu_up.append((c1 - c0) * 1000 / (size / 1e6))
                cpu_down.append((c2 - c1) * 1000 / (size / 1e6))
            rows.append((scheme, statistics.median(up), statistics.median(cpu_up), statistics.median(down),
                         statistics.median(cpu_down)))
        c.end()
    print("XEP-0363 %d MiB on loopback, median of %d runs (civitasd CPU in ms per MB):" % (args.size, args.runs))
    print("| listener | upload MB/s | upload CPU ms/MB | download MB/s | download CPU ms/MB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| %s | %.0f | %.1f | %.0f | %.1f |" % r)
    return 0


sys.exit(main())

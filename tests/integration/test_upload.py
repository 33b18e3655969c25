#!/usr/bin/python3
# tests/integration/test_upload.py: XEP-0363 HTTP File Upload (v1.1) with modules/mod_upload.c over
# real sockets: the service found in the host's disco#items (identity store/file, max-file-size in a
# XEP-0128 form), slot requests and their errors (<file-too-large/> with <max-file-size/>, <retry/>
# for the daily quota, account and host quotas, bad requests), PUT over https (SNI) with the signed
# URL (once, exact size, content type, signature, expiry bound), GET with Range, HEAD, content types
# and Content-Disposition, CORS preflight, no index, files on disk (temporary name renamed), the
# access log without slots, expiry by the timer's first run after a restart, account deletion.
import hashlib
import http.client
import os
import re
import socket
import sqlite3
import ssl
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, connect_login, q, el_str, xml_escape,  # noqa: E402
                     NS_CLIENT, NS_DISCO_INFO, error_type_condition)

NS_UP = "urn:xmpp:http:upload:0"
NS_ITEMS = "http://jabber.org/protocol/disco#items"
NS_DATA = "jabber:x:data"
PW = "pw-upload"
LISTEN = {"client": ["127.0.0.1:0"], "client_tls": ["127.0.0.1:0"], "https": ["127.0.0.1:0"]}
HOSTS = ["localhost", "q.example", "r.example", "s.example", "t.example"]
EXTRA = """upload:
  max_file_size: 1M
  hosts:
    q.example: {quota_per_day: 3000}
    r.example: {quota_per_day: 0, quota_per_account: 3000}
    s.example: {quota_per_host: 3000}
    t.example: {slots_per_day: 3}
"""


def request(c, to, filename, size, ctype=None):
    attrs = "filename='%s' size='%s'" % (xml_escape(filename), size)
    if ctype is not None:
        attrs += " content-type='%s'" % xml_escape(ctype)
    return c.iq("get", "<request xmlns='%s' %s/>" % (NS_UP, attrs), to=to)


def slot_urls(r):
    s = r.find(q(NS_UP, "slot")) if r is not None else None
    if s is None:
        return None, None
    p, g = s.find(q(NS_UP, "put")), s.find(q(NS_UP, "get"))
    return (p.get("url") if p is not None else None), (g.get("url") if g is not None else None)


class HTTPS:
    """Requests to a URL of the service over https with the URL's host as SNI and Host, verified
    against the test CA, connected to 127.0.0.1."""

    def __init__(self, srv):
        self.srv = srv

    def do(self, method, url, body=None, headers=None):
        u = urllib.parse.urlsplit(url)
        ctx = ssl.create_default_context(cafile=self.srv.ca)
        c = http.client.HTTPSConnection(u.hostname, u.port, timeout=30, context=ctx)
        c.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", u.port), timeout=30),
                                 server_hostname=u.hostname)
        path = u.path + ("?" + u.query if u.query else "")
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r, data


def discovery(t, srv, a):
    r = a.iq("get", "<query xmlns='%s'/>" % NS_ITEMS, to="localhost")
    items = [i.get("jid") for i in r.iter(q(NS_ITEMS, "item"))] if r is not None else []
    t.ok("upload.localhost" in items, "the host's disco#items lists upload.localhost", el_str(r))
    r = a.iq("get", "<query xmlns='%s'/>" % NS_DISCO_INFO, to="upload.localhost")
    ids = [(i.get("category"), i.get("type")) for i in r.iter(q(NS_DISCO_INFO, "identity"))] if r is not None else []
    feats = [f.get("var") for f in r.iter(q(NS_DISCO_INFO, "feature"))] if r is not None else []
    t.ok(("store", "file") in ids and NS_UP in feats, "its disco#info: identity store/file, feature %s" % NS_UP,
         el_str(r))
    form = r.find(".//" + q(NS_DATA, "x")) if r is not None else None
    fields = {}
    for f in (form.iter(q(NS_DATA, "field")) if form is not None else []):
        v = f.find(q(NS_DATA, "value"))
        fields[f.get("var")] = v.text if v is not None else None
    t.ok(form is not None and form.get("type") == "result" and fields.get("FORM_TYPE") == NS_UP
         and fields.get("max-file-size") == str(1024 * 1024),
         "a XEP-0128 form with FORM_TYPE and max-file-size (1M from upload.max_file_size)", el_str(r))


def upload_and_download(t, srv, a):
    web = HTTPS(srv)
    data = os.urandom(50000)
    r = request(a, "upload.localhost", "photo é 1.png", len(data), "image/png")
    put, get = slot_urls(r)
    t.ok(put and get, "a slot: PUT and GET URLs", el_str(r))
    if not put:
        return None
    m = re.match(r"https://localhost:(\d+)/upload/([0-9a-f]{32})/photo%20%C3%A9%201\.png$", get)
    t.ok(m is not None, "GET URL: https, the host, /upload/, 128 random bits, the file name encoded", get)
    slot = m.group(2) if m else ""
    t.ok(put.startswith(get + "?") and "s=" in put and "e=" in put, "the PUT URL is the GET URL with a signature",
         put)
    r2 = request(a, "upload.localhost", "photo.png", 10, "image/png")
    t.ok(slot_urls(r2)[1] != get, "another slot gets another URL")

    resp, _ = web.do("PUT", get, body=data, headers={"Content-Type": "image/png"})
    t.is_(resp.status, 403, "PUT to the GET URL (no signature): 403")
    bad = re.sub(r"s=[0-9a-f]{4}", "s=0000", put)
    resp, _ = web.do("PUT", bad, body=data, headers={"Content-Type": "image/png"})
    t.is_(resp.status, 403, "PUT with a wrong signature: 403")
    bad = re.sub(r"e=(\d+)", lambda mm: "e=%d" % (int(mm.group(1)) + 3600), put)
    resp, _ = web.do("PUT", bad, body=data, headers={"Content-Type": "image/png"})
    t.is_(resp.status, 403, "PUT with a later expiry than signed: 403")
    resp, _ = web.do("PUT", put, body=data[:-1], headers={"Content-Type": "image/png"})
    t.is_(resp.status, 400, "PUT with fewer bytes than the slot's size: 400")
    resp, _ = web.do("PUT", put, body=data + b"x", headers={"Content-Type": "image/png"})
    t.is_(resp.status, 413, "PUT with more bytes than the slot's size: 413")
    resp, _ = web.do("PUT", put, body=data, headers={"Content-Type": "text/html"})
    t.is_(resp.status, 415, "PUT with another content type than the slot's: 415")
    resp, _ = web.do("GET", get)
    t.is_(resp.status, 404, "GET before the upload: 404")

    resp, _ = web.do("PUT", put, body=data, headers={"Content-Type": "image/png"})
    t.is_(resp.status, 201, "PUT with the slot's size and type: 201 Created")
    t.is_(resp.getheader("Access-Control-Allow-Origin"), "*", "CORS on the PUT's answer")
    resp, _ = web.do("PUT", put, body=data, headers={"Content-Type": "image/png"})
    t.is_(resp.status, 409, "a second PUT to the same slot: 409 (accepted once)")

    resp, body = web.do("GET", get)
    t.ok(resp.status == 200 and body == data, "GET returns the file", "%s %d" % (resp.status, len(body)))
    t.is_(resp.getheader("Content-Type"), "image/png", "with the slot's Content-Type")
    t.is_(resp.getheader("Content-Disposition"), None, "an image is shown inline (no attachment disposition)")
    t.is_(resp.getheader("X-Content-Type-Options"), "nosniff", "nosniff")
    t.is_(resp.getheader("Access-Control-Allow-Origin"), "*", "CORS for any origin")
    t.is_(resp.getheader("Accept-Ranges"), "bytes", "Accept-Ranges: bytes")
    resp, body = web.do("HEAD", get)
    t.ok(resp.status == 200 and body == b"" and resp.getheader("Content-Length") == str(len(data)),
         "HEAD: Content-Length, no body")
    resp, body = web.do("GET", get, headers={"Range": "bytes=100-199"})
    t.ok(resp.status == 206 and body == data[100:200] and
         resp.getheader("Content-Range") == "bytes 100-199/%d" % len(data), "Range bytes=100-199: 206",
         "%s %s" % (resp.status, resp.getheader("Content-Range")))
    resp, body = web.do("GET", get, headers={"Range": "bytes=49990-"})
    t.ok(resp.status == 206 and body == data[49990:], "Range bytes=49990-: resumes to the end")
    resp, body = web.do("GET", get, headers={"Range": "bytes=-7"})
    t.ok(resp.status == 206 and body == data[-7:], "Range bytes=-7: the last 7 bytes")
    resp, body = web.do("GET", get, headers={"Range": "bytes=60000-"})
    t.ok(resp.status == 416 and resp.getheader("Content-Range") == "bytes */%d" % len(data),
         "a range past the end: 416 with Content-Range bytes */size")
    resp, _ = web.do("OPTIONS", put, headers={"Origin": "https://web.example", "Access-Control-Request-Method": "PUT",
                                              "Access-Control-Request-Headers": "content-type"})
    methods = resp.getheader("Access-Control-Allow-Methods") or ""
    t.ok(resp.status in (200, 204) and resp.getheader("Access-Control-Allow-Origin") == "*" and "PUT" in methods
         and "content-type" in (resp.getheader("Access-Control-Allow-Headers") or "").lower(),
         "OPTIONS preflight from any origin allows PUT with Content-Type", str(resp.getheaders()))
    resp, _ = web.do("DELETE", get)
    t.is_(resp.status, 405, "DELETE: 405")
    resp, _ = web.do("GET", re.sub(r"/upload/[0-9a-f]{32}/", "/upload/%s/" % ("0" * 32), get))
    t.is_(resp.status, 404, "an unknown slot: 404")
    base = get.split("/upload/")[0]
    resp, _ = web.do("GET", base + "/upload/")
    t.is_(resp.status, 404, "/upload/ lists nothing: 404")

    owner_dir = hashlib.sha256(b"alice@localhost").hexdigest()[:32]
    path = os.path.join(srv.data_dir, "upload", owner_dir, slot)
    t.ok(os.path.isfile(path) and open(path, "rb").read() == data, "the file is in data_dir/upload/<account hash>/")
    t.ok(not any(n.endswith(".part") for n in os.listdir(os.path.dirname(path))), "no temporary file is left")
    t.ok(slot not in srv.log() and "alice" not in srv.log().split("ready")[-1],
         "the access log names neither the slot nor the account", "\n".join(srv.log_tail(10)))

    big = os.urandom(700000)
    r = request(a, "upload.localhost", "voice.ogg", len(big), "audio/ogg")
    bp, bg = slot_urls(r)
    resp, _ = web.do("PUT", bp, body=big, headers={"Content-Type": "audio/ogg"})
    t.is_(resp.status, 201, "a 700000-byte voice message: 201")
    resp, body = web.do("GET", bg)
    t.ok(resp.status == 200 and body == big and resp.getheader("Content-Disposition") is None,
         "GET over TLS returns it whole (read in chunks as the connection drains), inline (audio)")
    resp, body = web.do("GET", bg, headers={"Range": "bytes=262000-600000"})
    t.ok(resp.status == 206 and body == big[262000:600001], "a range across the read chunks")

    for name, ctype in (("page.html", "text/html"), ("pic.svg", "image/svg+xml"), ("x.bin", None)):
        r = request(a, "upload.localhost", name, 5, ctype)
        p, g = slot_urls(r)
        resp, _ = web.do("PUT", p, body=b"<b>x!", headers={"Content-Type": ctype} if ctype else {})
        resp, _ = web.do("GET", g)
        cd = resp.getheader("Content-Disposition") or ""
        t.ok(resp.status == 200 and cd.startswith("attachment") and name in cd,
             "%s (%s) is served as an attachment" % (name, ctype), "%s %s" % (resp.status, cd))
    return get, slot, path


def parameter_types(t, srv, a):
    """XEP-0363 allows any MIME type: a content type with parameters (RFC 9110 8.3.1), as clients
    send for text files, gets a slot bound to it; a parameter never makes a type inline."""
    web = HTTPS(srv)
    data = b"hello, text\n"
    r = request(a, "upload.localhost", "note.txt", len(data), "text/plain; charset=utf-8")
    p, g = slot_urls(r)
    t.ok(p and g, "a slot for text/plain; charset=utf-8", el_str(r))
    if not p:
        return
    resp, _ = web.do("PUT", p, body=data, headers={"Content-Type": "text/plain; charset=iso-8859-1"})
    t.is_(resp.status, 415, "PUT with another charset than the slot's: 415")
    resp, _ = web.do("PUT", p, body=data, headers={"Content-Type": "Text/Plain;Charset=utf-8"})
    t.is_(resp.status, 201, "PUT with the same type and parameter (case of names and spaces aside): 201")
    resp, body = web.do("GET", g)
    cd = resp.getheader("Content-Disposition") or ""
    t.ok(resp.status == 200 and body == data, "GET returns the text file", str(resp.status))
    t.is_(resp.getheader("Content-Type"), "text/plain; charset=utf-8", "served with its parameter")
    t.ok(cd.startswith("attachment"), "text/plain stays an attachment", cd)
    for ctype in ('text/html; charset="utf-8"', "image/svg+xml; charset=utf-8"):
        r = request(a, "upload.localhost", "x.bin", 5, ctype)
        p, g = slot_urls(r)
        resp, _ = web.do("PUT", p, body=b"<b>x!", headers={"Content-Type": ctype}) if p else (None, None)
        t.ok(resp is not None and resp.status == 201, "PUT with %s: 201" % ctype)
        resp, _ = web.do("GET", g) if g else (None, None)
        cd = (resp.getheader("Content-Disposition") or "") if resp else ""
        t.ok(resp is not None and resp.status == 200 and cd.startswith("attachment"),
             "%s is still served as an attachment" % ctype, cd)
    r = request(a, "upload.localhost", "u.txt", 5, "text/plain; charset=UTF-8")
    p, g = slot_urls(r)
    resp, _ = web.do("PUT", p, body=b"abcde", headers={"Content-Type": 'text/plain; charset="utf-8"'}) if p else (None, None)
    t.ok(resp is not None and resp.status == 201, "RFC 9110: a quoted charset and another case name the same "
         "type as the slot's (charset=UTF-8 / charset=\"utf-8\"): 201", str(resp.status) if resp else "no slot")
    resp, _ = web.do("GET", g) if g else (None, None)
    t.is_(resp.getheader("Content-Type") if resp else None, "text/plain; charset=utf-8", "... served in one form")
    r = request(a, "upload.localhost", "a.jpg", 5, "image/jpeg; q=1")
    p, g = slot_urls(r)
    resp, _ = web.do("PUT", p, body=b"abcde", headers={"Content-Type": "image/jpeg; q=1"}) if p else (None, None)
    resp, _ = web.do("GET", g) if g else (None, None)
    t.ok(resp is not None and resp.status == 200 and resp.getheader("Content-Disposition") is None
         and resp.getheader("Content-Type") == "image/jpeg; q=1", "image/jpeg with a parameter is still inline")
    for raw, desc in (("text/plain; charset=utf-8&#13;&#10;X-Evil: 1", "CR/LF"),
                      ("text/plain; charset", "a parameter without a value"),
                      ("text/plain; =utf-8", "a parameter without a name"),
                      ("text/plain; charset = utf-8", "spaces around '='"),
                      ("text/plain; charset=\"utf-8", "an unterminated quoted string"),
                      ("text/plain; charset=utf 8", "a space in a token value"),
                      ("text/plain; ch@rset=utf-8", "a parameter name that is no token"),
                      ("text/plain charset=utf-8", "no ';' before the parameter"),
                      ("text/plain; a=\"x&#10;y\"", "a line feed in a quoted string"),
                      ("; charset=utf-8", "parameters without a type")):
        r = a.iq("get", "<request xmlns='%s' filename='a' size='10' content-type='%s'/>"
                 % (NS_UP, raw.replace("'", "&apos;")), to="upload.localhost")
        t.is_(error_type_condition(r), ("modify", "bad-request"), "a content type with %s: bad-request" % desc)


def slot_errors(t, srv, a):
    r = request(a, "upload.localhost", "big.mp4", 1024 * 1024 + 1, "video/mp4")
    typ, cond = error_type_condition(r)
    err = r.find(q(NS_CLIENT, "error")) if r is not None else None
    ftl = err.find(q(NS_UP, "file-too-large")) if err is not None else None
    mfs = ftl.find(q(NS_UP, "max-file-size")) if ftl is not None else None
    t.ok(typ == "modify" and cond == "not-acceptable" and mfs is not None and mfs.text == str(1024 * 1024),
         "over max_file_size: modify/not-acceptable with <file-too-large><max-file-size>1048576", el_str(r))
    for attrs, desc in (("size='10'", "no filename"), ("filename='' size='10'", "an empty filename"),
                        ("filename='a/b' size='10'", "a filename with a slash"),
                        ("filename='a' size='0'", "size 0"), ("filename='a' size='-5'", "a negative size"),
                        ("filename='a' size='ten'", "a size that is no number"), ("filename='a'", "no size"),
                        ("filename='a' size='10' content-type='text html'", "an invalid content-type")):
        r = a.iq("get", "<request xmlns='%s' %s/>" % (NS_UP, attrs), to="upload.localhost")
        t.is_(error_type_condition(r), ("modify", "bad-request"), "slot request with %s: bad-request" % desc)


def quotas(t, srv):
    q_ = connect_login(srv, "quser", PW, domain="q.example")
    r = request(q_, "upload.q.example", "a.jpg", 2000, "image/jpeg")
    t.ok(slot_urls(r)[0] is not None, "daily quota 3000: a first slot of 2000 bytes", el_str(r))
    r = request(q_, "upload.q.example", "b.jpg", 2000, "image/jpeg")
    typ, cond = error_type_condition(r)
    err = r.find(q(NS_CLIENT, "error")) if r is not None else None
    retry = err.find(q(NS_UP, "retry")) if err is not None else None
    t.ok(typ == "wait" and cond == "resource-constraint" and retry is not None
         and re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", retry.get("stamp") or ""),
         "over the daily quota: wait/resource-constraint with <retry stamp='...'/>", el_str(r))
    r = request(q_, "upload.q.example", "c.jpg", 1000, "image/jpeg")
    t.ok(slot_urls(r)[0] is not None, "what fits the daily quota is still granted", el_str(r))
    q_.end()
    rr = connect_login(srv, "ruser", PW, domain="r.example")
    r = request(rr, "upload.r.example", "a.jpg", 2500)
    t.ok(slot_urls(r)[0] is not None, "account quota 3000: a slot of 2500", el_str(r))
    r = request(rr, "upload.r.example", "b.jpg", 600)
    t.is_(error_type_condition(r), ("wait", "resource-constraint"), "over the account's total: resource-constraint")
    rr.end()
    s1 = connect_login(srv, "s1", PW, domain="s.example")
    s2 = connect_login(srv, "s2", PW, domain="s.example")
    r = request(s1, "upload.s.example", "a.jpg", 2000)
    t.ok(slot_urls(r)[0] is not None, "host quota 3000: one account's 2000", el_str(r))
    r = request(s2, "upload.s.example", "b.jpg", 2000)
    t.is_(error_type_condition(r), ("wait", "resource-constraint"), "another account's 2000 on the full host: refused")
    s1.end()
    s2.end()
    # slots are rows and work for the server however small: one-byte slots must not be unlimited
    tu = connect_login(srv, "tuser", PW, domain="t.example")
    for i in range(3):
        r = request(tu, "upload.t.example", "s%d.txt" % i, 1)
        t.ok(slot_urls(r)[0] is not None, "slots_per_day 3: one-byte slot %d granted" % (i + 1), el_str(r))
    r = request(tu, "upload.t.example", "s4.txt", 1)
    typ, cond = error_type_condition(r)
    err = r.find(q(NS_CLIENT, "error")) if r is not None else None
    retry = err.find(q(NS_UP, "retry")) if err is not None else None
    t.ok(typ == "wait" and cond == "resource-constraint" and retry is not None,
         "a fourth slot in 24 hours, however small: wait/resource-constraint with <retry/>", el_str(r))
    tu.end()
    a = connect_login(srv, "alice", PW)
    r = request(a, "upload.q.example", "x.jpg", 10)
    t.is_(error_type_condition(r), ("cancel", "not-allowed"), "another host's upload service refuses alice")
    a.end()


def expiry_and_deletion(t, srv, got):
    get, slot, path = got
    web = HTTPS(srv)
    a = connect_login(srv, "alice", PW)
    data = b"keep me" * 100
    r = request(a, "upload.localhost", "keep.txt", len(data), "text/plain")
    put2, get2 = slot_urls(r)
    resp, _ = web.do("PUT", put2, body=data, headers={"Content-Type": "text/plain"})
    t.is_(resp.status, 201, "a second file")
    a.end()
    srv.stop()
    db = sqlite3.connect(os.path.join(srv.data_dir, "civitas.db"))
    db.execute("UPDATE upload_files SET deadline = 1 WHERE slot = ?", (slot,))
    db.commit()
    db.close()
    srv.start()
    web = HTTPS(srv)
    get = re.sub(r"localhost:\d+", "localhost:%d" % srv.port("https"), get)
    get2 = re.sub(r"localhost:\d+", "localhost:%d" % srv.port("https"), get2)
    resp, _ = web.do("GET", get)
    t.is_(resp.status, 404, "a file past its max_age_days: gone after the expiry run (GET 404)")
    t.ok(not os.path.exists(path), "and deleted from disk")
    resp, body = web.do("GET", get2)
    t.ok(resp.status == 200 and body == data, "a file within its age stays")
    d = os.path.dirname(path)
    rc = srv.ctl("user", "del", "alice@localhost")
    t.is_(rc.returncode, 0, "civitasctl user del alice@localhost")
    import time
    deadline = time.monotonic() + 10
    while os.path.exists(d) and time.monotonic() < deadline:
        time.sleep(0.05)
    t.ok(not os.path.exists(d), "the account's files are deleted with the account")
    resp, _ = web.do("GET", get2)
    t.is_(resp.status, 404, "and its URLs answer 404")


def slot_expiry(t):
    """A PUT after the slot's expiry (upload.slot_timeout) is refused; the slot is not reissued."""
    listen = {"client": ["127.0.0.1:0"], "https": ["127.0.0.1:0"]}
    with Server(t, listen=listen, extra_yaml="upload: {slot_timeout: 1}\n") as srv:
        srv.adduser("alice@localhost", PW)
        a = connect_login(srv, "alice", PW)
        r = request(a, "upload.localhost", "late.png", 4, "image/png")
        put, get = slot_urls(r)
        a.end()
        expiry = int(re.search(r"e=(\d+)", put).group(1)) if put else 0
        import time
        while time.time() < expiry + 1.5:       # the expiry is in whole seconds
            time.sleep(0.1)
        resp, _ = HTTPS(srv).do("PUT", put, body=b"late", headers={"Content-Type": "image/png"})
        t.is_(resp.status, 403, "a PUT after upload.slot_timeout: 403")
        resp, _ = HTTPS(srv).do("GET", get)
        t.is_(resp.status, 404, "and nothing can be fetched")


def big_upload(t, srv, mib):
    """alice uploads mib MiB of random bytes through a slot; returns (the bytes, the GET URL)."""
    srv.adduser("alice@localhost", PW)
    a = connect_login(srv, "alice", PW)
    data = os.urandom(mib * 1024 * 1024)
    put, get = slot_urls(request(a, "upload.localhost", "big.bin", len(data)))
    a.end()
    resp, _ = HTTPS(srv).do("PUT", put, body=data)
    t.is_(resp.status, 201, "a %d MB file" % mib)
    return data, get


def slow_download(t):
    """A large file read slowly over plain HTTP (behind a proxy, say): the connection is not idle
    (http.idle_timeout, 1 s here) while the answer still drains, the file arrives whole."""
    import time
    listen = {"client": ["127.0.0.1:0"], "https": ["127.0.0.1:0"], "http": ["127.0.0.1:0"]}
    with Server(t, listen=listen, extra_yaml="upload: {max_file_size: 16M}\nhttp: {idle_timeout: 1}\n") as srv:
        data, get = big_upload(t, srv, 12)
        path = urllib.parse.urlsplit(get).path
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)     # before connecting: a small window
        sock.settimeout(10)
        sock.connect(("127.0.0.1", srv.port("http")))
        sock.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path).encode())
        got, end, deadline = b"", "deadline", time.monotonic() + 120
        while len(got) < len(data) and time.monotonic() < deadline:
            time.sleep(0.005)
            try:
                d = sock.recv(65536)
            except (OSError, socket.timeout) as e:
                end = repr(e)
                break
            if not d:
                end = "closed by the server"
                break
            got += d
        sock.close()
        body = got.partition(b"\r\n\r\n")[2]
        t.ok(body == data, "read slowly over plain HTTP past http.idle_timeout: the file arrives whole "
             "(%d of %d bytes)" % (len(body), len(data)), end)


def slow_tls_download(t):
    """A GET over https read for longer than http.request_timeout (1 s here): the request has no body,
    so http.min_body_rate does not apply; the file arrives whole and the connection stays open for
    the next request (keep-alive)."""
    import time
    listen = {"client": ["127.0.0.1:0"], "https": ["127.0.0.1:0"]}
    with Server(t, listen=listen, extra_yaml="upload: {max_file_size: 16M}\nhttp: {request_timeout: 1}\n") as srv:
        data, get = big_upload(t, srv, 4)
        u = urllib.parse.urlsplit(get)
        ctx = ssl.create_default_context(cafile=srv.ca)
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        raw.settimeout(20)
        raw.connect(("127.0.0.1", u.port))
        c = http.client.HTTPSConnection(u.hostname, u.port, timeout=20, context=ctx)
        c.sock = ctx.wrap_socket(raw, server_hostname=u.hostname)
        c.request("GET", u.path)
        r = c.getresponse()
        got, start = b"", time.monotonic()
        while True:
            d = r.read(16384)
            if not d:
                break
            got += d
            time.sleep(0.01)
        slow = time.monotonic() - start
        t.ok(r.status == 200 and got == data and slow > 1.5,
             "read over https for longer than http.request_timeout: the file arrives whole "
             "(%d bytes in %.1f s)" % (len(got), slow))
        try:
            c.request("HEAD", u.path)
            r2 = c.getresponse()
            r2.read()
            st = r2.status
        except (OSError, http.client.HTTPException) as e:
            st = repr(e)
        c.close()
        t.is_(st, 200, "... and the connection is kept alive for the next request (no 408 from the body timer)")


def main(t):
    with Server(t, hosts=HOSTS, listen=LISTEN, extra_yaml=EXTRA) as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("quser@q.example", PW)
        srv.adduser("ruser@r.example", PW)
        srv.adduser("s1@s.example", PW)
        srv.adduser("s2@s.example", PW)
        srv.adduser("tuser@t.example", PW)
        a = connect_login(srv, "alice", PW)
        t.run(discovery, t, srv, a)
        got = t.run(upload_and_download, t, srv, a)
        t.run(slot_errors, t, srv, a)
        t.run(parameter_types, t, srv, a)
        a.end()
        t.run(quotas, t, srv)
        if got:
            t.run(expiry_and_deletion, t, srv, got)
    t.run(slot_expiry, t)
    t.run(slow_download, t)
    t.run(slow_tls_download, t)


Tap().main(main)

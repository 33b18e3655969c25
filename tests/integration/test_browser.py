#!/usr/bin/python3
# tests/integration/test_browser.py: a real web client in a real browser. Converse.js (npm
# converse.js) in Debian's headless Chromium, driven by npm puppeteer-core (tests/browser/
# converse_chat.js), logs in to civitas over WebSocket (RFC 7395, listen.http from loopback),
# sends a message typed into its chat box to bob, a slixmpp client on TCP, shows bob's answer, and
# uploads a small picture (XEP-0363, mod_upload) that it shows and bob can fetch back.
# The npm packages are installed with `npm ci` from tests/browser/package-lock.json into
# <build>/tests/browser-cache (once; again when the lock file changes). The page is served by a
# static server of the test (http.server on port 0). Skipped only when Chromium is not installed
# (scripts/install-deps --tests installs Debian's chromium).
import asyncio
import filecmp
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import struct
import threading
import urllib.request
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, build_dir, run_async  # noqa: E402
import slixmpp_helpers as sh  # noqa: E402

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "browser")
CHROMIUM = shutil.which("chromium")
NODE = shutil.which("node")
NPM = shutil.which("npm")
PW_A, PW_B = "browser-alice-pw", "browser-bob-pw"
LISTEN = {"client": ["127.0.0.1:0"], "http": ["127.0.0.1:0"]}

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>civitas test</title>
<link rel="stylesheet" href="converse/converse.min.css">
<script type="module" src="converse/converse.min.js"></script></head>
<body class="converse-fullscreen">
<script type="module">
window.civitasTest = {connected: false};
converse.plugins.add('civitas-test', {
    initialize() {
        const _converse = this._converse;
        window.civitasTest.api = _converse.api;
        _converse.api.listen.on('connected', () => {
            window.civitasTest.jid = _converse.api.connection.get().jid;
            window.civitasTest.connected = true;
        });
    }
});
converse.initialize({
    websocket_url: '%(ws)s', discover_connection_methods: false,
    jid: 'alice@localhost', password: '%(pw)s', auto_login: true, auto_reconnect: false,
    view_mode: 'fullscreen', whitelisted_plugins: ['civitas-test'], play_sounds: false,
    omemo_default: false, loglevel: 'warn'
});
</script></body></html>
"""


def npm_cache(t):
    """<build>/tests/browser-cache with node_modules from `npm ci`; None (and a failed check) when
    npm fails."""
    cache = os.path.join(build_dir(), "tests", "browser-cache")
    os.makedirs(cache, exist_ok=True)
    lock = os.path.join(SRC, "package-lock.json")
    have = os.path.join(cache, "package-lock.json")
    fresh = os.path.isdir(os.path.join(cache, "node_modules")) and os.path.exists(have) and filecmp.cmp(lock, have, False)
    for f in ("package.json", "package-lock.json", "converse_chat.js"):
        shutil.copy(os.path.join(SRC, f), os.path.join(cache, f))
    if not fresh:
        r = subprocess.run([NPM, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=cache,
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            t.ok(False, "npm ci of tests/browser/package-lock.json", r.stdout[-2000:] + r.stderr[-2000:])
            return None
    return cache


class Bob(sh.Client):
    """Answers every chat message with 'echo: <body>'."""

    def __init__(self, ca):
        super().__init__("bob@localhost/slix", PW_B, ca)
        self.got = []
        self.add_event_handler("message", self._message)

    async def on_session(self):
        await self.get_roster()

    def _message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.got.append((str(msg["from"]), msg["body"]))
            self.send_message(mto=msg["from"], mbody="echo: " + msg["body"], mtype="chat")


def png(w=8, h=8):
    """A small real PNG (RGB, a gradient)."""
    def chunk(kind, data):
        return struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data) & 0xffffffff)
    rows = b"".join(b"\0" + b"".join(bytes((x * 30 % 256, y * 30 % 256, 128)) for x in range(w)) for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack("!IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


async def scenario(t, srv, cache, page_url, picture):
    bob = Bob(srv.ca)
    t.ok(await sh.login(srv, bob), "bob (slixmpp, TCP) is online", repr(bob.failed))
    env = dict(os.environ, CHROMIUM=CHROMIUM)
    p = await asyncio.create_subprocess_exec(NODE, os.path.join(cache, "converse_chat.js"), page_url,
                                             "bob@localhost", "hello from Converse.js",
                                             "echo: hello from Converse.js", picture, cwd=cache, env=env,
                                             stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(p.communicate(), 180)
    out = out.decode(errors="replace")
    t.ok("OK logged in over WebSocket as alice@localhost" in out, "Converse.js in Chromium logs in over WebSocket", out)
    t.ok(any(f.startswith("alice@localhost/") and b == "hello from Converse.js" for f, b in bob.got),
         "bob receives the message typed into Converse.js, from alice's WebSocket resource", repr(bob.got))
    t.ok("OK the answer is shown in the chat" in out and p.returncode == 0,
         "Converse.js shows bob's answer in the chat", out)
    t.ok("OK the uploaded picture is shown" in out, "a picture uploaded in Converse.js (XEP-0363) is shown in the chat",
         out)
    urls = [b for f, b in bob.got if "/upload/" in b]
    t.ok(urls, "bob receives the picture's URL", repr(bob.got))
    if urls:
        with urllib.request.urlopen(urls[0].strip(), timeout=10) as r:
            data = r.read()
        with open(picture, "rb") as f:
            t.ok(data == f.read(), "the picture fetched back from its URL is the file uploaded")
    bob.disconnect()


def main(t):
    if not CHROMIUM:
        t.skip("Converse.js in Chromium", "Chromium is not installed (scripts/install-deps --tests installs "
                                          "Debian's chromium)")
        return
    if not (NODE and NPM):
        t.ok(False, "node and npm are installed (scripts/install-deps --tests)")
        return
    cache = npm_cache(t)
    if not cache:
        return
    with Server(t, listen=LISTEN) as srv:
        srv.adduser("alice@localhost", PW_A)
        srv.adduser("bob@localhost", PW_B)
        www = tempfile.mkdtemp(prefix="civitas-www-")
        os.symlink(os.path.join(cache, "node_modules", "converse.js", "dist"), os.path.join(www, "converse"))
        with open(os.path.join(www, "index.html"), "w") as f:
            f.write(PAGE % {"ws": "ws://127.0.0.1:%d/xmpp-websocket" % srv.port("http"), "pw": PW_A})
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=www))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            picture = os.path.join(www, "civitas-test.png")
            with open(picture, "wb") as f:
                f.write(png())
            run_async(scenario(t, srv, cache, "http://127.0.0.1:%d/index.html" % httpd.server_address[1], picture),
                      240)
        finally:
            httpd.shutdown()
            shutil.rmtree(www, True)
        t.ok("hello from Converse.js" not in srv.log(), "no message content in the log")


Tap(timeout=600).main(main)

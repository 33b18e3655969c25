#!/usr/bin/python3
# tests/integration/test_sasl2.py: XEP-0388 SASL2 (SCRAM with and without channel binding, failures,
# user agent), XEP-0474 downgrade protection (the "h" attribute of SCRAM's server-first), XEP-0440
# channel-binding advertisement, XEP-0386 Bind2 with carbons inline, XEP-0484 FAST tokens
# (HT-SHA-256-ENDP/-NONE: issue, use, mechanism binding, count replay, rotation, invalidation,
# revocation by a new password and by civitasctl). Raw stanzas; SCRAM and HT computed here.
import base64
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import ssl
import sys
import time
import uuid
import warnings

from OpenSSL import SSL  # pyOpenSSL: Python's ssl module cannot export keying material (tls-exporter)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, RawClient, connect_login, q, el_str, local_name,  # noqa: E402
                     NS_SASL, NS_BIND, NS_CLIENT, NS_STREAM)

warnings.filterwarnings("ignore", category=DeprecationWarning)

NS_SASL2 = "urn:xmpp:sasl:2"
NS_BIND2 = "urn:xmpp:bind:0"
NS_FAST = "urn:xmpp:fast:0"
NS_CB = "urn:xmpp:sasl-cb:0"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
USER, PW = "alice", "correct horse battery staple"
HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}


def sasl2_mechanisms(f):
    a = f.find(q(NS_SASL2, "authentication")) if f is not None else None
    return [m.text.strip() for m in a.findall(q(NS_SASL2, "mechanism"))] if a is not None else []


def cb_types(f):
    cb = f.find(q(NS_CB, "sasl-channel-binding")) if f is not None else None
    return [c.get("type") for c in cb.findall(q(NS_CB, "channel-binding"))] if cb is not None else None


def ssdp_hash(hname, mechs, cbs):
    """XEP-0474 §6.1: sorted mechanisms joined by 0x1E, then 0x1F and the sorted channel bindings."""
    s = "\x1e".join(sorted(mechs))
    if cbs is not None:
        s += "\x1f" + "\x1e".join(sorted(cbs))
    return base64.b64encode(hashlib.new(hname, s.encode()).digest()).decode()


class Sasl2Client(RawClient):
    """A RawClient speaking SASL2 (direct TLS)."""

    def __init__(self, srv, **kw):
        super().__init__(srv.port("client_tls"), tls=True, cafile=srv.ca, **kw)
        self.srv = srv

    def start(self):
        self.feats = self.open_stream()
        return self.feats

    def result(self):
        return self.expect(lambda el: el.tag in (q(NS_SASL2, "success"), q(NS_SASL2, "failure"),
                                                 q(NS_SASL2, "challenge"), q(NS_STREAM, "error")))

    @staticmethod
    def condition(el):
        if el is None:
            return "timeout"
        if el.tag != q(NS_SASL2, "failure"):
            return "unexpected %s" % el_str(el)
        for ch in el:
            if ch.tag.startswith("{%s}" % NS_SASL):
                return local_name(ch.tag)
        return "(no condition)"

    def authenticate(self, mech, initial, extra=""):
        ir = ("<initial-response>%s</initial-response>" % base64.b64encode(initial).decode()
              if initial is not None else "")
        self.send("<authenticate xmlns='%s' mechanism='%s'>%s%s</authenticate>" % (NS_SASL2, mech, ir, extra))
        return self.result()

    def scram(self, user, password, mech="SCRAM-SHA-256", extra="", tamper=False, cb_type="tls-server-end-point"):
        """SASL2 SCRAM. Returns (success element or None, condition, server_first attrs)."""
        plus = mech.endswith("-PLUS")
        hname = HASHES[mech[:-5] if plus else mech]
        hfn = getattr(hashlib, hname)
        gs2 = "p=%s,," % cb_type if plus else "n,,"
        cb = self.channel_binding_data() if plus else b""
        cnonce = base64.b64encode(secrets.token_bytes(18)).decode()
        first_bare = "n=%s,r=%s" % (user, cnonce)
        ch = self.authenticate(mech, (gs2 + first_bare).encode(), extra)
        if ch is None or ch.tag != q(NS_SASL2, "challenge"):
            return None, self.condition(ch), {}
        server_first = base64.b64decode(ch.text or "").decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        salted = hashlib.pbkdf2_hmac(hname, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hfn).digest()
        final_wo_proof = "c=%s,r=%s" % (base64.b64encode(gs2.encode() + cb).decode(), attrs["r"])
        auth_msg = ",".join((first_bare, server_first, final_wo_proof)).encode()
        sig = hmac.new(hfn(client_key).digest(), auth_msg, hfn).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        if tamper:
            proof = bytes([proof[0] ^ 1]) + proof[1:]
        self.send("<response xmlns='%s'>%s</response>"
                  % (NS_SASL2, base64.b64encode(("%s,p=%s" % (final_wo_proof, base64.b64encode(proof).decode()))
                                                .encode()).decode()))
        r = self.result()
        if r is None or r.tag != q(NS_SASL2, "success"):
            return None, self.condition(r), attrs
        server_key = hmac.new(salted, b"Server Key", hfn).digest()
        want = "v=" + base64.b64encode(hmac.new(server_key, auth_msg, hfn).digest()).decode()
        ad = r.find(q(NS_SASL2, "additional-data"))
        got = base64.b64decode(ad.text).decode() if ad is not None and ad.text else None
        if got != want:
            return None, "server signature mismatch %r" % got, attrs
        return r, None, attrs

    def fast(self, user, token, mech="HT-SHA-256-ENDP", ua=None, count=None, extra="", invalidate=False):
        """XEP-0484 authentication with a token. Returns (success or None, condition)."""
        cb = self.channel_binding_data() if mech[-5:] in ("-ENDP", "-EXPR") else b""
        key = token.encode()
        ih = hmac.new(key, b"Initiator" + cb, hashlib.sha256).digest()
        attrs = (" count='%d'" % count if count is not None else "") + (" invalidate='true'" if invalidate else "")
        ua_el = "<user-agent id='%s'/>" % ua if ua else ""
        r = self.authenticate(mech, user.encode() + b"\0" + ih,
                              "%s<fast xmlns='%s'%s/>%s" % (ua_el, NS_FAST, attrs, extra))
        if r is None or r.tag != q(NS_SASL2, "success"):
            return None, self.condition(r)
        ad = r.find(q(NS_SASL2, "additional-data"))
        want = hmac.new(key, b"Responder" + cb, hashlib.sha256).digest()
        if ad is None or base64.b64decode(ad.text or "") != want:
            return None, "responder hash mismatch"
        return r, None

    def post_features(self):
        """XEP-0388 §2.6.1: <success/> is followed by <stream:features/> without a restart."""
        return self.expect(q(NS_STREAM, "features"))


class ExporterSocket:
    """A pyOpenSSL TLS connection with what RawClient uses of an ssl.SSLSocket, plus RFC 9266's
    tls-exporter channel binding (EXPORTER-Channel-Binding, 32 bytes, no context)."""

    def __init__(self, sock, cafile, server_hostname):
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.load_verify_locations(cafile)
        ctx.set_verify(SSL.VERIFY_PEER, lambda conn, cert, errno, depth, ok: bool(ok))
        sock.settimeout(None)
        self.raw = sock
        self.conn = SSL.Connection(ctx, sock)
        self.conn.set_tlsext_host_name(server_hostname.encode())
        self.conn.set_connect_state()
        self.conn.do_handshake()

    def exporter(self):
        return self.conn.export_keying_material(b"EXPORTER-Channel-Binding", 32)

    def version(self):
        return self.conn.get_protocol_version_name()

    def getpeercert(self, binary_form=True):
        from OpenSSL.crypto import dump_certificate, FILETYPE_ASN1
        return dump_certificate(FILETYPE_ASN1, self.conn.get_peer_certificate())

    def sendall(self, data):
        self.conn.sendall(data)

    def recv(self, n):
        try:
            return self.conn.recv(n)
        except SSL.WantReadError:
            raise ssl.SSLWantReadError()
        except (SSL.ZeroReturnError, SSL.SysCallError):
            return b""

    def pending(self):
        return self.conn.pending()

    def settimeout(self, t):
        pass    # blocking; RawClient selects before each read

    def fileno(self):
        return self.raw.fileno()

    def close(self):
        self.raw.close()


class ExporterClient(Sasl2Client):
    """A Sasl2Client over pyOpenSSL whose -PLUS and HT-*-EXPR use tls-exporter."""

    def _wrap_tls(self, context=None):
        self.sock = ExporterSocket(self.sock, self.cafile, self.server_hostname)
        self.tls = True

    def channel_binding_data(self):
        return self.sock.exporter()


def authz(el):
    a = el.find(q(NS_SASL2, "authorization-identifier")) if el is not None else None
    return a.text.strip() if a is not None and a.text else None


def token_of(el):
    t = el.find(q(NS_FAST, "token")) if el is not None else None
    return (t.get("token"), t.get("expiry")) if t is not None else (None, None)


def features(t, srv):
    c = RawClient(srv.port("client"), cafile=srv.ca)
    f = c.open_stream()
    t.ok(f is not None and f.find(q(NS_SASL2, "authentication")) is None,
         "XEP-0388: SASL2 is not offered before TLS", el_str(f))
    t.ok(c.starttls(), "STARTTLS", c.dump)
    f = c.open_stream()
    t.ok(sorted(sasl2_mechanisms(f)) == sorted(c.mechanisms(f)) and sasl2_mechanisms(f),
         "XEP-0388 §2.1: <authentication/> offers the same mechanisms as RFC 6120 SASL beside it", el_str(f))
    c.end()
    c = Sasl2Client(srv)
    f = c.start()
    a = f.find(q(NS_SASL2, "authentication")) if f is not None else None
    t.ok(a is not None and "SCRAM-SHA-256-PLUS" in sasl2_mechanisms(f),
         "XEP-0388 §2.1: direct TLS features carry <authentication xmlns='urn:xmpp:sasl:2'/> with -PLUS", el_str(f))
    inl = a.find(q(NS_SASL2, "inline")) if a is not None else None
    b = inl.find(q(NS_BIND2, "bind")) if inl is not None else None
    feats = [x.get("var") for x in b.iter(q(NS_BIND2, "feature"))] if b is not None else []
    t.ok(b is not None, "XEP-0386 §3.1: Bind2 is advertised inside SASL2's <inline/>", el_str(f))
    t.ok(NS_CARBONS in feats, "XEP-0386 §3.1: carbons are listed as an inline Bind2 feature", el_str(f))
    fast = inl.find(q(NS_FAST, "fast")) if inl is not None else None
    fm = [m.text for m in fast.findall(q(NS_FAST, "mechanism"))] if fast is not None else []
    t.ok("HT-SHA-256-ENDP" in fm and "HT-SHA-256-NONE" in fm,
         "XEP-0484 §3.1: <fast/> offers a channel-binding and a non-binding HT mechanism (%s)" % fm, el_str(f))
    t.ok(fast is not None and fast.get("tls-0rtt") is None, "XEP-0484 §3.1: no tls-0rtt (no early data taken)")
    cbs = cb_types(f) or []
    t.ok("tls-server-end-point" in cbs,
         "XEP-0440 §3: tls-server-end-point is advertised in <sasl-channel-binding/> (%s)" % cbs, el_str(f))
    t.ok(c.sock.version() != "TLSv1.3" or "tls-exporter" in cbs,
         "XEP-0440: on TLS 1.3 tls-exporter is advertised too (%s, %s)" % (c.sock.version(), cbs))
    c.end()


def scram_login(t, srv):
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"):
        c = Sasl2Client(srv)
        f = c.start()
        ok, cond, attrs = c.scram(USER, PW, mech, extra="<user-agent id='%s'><software>t</software></user-agent>"
                                  % uuid.uuid4())
        t.ok(ok is not None, "XEP-0388 §2.6.1: %s over SASL2 succeeds and proves the server's key in "
             "<additional-data/> (%s)" % (mech, cond), c.dump)
        t.is_(authz(ok), "alice@localhost",
              "XEP-0388 §2.6.1: without Bind2 <authorization-identifier/> is the bare JID (%s)" % mech)
        hname = HASHES[mech.replace("-PLUS", "")]
        t.is_(attrs.get("h"), ssdp_hash(hname, sasl2_mechanisms(f), cb_types(f)),
              "XEP-0474 §6.1: the server-first of %s carries h = %s(sorted mechanisms, channel bindings)"
              % (mech, hname))
        pf = c.post_features()
        t.ok(pf is not None and pf.find(q(NS_BIND, "bind")) is not None
             and pf.find(q(NS_SASL2, "authentication")) is None,
             "XEP-0388 §2.6.1: <success/> is followed by the authenticated stream's features, no restart "
             "(%s)" % mech, el_str(pf))
        jid = c.bind("r-" + mech.lower())
        t.is_(jid, "alice@localhost/r-" + mech.lower(), "RFC 6120 resource binding after SASL2 (%s)" % mech)
        t.ok(c.ping_server(), "the SASL2-authenticated session exchanges stanzas (%s)" % mech)
        c.end()


def legacy_ssdp(t, srv):
    c = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca)
    f = c.open_stream()
    mechs = c.mechanisms(f)
    cnonce = "abcdefghijklmnop"
    c.send("<auth xmlns='%s' mechanism='SCRAM-SHA-256'>%s</auth>"
           % (NS_SASL, base64.b64encode(("n,,n=alice,r=" + cnonce).encode()).decode()))
    ch = c.expect(q(NS_SASL, "challenge"))
    attrs = dict(kv.split("=", 1) for kv in base64.b64decode(ch.text).decode().split(",")) if ch is not None else {}
    t.is_(attrs.get("h"), ssdp_hash("sha256", mechs, cb_types(f)),
          "XEP-0474 §6.1: RFC 6120 SASL's SCRAM server-first carries h over the <mechanisms/> list too")
    c.close()


def failures(t, srv):
    c = Sasl2Client(srv)
    c.start()
    ok, cond, _ = c.scram(USER, "wrong password")
    t.is_(cond, "not-authorized", "XEP-0388 §2.6.2: a wrong password gives <failure><not-authorized/></failure>")
    fl = c.received.decode("utf-8", "replace")
    t.ok(re.search(r"<failure xmlns=.urn:xmpp:sasl:2.><not-authorized xmlns=.urn:ietf:params:xml:ns:xmpp-sasl./>"
                   r"<text>[^<]+</text></failure>", fl) is not None,
         "XEP-0388 §2.6.2: the failure is in urn:xmpp:sasl:2 with the RFC 6120 condition and a <text/>", fl[-400:])
    ok, cond, _ = c.scram("nosuchuser", PW)
    t.is_(cond, "not-authorized", "XEP-0388 §2.6.2: an unknown user fails the same way")
    ok, cond, _ = c.scram(USER, PW)
    t.ok(ok is not None, "XEP-0388 §2.6.2: after failures the stream state is unchanged and a retry succeeds (%s)"
         % cond)
    c.end()
    c = Sasl2Client(srv)
    c.start()
    r = c.authenticate("DIGEST-MD5", b"x")
    t.is_(c.condition(r), "invalid-mechanism", "XEP-0388: a mechanism not offered gives <invalid-mechanism/>")
    r = c.authenticate("SCRAM-SHA-256", b"n,,n=alice,r=x", "<user-agent id='not-a-uuid'/>")
    t.is_(c.condition(r), "malformed-request", "XEP-0388 §2.3: a user-agent id that is not a UUID is refused")
    c.send("<authenticate xmlns='%s' mechanism='SCRAM-SHA-256'><initial-response>!!notbase64</initial-response>"
           "</authenticate>" % NS_SASL2)
    t.is_(c.condition(c.result()), "incorrect-encoding", "XEP-0388 §2.2: bad base64 gives <incorrect-encoding/>")
    r = c.authenticate("SCRAM-SHA-256", b"n,,n=alice,r=abc")
    t.ok(r is not None and r.tag == q(NS_SASL2, "challenge"), "a challenge", el_str(r))
    c.send("<abort xmlns='%s'/>" % NS_SASL2)
    t.is_(c.condition(c.result()), "aborted", "XEP-0388 §3.5: <abort/> is answered with <failure><aborted/>")
    c.end()


def bind2_carbons(t, srv):
    ua = str(uuid.uuid4())
    a = Sasl2Client(srv)
    a.start()
    ok, cond, _ = a.scram(USER, PW, "SCRAM-SHA-256-PLUS",
                          extra="<user-agent id='%s'/><bind xmlns='%s'><tag>Phone</tag><enable xmlns='%s'/></bind>"
                          % (ua, NS_BIND2, NS_CARBONS))
    jid = authz(ok)
    t.ok(jid is not None and re.match(r"^alice@localhost/Phone/[0-9a-f]+$", jid),
         "XEP-0386 §3.2: <authorization-identifier/> is the full JID, resource '<tag>/<random>' (%s)" % jid, cond)
    t.ok(ok is not None and ok.find(q(NS_BIND2, "bound")) is not None, "XEP-0386 §3.2: <success/> holds <bound/>",
         el_str(ok))
    pf = a.post_features()
    t.ok(pf is not None and pf.find(q(NS_BIND, "bind")) is None,
         "XEP-0386: after Bind2 the features offer no RFC 6120 <bind/> (already bound)", el_str(pf))
    t.ok(a.ping_server(), "the Bind2 session exchanges stanzas at once")
    a.presence()
    # a second resource without carbons, and bob
    b = Sasl2Client(srv)
    b.start()
    okb, _, _ = b.scram(USER, PW, extra="<bind xmlns='%s'><tag>Desk</tag></bind>" % NS_BIND2)
    b.post_features()
    b.presence()
    bob = connect_login(srv, "bob", "bob-pw", resource="home", direct_tls=True)
    bob.presence()
    for c in (a, b, bob):
        c.ping_server()
    body = "hello-carbons-%s" % secrets.token_hex(4)
    b.message("bob@localhost/home", body)
    t.ok(bob.expect_message(body) is not None, "bob gets the message")

    def sent_carbon(el):
        s = el.find(q(NS_CARBONS, "sent"))
        m = s.find("%s/%s" % (q(NS_FORWARD, "forwarded"), q(NS_CLIENT, "message"))) if s is not None else None
        bd = m.find(q(NS_CLIENT, "body")) if m is not None else None
        return el.tag == q(NS_CLIENT, "message") and bd is not None and bd.text == body
    t.ok(a.expect(sent_carbon) is not None,
         "XEP-0386 §3.2 + XEP-0280 §7: carbons enabled inline in Bind2 work: the other resource's message "
         "arrives as <sent/>", a.dump)
    body2 = "back-%s" % secrets.token_hex(4)
    a.message(authz(okb), body2)   # a's message to b's own full JID: no carbon for b (not enabled) of a's...
    b.expect_message(body2)
    a.message("bob@localhost/home", body2 + "x")
    bob.expect_message(body2 + "x")
    b.ping_server()
    t.ok(not any(x.find(q(NS_CARBONS, "sent")) is not None for x in b.messages()),
         "XEP-0280: the resource that did not enable carbons gets no <sent/> copy (control)")
    # the same client (user-agent id) binding again replaces its earlier session (XEP-0386 §3.2)
    a2 = Sasl2Client(srv)
    a2.start()
    ok2, _, _ = a2.scram(USER, PW, extra="<user-agent id='%s'/><bind xmlns='%s'><tag>Phone</tag></bind>"
                         % (ua, NS_BIND2))
    t.ok(ok2 is not None and authz(ok2) != jid, "a second Bind2 of the same client gets a new resource")
    e = a.read_stream_error()
    t.is_(e.condition, "conflict", "XEP-0386 §3.2: the earlier session of the same user agent is ended "
          "(<conflict/>)")
    for c in (a2, b, bob):
        c.end()


def fast_tokens(t, srv):
    ua = str(uuid.uuid4())
    c = Sasl2Client(srv)
    c.start()
    ok, cond, _ = c.scram(USER, PW, "SCRAM-SHA-256-PLUS", extra="<user-agent id='%s'/><request-token xmlns='%s' "
                          "mechanism='HT-SHA-256-ENDP'/>" % (ua, NS_FAST))
    tok, exp = token_of(ok)
    t.ok(tok and exp and re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", exp),
         "XEP-0484 §3.3: <success/> carries <token token expiry/> (XEP-0082 time) when requested", el_str(ok))
    c.end()
    if not tok:
        return
    # wrong token, other user agent, other mechanism, no user agent
    c = Sasl2Client(srv)
    c.start()
    r, cond = c.fast(USER, tok[:-2] + ("AA" if not tok.endswith("AA") else "BB"), ua=ua, count=1)
    t.is_(cond, "not-authorized", "XEP-0484: a wrong token fails with <not-authorized/>")
    r, cond = c.fast(USER, tok, ua=str(uuid.uuid4()), count=1)
    t.is_(cond, "not-authorized", "XEP-0484 §3.3: a token is bound to the user agent it was issued to")
    r, cond = c.fast(USER, tok, mech="HT-SHA-256-NONE", ua=ua, count=1)
    t.is_(cond, "not-authorized", "XEP-0484 §3.4: a token issued for -ENDP is refused with -NONE")
    r, cond = c.fast(USER, tok, ua=None, count=1)
    t.is_(cond, "not-authorized", "XEP-0484 §4.1: FAST without a user-agent id fails")
    c.end()
    # a good FAST login with Bind2
    c = Sasl2Client(srv)
    c.start()
    r, cond = c.fast(USER, tok, ua=ua, count=5, extra="<bind xmlns='%s'><tag>Fast</tag></bind>" % NS_BIND2)
    t.ok(r is not None, "XEP-0484 §3.4: HT-SHA-256-ENDP with the token succeeds and the server proves the token "
         "(Responder hash in <additional-data/>) (%s)" % cond, c.dump)
    t.ok(authz(r) and authz(r).startswith("alice@localhost/Fast/"), "FAST with Bind2 binds (%s)" % authz(r))
    t.is_(token_of(r)[0], None, "XEP-0484 §3.5: a fresh token used without <request-token/> is not rotated")
    c.post_features()
    t.ok(c.ping_server(), "the FAST session exchanges stanzas")
    c.end()
    c = Sasl2Client(srv)
    c.start()
    r, cond = c.fast(USER, tok, ua=ua, count=5)
    t.is_(cond, "not-authorized", "XEP-0484 §3.4: a count not above the last processed one is a replay: refused")
    r, cond = c.fast(USER, tok, ua=ua, count=6, extra="<request-token xmlns='%s' mechanism='HT-SHA-256-ENDP'/>"
                     % NS_FAST)
    new, _ = token_of(r)
    t.ok(r is not None and new and new != tok, "XEP-0484 §3.5: FAST with <request-token/> issues a new token (%s)"
         % cond)
    c.end()
    # until the new token is used, the old one still works (§3.5); afterwards it is gone
    c = Sasl2Client(srv)
    c.start()
    r, cond = c.fast(USER, tok, ua=ua, count=7)
    t.ok(r is not None, "XEP-0484 §3.5: the old token works until the new one is used (%s)" % cond)
    c.end()
    c = Sasl2Client(srv)
    c.start()
    r, cond = c.fast(USER, new, ua=ua, count=1)
    t.ok(r is not None, "XEP-0484 §3.5: the new token works (%s)" % cond)
    c.end()
    c = Sasl2Client(srv)
    c.start()
    r, cond = c.fast(USER, tok, ua=ua, count=8)
    t.is_(cond, "not-authorized", "XEP-0484 §3.5: once the new token was used the older one is invalid")
    # invalidation
    r, cond = c.fast(USER, new, ua=ua, count=2, invalidate=True)
    t.ok(r is not None and token_of(r)[0] is None, "XEP-0484 §3.6: <fast invalidate='true'/> authenticates, no new "
         "token (%s)" % cond)
    c.end()
    c = Sasl2Client(srv)
    c.start()
    r, cond = c.fast(USER, new, ua=ua, count=3)
    t.is_(cond, "not-authorized", "XEP-0484 §3.6: an invalidated token is refused afterwards")
    c.end()


def fast_revocation(t, srv):
    srv.adduser("carol@localhost", "carol-pw-1")
    tokens = {}
    for mech in ("HT-SHA-256-NONE", "HT-SHA-256-ENDP"):
        ua = str(uuid.uuid4())
        c = Sasl2Client(srv)
        c.start()
        ok, cond, _ = c.scram("carol", "carol-pw-1", extra="<user-agent id='%s'/><request-token xmlns='%s' "
                              "mechanism='%s'/>" % (ua, NS_FAST, mech))
        tokens[mech] = (ua, token_of(ok)[0])
        c.end()
    ua, tok = tokens["HT-SHA-256-NONE"]
    c = Sasl2Client(srv)
    c.start()
    r, cond = c.fast("carol", tok, mech="HT-SHA-256-NONE", ua=ua)
    t.ok(r is not None, "XEP-0484: HT-SHA-256-NONE works with its token (%s)" % cond)
    c.end()
    r = srv.ctl("user", "passwd", "carol@localhost", input="carol-pw-2\n")
    t.is_(r.returncode, 0, "civitasctl user passwd")
    c = Sasl2Client(srv)
    c.start()
    r, cond = c.fast("carol", tok, mech="HT-SHA-256-NONE", ua=ua)
    t.is_(cond, "credentials-expired", "XEP-0484 §4.2: after a password change the token is refused with "
          "<credentials-expired/>")
    ok, cond, _ = c.scram("carol", "carol-pw-2", extra="<user-agent id='%s'/><request-token xmlns='%s' "
                          "mechanism='HT-SHA-256-NONE'/>" % (ua, NS_FAST))
    tok2 = token_of(ok)[0]
    t.ok(tok2, "XEP-0484 §4.1: the client falls back to the password and gets a new token")
    c.end()
    ua3, tok3 = tokens["HT-SHA-256-ENDP"]
    c = Sasl2Client(srv)
    c.start()
    r, cond = c.fast("carol", tok3, ua=ua3)
    t.is_(cond, "credentials-expired", "the other client's token is revoked by the password change too")
    c.end()
    r = srv.ctl("user", "revoke-tokens", "carol@localhost")
    t.ok(r.returncode == 0 and r.stdout.strip() == "2 clients",
         "civitasctl user revoke-tokens revokes each client's tokens (%r)" % r.stdout, r.stderr)
    c = Sasl2Client(srv)
    c.start()
    r, cond = c.fast("carol", tok2, mech="HT-SHA-256-NONE", ua=ua)
    t.is_(cond, "credentials-expired", "after civitasctl user revoke-tokens the token is refused")
    c.end()
    r = srv.ctl("user", "revoke-tokens", "nobody@localhost")
    t.ok(r.returncode != 0, "civitasctl user revoke-tokens of an unknown account fails")


def fast_rows(srv, user):
    db = sqlite3.connect(os.path.join(srv.data_dir, "civitas.db"), timeout=10)
    rows = dict(db.execute("SELECT key, val FROM kv WHERE store = 'fast' AND user = ? AND domain = 'localhost'",
                           (user,)).fetchall())
    db.close()
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in rows.items()}


def backdate_fast_row(srv, user, ua):
    """Every token of the row expired a day ago (the row's format: fast_store.c)."""
    db = sqlite3.connect(os.path.join(srv.data_dir, "civitas.db"), timeout=10)
    (val,) = db.execute("SELECT val FROM kv WHERE store = 'fast' AND user = ? AND key = ?", (user, ua)).fetchone()
    f = (val.decode() if isinstance(val, bytes) else val).split(" ")
    past = str(int(time.time()) - 86400)
    for i in (5, 9):   # "1 revoked tag  mech hash expiry count  mech hash expiry count"
        if f[i - 2] != "-":
            f[i] = past
    db.execute("UPDATE kv SET val = ? WHERE store = 'fast' AND user = ? AND key = ?",
               (" ".join(f).encode(), user, ua))
    db.commit()
    db.close()


def fast_cleanup(t, srv):
    srv.adduser("dave@localhost", "dave-pw")
    uas = [str(uuid.uuid4()) for _ in range(3)]
    toks = {}
    for ua in uas:
        c = Sasl2Client(srv)
        c.start()
        ok, cond, _ = c.scram("dave", "dave-pw", extra="<user-agent id='%s'/><request-token xmlns='%s' "
                              "mechanism='HT-SHA-256-NONE'/>" % (ua, NS_FAST))
        toks[ua] = token_of(ok)[0]
        c.end()
    t.ok(set(fast_rows(srv, "dave")) == set(uas), "one FAST row per client id")
    backdate_fast_row(srv, "dave", uas[0])
    c = Sasl2Client(srv)
    c.start()
    ok, cond, _ = c.scram("dave", "dave-pw")
    t.ok(ok is not None, "a login of the account (%s)" % cond)
    c.end()
    rows = fast_rows(srv, "dave")
    t.ok(uas[0] not in rows and uas[1] in rows and uas[2] in rows,
         "the row whose tokens all expired is deleted at the account's next login; the others stay", rows)
    c = Sasl2Client(srv)
    c.start()
    r, cond = c.fast("dave", toks[uas[1]], mech="HT-SHA-256-NONE", ua=uas[1])
    t.ok(r is not None, "a token of a row kept still works (%s)" % cond)
    c.end()
    backdate_fast_row(srv, "dave", uas[2])
    r = srv.ctl("user", "revoke-tokens", "dave@localhost")
    t.ok(r.returncode == 0 and r.stdout.strip() == "1 client",
         "civitasctl user revoke-tokens revokes the live client's tokens (%r)" % r.stdout, r.stderr)
    rows = fast_rows(srv, "dave")
    t.ok(uas[2] not in rows and uas[1] in rows and rows[uas[1]].startswith("1 1 "),
         "and deletes a row with nothing left to revoke", rows)


def fast_tokens_for(t, srv, user, password, n):
    """n client ids, each with an HT-SHA-256-NONE token: {ua: token}."""
    toks = {}
    for _ in range(n):
        ua = str(uuid.uuid4())
        c = Sasl2Client(srv)
        c.start()
        ok, cond, _ = c.scram(user, password, extra="<user-agent id='%s'/><request-token xmlns='%s' "
                              "mechanism='HT-SHA-256-NONE'/>" % (ua, NS_FAST))
        toks[ua] = token_of(ok)[0]
        c.end()
    t.ok(all(toks.values()) and set(fast_rows(srv, user)) == set(toks), "%s has %d FAST rows" % (user, n))
    return toks


def edit_fast_rows(srv, edits):
    """edits: [(user, ua, fn(fields) -> fields or None to insert nothing)], on the stopped server's db."""
    db = sqlite3.connect(os.path.join(srv.data_dir, "civitas.db"), timeout=10)
    for user, ua, fn in edits:
        (val,) = db.execute("SELECT val FROM kv WHERE store = 'fast' AND user = ? AND key = ?", (user, ua)).fetchone()
        f = fn((val.decode() if isinstance(val, bytes) else val).split(" "))
        db.execute("UPDATE kv SET val = ? WHERE store = 'fast' AND user = ? AND key = ?",
                   (" ".join(f).encode(), user, ua))
    db.commit()
    db.close()


def fast_sweep(t, srv):
    """The sweep over every account (fast.c): a pass at start-up, so a restart shows it; no login of
    these accounts happens before the check (a login expires the account's own rows, fast_cleanup)."""
    srv.adduser("erin@localhost", "erin-pw")
    srv.adduser("frank@localhost", "frank-pw")
    erin = list(fast_tokens_for(t, srv, "erin", "erin-pw", 3).items())
    frank = list(fast_tokens_for(t, srv, "frank", "frank-pw", 2).items())
    r = srv.ctl("user", "revoke-tokens", "erin@localhost")
    t.ok(r.returncode == 0 and r.stdout.strip() == "3 clients", "civitasctl user revoke-tokens (%r)" % r.stdout,
         r.stderr)
    srv.stop()
    past = str(int(time.time()) - 86400)
    # erin 0: revoked, and the token it revoked expired a day ago; erin 1: revoked in the format that did
    # not keep that date (kept: the sweep cannot know); erin 2: revoked, its token still in date (kept)
    edit_fast_rows(srv, [("erin", erin[0][0], lambda f: f[:11] + [past]),
                         ("erin", erin[1][0], lambda f: f[:11])])
    # frank 0: every token expired (deleted without any login of frank); frank 1: live (kept)
    backdate_fast_row(srv, "frank", frank[0][0])
    # many expired rows of many accounts: the sweep walks them in batches
    db = sqlite3.connect(os.path.join(srv.data_dir, "civitas.db"), timeout=10)
    (val,) = db.execute("SELECT val FROM kv WHERE store = 'fast' AND user = 'frank' AND key = ?",
                        (frank[0][0],)).fetchone()
    db.executemany("INSERT INTO kv (store, user, domain, key, val) VALUES ('fast', ?, 'localhost', ?, ?)",
                   [("ghost%d" % (i % 7), "ua-%d" % i, val) for i in range(300)])
    db.commit()
    db.close()
    srv.start()
    gone = lambda: (erin[0][0] not in fast_rows(srv, "erin") and frank[0][0] not in fast_rows(srv, "frank") and
                    not any(fast_rows(srv, "ghost%d" % i) for i in range(7)))
    deadline = time.monotonic() + 20
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.1)
    t.ok(gone(), "after a restart the sweep deletes, for every account, the rows whose tokens all expired and the "
         "revoked rows whose revoked token expired", lambda: (fast_rows(srv, "erin"), fast_rows(srv, "frank")))
    rows = fast_rows(srv, "erin")
    t.ok(erin[1][0] in rows and erin[2][0] in rows and frank[1][0] in fast_rows(srv, "frank"),
         "revoked rows whose token is still in date and live rows stay", rows)
    c = Sasl2Client(srv)
    c.start()
    r, cond = c.fast("erin", erin[2][1], mech="HT-SHA-256-NONE", ua=erin[2][0])
    t.is_(cond, "credentials-expired", "XEP-0484 §4.2: a revoked token still in date is refused with "
          "<credentials-expired/> after the sweep")
    r, cond = c.fast("frank", frank[1][1], mech="HT-SHA-256-NONE", ua=frank[1][0])
    t.ok(r is not None, "a live token of another account still works after the sweep (%s)" % cond)
    c.end()


def tls_exporter(t, srv):
    c = ExporterClient(srv)
    f = c.start()
    t.ok(c.sock.version() == "TLSv1.3" and "tls-exporter" in (cb_types(f) or []),
         "XEP-0440: tls-exporter is advertised on TLS 1.3 (%s)" % c.sock.version(), el_str(f))
    ua = str(uuid.uuid4())
    ok, cond, attrs = c.scram(USER, PW, "SCRAM-SHA-256-PLUS", cb_type="tls-exporter",
                              extra="<user-agent id='%s'/><request-token xmlns='%s' mechanism='HT-SHA-256-EXPR'/>"
                              % (ua, NS_FAST))
    t.ok(ok is not None, "RFC 9266 + XEP-0388: SCRAM-SHA-256-PLUS with tls-exporter over SASL2 (%s)" % cond, c.dump)
    t.is_(attrs.get("h"), ssdp_hash("sha256", sasl2_mechanisms(f), cb_types(f)),
          "XEP-0474 §6.1: h covers tls-exporter in the channel-binding list")
    tok = token_of(ok)[0]
    c.end()
    c = ExporterClient(srv)
    c.start()
    r, cond = c.fast(USER, tok, mech="HT-SHA-256-EXPR", ua=ua, count=1)
    t.ok(r is not None, "XEP-0484: HT-SHA-256-EXPR with the token, tls-exporter bound (%s)" % cond, c.dump)
    c.end()
    # the tls-server-end-point data under the name tls-exporter: the binding does not match
    c = ExporterClient(srv)
    c.start()
    real = c.channel_binding_data
    c.channel_binding_data = lambda: hashlib.sha256(c.peer_cert_der()).digest()
    ok, cond, _ = c.scram(USER, PW, "SCRAM-SHA-256-PLUS", cb_type="tls-exporter")
    t.is_(cond, "not-authorized", "RFC 5802 §6: channel-binding data that is not this connection's tls-exporter fails")
    r, cond = c.fast(USER, tok, mech="HT-SHA-256-EXPR", ua=ua, count=2)
    t.is_(cond, "not-authorized", "XEP-0484: HT-SHA-256-EXPR with other binding data fails")
    c.channel_binding_data = real
    c.end()


def main(t):
    certs = Certs()
    with Server(t, certs=certs, extra_yaml="limits:\n  sasl_failures_per_ip: 1000\n") as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", "bob-pw")
        t.run(features, t, srv)
        t.run(scram_login, t, srv)
        t.run(legacy_ssdp, t, srv)
        t.run(failures, t, srv)
        t.run(bind2_carbons, t, srv)
        t.run(fast_tokens, t, srv)
        t.run(fast_revocation, t, srv)
        t.run(fast_cleanup, t, srv)
        t.run(fast_sweep, t, srv)
        t.run(tls_exporter, t, srv)


if __name__ == "__main__":
    Tap().main(main)

#!/usr/bin/python3
# tests/integration/test_c2s_login.py: client login: STARTTLS and direct TLS, every SASL mechanism
# (raw SCRAM with tls-server-end-point and libstrophe), SASL failures, resource binding, TLS versions.
import base64
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Tap, Server, Certs, RawClient, HarnessError, StropheProc, run_strophe, connect_login,  # noqa: E402
                     q, el_str, local_name, NS_TLS, NS_SASL, NS_BIND, NS_SESSION)

warnings.filterwarnings("ignore", category=DeprecationWarning)

ALL_MECHS = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
USER, PW = "alice", "correct horse battery staple"


def features_and_mechanisms(t, srv):
    c = RawClient(srv.port("client"), cafile=srv.ca)
    f = c.open_stream()
    t.ok(f is not None, "RFC 6120 §4.3.2: the server sends <stream:features/> after its response header",
         c.dump)
    if f is None:
        return
    a = c.stream_attrs
    t.ok(a.get("from") == "localhost", "RFC 6120 §4.7.1: response header 'from' is the served domain", repr(a))
    t.ok(a.get("id"), "RFC 6120 §4.7.3: response header carries a stream id", repr(a))
    t.ok(a.get("version") == "1.0", "RFC 6120 §4.7.5: response header version='1.0'", repr(a))
    st = f.find(q(NS_TLS, "starttls"))
    t.ok(st is not None and st.find(q(NS_TLS, "required")) is not None,
         "RFC 6120 §5.3.1: before TLS the features are <starttls><required/></starttls>", el_str(f))
    t.ok(f.find(q(NS_SASL, "mechanisms")) is None,
         "RFC 6120 §5.3.1 / §13.8: SASL is not offered before TLS on the STARTTLS port", el_str(f))
    t.ok("PLAIN" not in c.mechanisms(f), "RFC 6120 §13.8: PLAIN is not offered without TLS", el_str(f))
    t.ok(c.starttls(), "RFC 6120 §5.4.2.3: <starttls/> is answered with <proceed/> and TLS is established",
         c.dump)
    t.ok(c.sock.version() in ("TLSv1.2", "TLSv1.3"), "RFC 7525: the negotiated TLS version is 1.2 or 1.3 (%s)"
         % c.sock.version())
    f = c.open_stream()
    mechs = c.mechanisms(f)
    for m in ALL_MECHS:
        t.ok(m in mechs, "RFC 6120 §6.4.1: after TLS the server offers %s" % m, el_str(f))
    t.ok(f is not None and f.find(q(NS_TLS, "starttls")) is None,
         "RFC 6120 §5.4.3.3: STARTTLS is not offered again after TLS", el_str(f))
    c.end()

    d = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca)
    f = d.open_stream()
    t.ok(f is not None and f.find(q(NS_TLS, "starttls")) is None and set(ALL_MECHS) <= set(d.mechanisms(f)),
         "XEP-0368: on the direct TLS port the first features offer SASL (every mechanism), no STARTTLS",
         el_str(f))
    d.end()


def login_every_mechanism(t, srv):
    for direct in (False, True):
        how = "direct TLS (XEP-0368)" if direct else "STARTTLS"
        for mech in ALL_MECHS:
            res = "r-%s-%s" % (mech.lower(), "d" if direct else "s")
            try:
                c = connect_login(srv, USER, PW, resource=res, mech=mech, direct_tls=direct)
                jid = c.jid
                c.end()
            except HarnessError as e:
                jid = "error: %s" % e
            t.is_(jid, "alice@localhost/" + res,
                  "RFC 6120 §6 / RFC 5802%s: %s login with %s and bind" %
                  (" / RFC 5929 tls-server-end-point" if mech.endswith("PLUS") else "", how, mech))


def sasl_failures(t, srv):
    port = srv.port("client_tls")
    for mech in ALL_MECHS:
        c = RawClient(port, tls=True, cafile=srv.ca)
        c.open_stream()
        ok, cond = c.auth(USER, "wrong password", mech)
        t.ok(not ok and cond == "not-authorized",
             "RFC 6120 §6.5.10: wrong password with %s -> <failure><not-authorized/>" % mech, "got %r" % (cond,))
        # §6.4.5: the client may retry on the same stream after a failure
        ok, cond = c.auth(USER, PW, mech)
        t.ok(ok, "RFC 6120 §6.4.5: after a failed attempt (%s) a retry with the right password succeeds" % mech,
             "got %r" % (cond,))
        c.end()
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "SCRAM-SHA-256-PLUS"):
        c = RawClient(port, tls=True, cafile=srv.ca)
        c.open_stream()
        ok, cond = c.auth("nobody", PW, mech)
        t.ok(not ok and cond == "not-authorized",
             "RFC 6120 §6.5.10: unknown user with %s -> <failure><not-authorized/> (same as a wrong password)"
             % mech, "got %r" % (cond,))
        c.end()
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        c = RawClient(port, tls=True, cafile=srv.ca)
        c.open_stream()
        ok, cond = c.auth_scram(USER, PW, mech, tamper_proof=True)
        t.ok(not ok and cond == "not-authorized", "RFC 5802 §5.1: a wrong ClientProof (%s) -> <not-authorized/>"
             % mech, "got %r" % (cond,))
        c.end()
    for mech in ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"):
        c = RawClient(port, tls=True, cafile=srv.ca)
        c.open_stream()
        ok, cond = c.auth_scram(USER, PW, mech, cb_data=b"\0" * 32)
        t.ok(not ok and cond not in ("invalid-mechanism", "timeout", "stream-error"), "RFC 5802 §6 / RFC 5929: %s with channel binding data that is not this channel's fails"
             % mech, "got %r" % (cond,))
        c.end()
    c = RawClient(port, tls=True, cafile=srv.ca)
    c.open_stream()
    ok, cond = c.auth_scram(USER, PW, "SCRAM-SHA-256", gs2_flag="y")
    t.ok(not ok and cond not in ("invalid-mechanism", "timeout", "stream-error"), "RFC 5802 §6: gs2 flag 'y' while the server advertises -PLUS is a downgrade and fails",
         "got %r" % (cond,))
    c.end()
    c = RawClient(port, tls=True, cafile=srv.ca)
    c.open_stream()
    c.send("<auth xmlns='%s' mechanism='X-UNKNOWN'>=</auth>" % NS_SASL)
    r = c.expect(q(NS_SASL, "failure"))
    t.ok(r is not None and r.find(q(NS_SASL, "invalid-mechanism")) is not None,
         "RFC 6120 §6.5.5: an unknown mechanism -> <failure><invalid-mechanism/>", el_str(r))
    c.end()


def binding_and_session(t, srv):
    c = RawClient(srv.port("client"), cafile=srv.ca)
    c.login(USER, PW, bind=False)
    f = c.features
    t.ok(f is not None and f.find(q(NS_BIND, "bind")) is not None,
         "RFC 6120 §7.2: after SASL the features offer <bind/>", el_str(f))
    s = f.find(q(NS_SESSION, "session")) if f is not None else None
    t.ok(s is not None and s.find(q(NS_SESSION, "optional")) is not None,
         "RFC 6121 App. E / draft-cridland-xmpp-session: <session><optional/></session> is advertised", el_str(f))
    jid = c.bind("chosen-res")
    t.is_(jid, "alice@localhost/chosen-res", "RFC 6120 §7.7: the server binds the client-submitted resource")
    r = c.iq("set", "<session xmlns='%s'/>" % NS_SESSION, to="localhost")
    t.ok(r is not None and r.get("type") == "result",
         "RFC 3921 §3 (legacy): <session/> to the server is answered with a result", el_str(r))
    # Clients such as libstrophe send it without 'to' (RFC 6120 §10.3.3: handled for the account).
    r = c.iq("set", "<session xmlns='%s'/>" % NS_SESSION)
    t.ok(r is not None and r.get("type") == "result",
         "RFC 3921 §3 (legacy): <session/> without 'to' is answered with a result", el_str(r))
    c.end()

    c = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca)
    c.login(USER, PW, bind=False)
    jid = c.bind(None)
    t.ok(jid is not None and jid.startswith("alice@localhost/") and len(jid) > len("alice@localhost/"),
         "RFC 6120 §7.6: without a resource the server generates one (%s)" % jid, el_str(c.bind_reply))
    c.end()



def conflict(t, srv):
    a = connect_login(srv, USER, PW, resource="dup")
    b = connect_login(srv, USER, PW, resource="dup")
    t.is_(b.jid, "alice@localhost/dup", "RFC 6120 §7.7.2.2: the second session gets the same full JID")
    r = a.read_stream_error()
    t.is_(r.condition, "conflict", "RFC 6120 §4.9.3.3: the first session gets the <conflict/> stream error")
    t.ok(r.stream_closed and r.socket_closed,
         "RFC 6120 §4.9.1.1: after <conflict/> the server closes the stream and the connection", repr(r))
    t.ok(b.ping_server(), "the new session with the same full JID keeps working")
    b.end()


def failure_throttle(t, certs):
    """civitas policy (limits.sasl_failures_per_ip): past the limit, failures from one address are
    answered late (2^n s), so password guessing is slow."""
    with Server(t, certs=certs, extra_yaml="limits:\n  sasl_failures_per_ip: 2\n") as srv:
        srv.adduser("alice@localhost", PW)
        took = []
        for i in range(3):
            c = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca, timeout=15)
            c.open_stream()
            t0 = time.monotonic()
            ok, cond = c.auth(USER, "guess-%d" % i, "SCRAM-SHA-256")
            took.append((time.monotonic() - t0, cond))
            c.close()
        t.ok(all(d < 1.0 and cond == "not-authorized" for d, cond in took[:2]),
             "limits.sasl_failures_per_ip: 2: the first two failures are answered at once", repr(took))
        t.ok(took[2][0] >= 1.5 and took[2][1] == "not-authorized",
             "limits.sasl_failures_per_ip: 2: the third failure from the address is answered late", repr(took))


def plain_auth(user, password):
    msg = ("\0%s\0%s" % (user, password)).encode("utf-8")
    return "<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, base64.b64encode(msg).decode())


def sasl_answer(c, timeout=15):
    return c.expect(lambda el: el.tag in (q(NS_SASL, "success"), q(NS_SASL, "failure")), timeout)


def throttle_pipelined(t, certs):
    """civitas policy, issue 9 item 7: while a failure's answer is held back, nothing else the client
    sent is acted on: <auth/> elements pipelined in the same write wait for the delay to pass, so
    they can neither overtake the delayed failure nor replace it."""
    with Server(t, certs=certs, extra_yaml="limits:\n  sasl_failures_per_ip: 1\n") as srv:
        srv.adduser("alice@localhost", PW)
        c = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca, timeout=20)
        c.open_stream()
        t0 = time.monotonic()
        c.send(plain_auth(USER, "guess-1") + plain_auth(USER, "guess-2") + plain_auth(USER, PW))
        got = []
        for _ in range(3):
            a = sasl_answer(c)
            got.append((local_name(a.tag) if a is not None else None, round(time.monotonic() - t0, 2)))
        t.ok(got[0][0] == "failure" and got[0][1] < 1.0,
             "limits.sasl_failures_per_ip: 1: the first failure is answered at once", repr(got))
        t.ok(got[1][0] == "failure" and got[1][1] >= 1.5,
             "the second failure is answered only after its delay (2 s), before anything sent after it",
             repr(got))
        t.ok(got[2][0] == "success" and got[2][1] >= 1.5,
             "the pipelined third <auth/> is processed only after the delay has passed", repr(got))
        f = c.open_stream() if got[2][0] == "success" else None
        t.ok(f is not None and c.bind("piped") == "alice@localhost/piped",
             "after the held-back success the stream restarts and binds", c.dump)
        c.close()


def throttle_per_account(t, certs):
    """civitas policy, issue 9 item 7: a successful login forgives only the failures of the account
    that logged in; another account's success from the same address leaves the back-off in place."""
    with Server(t, certs=certs, extra_yaml="limits:\n  sasl_failures_per_ip: 2\n") as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", "bobpw")

        def fail(user):
            c = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca, timeout=20)
            c.open_stream()
            t0 = time.monotonic()
            ok, cond = c.auth(user, "wrong guess")
            c.close()
            return cond, time.monotonic() - t0

        first = [fail(USER), fail(USER)]
        t.ok(all(d < 1.0 for _, d in first), "two failures for alice are answered at once", repr(first))
        ok = can_login(srv, "bob", "bobpw")
        t.ok(ok, "bob logs in from the same address")
        cond, took = fail(USER)
        t.ok(cond == "not-authorized" and took >= 1.5,
             "bob's success does not reset the back-off: alice's third failure is answered late", repr((cond, took)))
        t.ok(can_login(srv, USER, PW), "alice logs in with her password")
        cond, took = fail("bob")
        t.ok(cond == "not-authorized" and took < 1.0,
             "alice's success forgives her own failures: the next failure (bob's) is answered at once",
             repr((cond, took)))


def can_login(srv, user, pw):
    try:
        c = connect_login(srv, user, pw, direct_tls=True)
        c.end()
        return True
    except HarnessError:
        return False


def strophe_args(srv, jid, pw, direct):
    args = ["--jid", jid, "--password", pw, "--host", "127.0.0.1", "--cafile", srv.ca, "--timeout", "10"]
    if direct:
        args += ["--port", str(srv.port("client_tls")), "--direct-tls"]
    else:
        args += ["--port", str(srv.port("client"))]
    return args


def libstrophe_version():
    try:
        v = subprocess.run(["pkg-config", "--modversion", "libstrophe"], capture_output=True, text=True).stdout
        return tuple(int(x) for x in v.strip().split(".")[:2])
    except Exception:
        return (0, 0)


def restricted_mechanism(t, certs, mech):
    """A server offering only mech: libstrophe (which picks the strongest offered mechanism) logs in
    with it; the raw client sees exactly that mechanism and is refused any other."""
    with Server(t, certs=certs, extra_yaml="sasl:\n  mechanisms: [%s]\n" % mech) as srv:
        srv.adduser("alice@localhost", PW)
        srv.adduser("bob@localhost", "bobpw")
        c = RawClient(srv.port("client_tls"), tls=True, cafile=srv.ca)
        f = c.open_stream()
        t.is_(c.mechanisms(f), [mech], "sasl.mechanisms [%s]: only %s is offered" % (mech, mech))
        other = "SCRAM-SHA-1" if mech != "SCRAM-SHA-1" else "SCRAM-SHA-256"
        ok, cond = c.auth(USER, PW, other)
        t.ok(not ok and cond == "invalid-mechanism",
             "RFC 6120 §6.5.5: %s when only %s is offered -> <invalid-mechanism/>" % (other, mech),
             "got %r" % (cond,))
        ok, cond = c.auth(USER, PW, mech)
        t.ok(ok, "raw client logs in with the only offered mechanism %s" % mech, "got %r" % (cond,))
        c.end()
        if mech.endswith("-PLUS") and libstrophe_version() < (0, 13):
            t.skip("libstrophe login with %s" % mech,
                   "libstrophe %d.%d has no SCRAM -PLUS support (added in 0.13, with tls-exporter/tls-unique)"
                   % libstrophe_version())
            return
        for direct in (False, True):
            how = "direct TLS" if direct else "STARTTLS"
            bob = StropheProc(strophe_args(srv, "bob@localhost/lib", "bobpw", direct)
                              + ["--expect-message", "alice@localhost/lib", "ping-%s" % mech,
                                 "--send", "alice@localhost/lib", "pong-%s" % mech])
            bound = bob.wait_line("bound ")
            rc, lines, err = run_strophe(strophe_args(srv, "alice@localhost/lib", PW, direct)
                                         + ["--send", "bob@localhost/lib", "ping-%s" % mech,
                                            "--expect-message", "bob@localhost/lib", "pong-%s" % mech,
                                            "--iq", "get", "localhost", "urn:xmpp:ping"])
            brc, blines, berr = bob.finish()
            t.ok(bound == "bound bob@localhost/lib" and rc == 0 and brc == 0,
                 "libstrophe over %s with only %s offered: both log in, exchange messages, ping" % (how, mech),
                 lambda: "alice rc=%r %r\n%s\nbob rc=%r %r\n%s" % (rc, lines, err, brc, blines, berr))
            t.ok("bound alice@localhost/lib" in lines, "libstrophe reports the bound JID alice@localhost/lib",
                 repr(lines))


def strophe_failures(t, srv):
    rc, lines, err = run_strophe(strophe_args(srv, "alice@localhost", "wrong", False))
    t.ok(rc == 1 and not any(l.startswith("bound") for l in lines),
         "libstrophe with a wrong password does not get a session", repr((rc, lines, err)))
    # A client that does not trust the test CA must not be able to log in (the certificate is checked).
    args = [a for a in strophe_args(srv, "alice@localhost", PW, True) if a != srv.ca and a != "--cafile"]
    rc, lines, err = run_strophe(args)
    t.ok(rc == 1 and not any(l.startswith("bound") for l in lines),
         "libstrophe without the test CA refuses the certificate (the check is real)", repr((rc, lines, err)))
    rc, lines, err = run_strophe(args + ["--trust"])
    t.ok(rc == 0 and "bound " in "\n".join(lines), "libstrophe with --trust logs in over direct TLS",
         repr((rc, lines, err)))


def legacy_tls_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


def control_tls11(certs):
    """Proves the TLS 1.1 client context can complete a handshake with a server that allows it, so
    the refusal seen from civitasd is the server's doing."""
    leaf = certs.leaf(["localhost"], name="tls11-control")
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(leaf.cert, leaf.key)
    sctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    sctx.minimum_version = ssl.TLSVersion.TLSv1
    sctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(10)

    def serve():
        try:
            s, _ = ls.accept()
            s.settimeout(10)
            ss = sctx.wrap_socket(s, server_side=True)
            ss.recv(1)
            ss.close()
        except Exception:
            pass
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        c = legacy_tls_context(certs.ca).wrap_socket(socket.create_connection(("127.0.0.1", ls.getsockname()[1]),
                                                                                timeout=10),
                                                     server_hostname="localhost")
        v = c.version()
        c.send(b"x")
        c.close()
    except (ssl.SSLError, OSError) as e:
        v = "failed: %s" % e
    th.join(10)
    ls.close()
    return v


def tls_versions(t, srv, certs):
    v = control_tls11(certs)
    t.is_(v, "TLSv1.1", "control: the TLS 1.1 test client completes a handshake with a server that allows 1.1")
    try:
        c = RawClient(srv.port("client_tls"), tls=True, context=legacy_tls_context(srv.ca))
        got = "handshake succeeded with %s" % c.sock.version()
        c.close()
    except (ssl.SSLError, OSError) as e:
        got = "refused"
        t.diag("direct TLS 1.1: %s" % e)
    t.is_(got, "refused", "RFC 7525 §3.1.1: direct TLS with TLS <= 1.1 is refused")
    c = RawClient(srv.port("client"), cafile=srv.ca)
    c.open_stream()
    try:
        c.starttls(context=legacy_tls_context(srv.ca))
        got = "handshake succeeded with %s" % c.sock.version()
    except (ssl.SSLError, OSError) as e:
        got = "refused"
        t.diag("STARTTLS with TLS 1.1: %s" % e)
    t.is_(got, "refused", "RFC 7525 §3.1.1: STARTTLS with TLS <= 1.1 is refused")
    c.close()
    for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = ssl.create_default_context(cafile=srv.ca)
        ctx.minimum_version = ctx.maximum_version = ver
        try:
            c = RawClient(srv.port("client_tls"), tls=True, context=ctx)
            f = c.open_stream()
            got = c.sock.version() if f is not None else "no features"
            c.end()
        except (ssl.SSLError, OSError) as e:
            got = "failed: %s" % e
        t.is_(got, ver.name.replace("v1_", "v1."), "RFC 7525: direct TLS with %s works" % ver.name)


def main(t):
    certs = Certs()
    # Many failures on purpose below: lift the per-address throttle (tested on its own).
    with Server(t, certs=certs, extra_yaml="limits:\n  sasl_failures_per_ip: 1000\n") as srv:
        srv.adduser("alice@localhost", PW)
        t.run(features_and_mechanisms, t, srv)
        t.run(login_every_mechanism, t, srv)
        t.run(sasl_failures, t, srv)
        t.run(binding_and_session, t, srv)
        t.run(conflict, t, srv)
        t.run(strophe_failures, t, srv)
        t.run(tls_versions, t, srv, certs)
    t.run(failure_throttle, t, certs)
    t.run(throttle_pipelined, t, certs)
    t.run(throttle_per_account, t, certs)
    for mech in ALL_MECHS:
        t.run(restricted_mechanism, t, certs, mech)


if __name__ == "__main__":
    Tap().main(main)

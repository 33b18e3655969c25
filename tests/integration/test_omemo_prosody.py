#!/usr/bin/python3
# tests/integration/test_omemo_prosody.py: the legacy OMEMO client (tests/clients/omemo_client) proven against
# Debian's Prosody 0.12 and its PEP (mod_pep): the reference the same scenarios hold civitas to (test_omemo.py).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Prosody, prosody_missing, DnsResponder  # noqa: E402
from omemo_scenarios import (run_omemo_scenarios, run_omemo_federated, selftest, prosody_info,  # noqa: E402
                             PROSODY_MODULES as MODULES)

DOMAIN = "pros.example"


def federation(t):
    """Two Prosody servers federated (dialback, names from our DNS responder): OMEMO across s2s."""
    missing = prosody_missing(need_unbound=True)
    if missing:
        t.skip("OMEMO across two federated Prosody servers", "; ".join(missing))
        return
    dns = DnsResponder()
    servers = []
    try:
        for d in ("a.example", "b.example"):
            p = Prosody(t, [d], dns_port=dns.port, modules=MODULES + ("dialback",))
            dns.add_srv("_xmpp-server._tcp." + d, d, p.s2s_port)
            dns.add_a(d)
            servers.append(p)
        for p in servers:
            p.start()
        run_omemo_federated(t, prosody_info(servers[0], "a.example", "Prosody a.example"),
                            prosody_info(servers[1], "b.example", "Prosody b.example"))
    finally:
        for p in servers:
            if t.failed:
                t.diag("--- tail of prosody log (%s) ---" % p.hosts[0], p.log_text()[-4000:])
            p.cleanup(t.failed > 0)
        dns.stop()


def main(t):
    t.run(selftest, t)
    missing = prosody_missing(need_unbound=False)
    if missing:
        t.skip("OMEMO between omemo_client devices on Prosody", "; ".join(missing))
        return
    pros = Prosody(t, [DOMAIN], modules=MODULES)
    try:
        pros.start()
        run_omemo_scenarios(t, prosody_info(pros, DOMAIN))
    finally:
        if t.failed:
            t.diag("--- tail of prosody log ---", pros.log_text()[-6000:])
        pros.cleanup(t.failed > 0)
    t.run(federation, t)


Tap(timeout=240).main(main)

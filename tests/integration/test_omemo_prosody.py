#!/usr/bin/python3
# tests/integration/test_omemo_prosody.py: the legacy OMEMO client (tests/clients/omemo_client) proven against
# Debian's Prosody 0.12 and its PEP (mod_pep): the reference the same scenarios hold civitas to (test_omemo.py).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, PeerClient, Prosody, prosody_missing  # noqa: E402
from omemo_scenarios import run_omemo_scenarios, selftest  # noqa: E402

PW = "pw-for-omemo"
DOMAIN = "pros.example"
# c2s only: PEP for device lists and bundles, offline storage, carbons for the second device
MODULES = ("roster", "saslauth", "tls", "disco", "ping", "posix", "pep", "carbons", "offline")


def prosody_info(pros):
    def raw_login(user, resource):
        c = PeerClient(pros.c2s_port, server_hostname=DOMAIN)
        c.login(user, PW, resource=resource, mech="PLAIN", domain=DOMAIN)
        c.presence()
        return c
    return {"name": "Prosody", "domain": DOMAIN, "port": pros.c2s_port, "password": PW,
            "adduser": lambda user: pros.register(user, DOMAIN, PW), "raw_login": raw_login,
            "refuses_broken_bundle": False}


def main(t):
    t.run(selftest, t)
    missing = prosody_missing(need_unbound=False)
    if missing:
        t.skip("OMEMO between omemo_client devices on Prosody", "; ".join(missing))
        return
    pros = Prosody(t, [DOMAIN], modules=MODULES)
    try:
        pros.start()
        run_omemo_scenarios(t, prosody_info(pros))
    finally:
        if t.failed:
            t.diag("--- tail of prosody log ---", pros.log_text()[-6000:])
        pros.cleanup(t.failed > 0)


Tap(timeout=240).main(main)

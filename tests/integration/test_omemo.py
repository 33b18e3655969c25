#!/usr/bin/python3
# tests/integration/test_omemo.py: issue 11, "OMEMO works": the legacy OMEMO scenarios of omemo_scenarios.py
# against civitas. They need PEP; until civitas has it (every PEP publish answers <service-unavailable/>) the
# file says so as a skip, and turns itself on as soon as a publish succeeds.
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, connect_login  # noqa: E402
from omemo_scenarios import OmemoDevice, run_omemo_scenarios  # noqa: E402

PW = "pw-for-omemo"
DOMAIN = "localhost"


def civitas_server_info(srv, refuses_broken_bundle=False):
    """server_info (see omemo_scenarios.py) for a running civitas Server. For the PEP work: pass
    refuses_broken_bundle=True once civitas checks the signature of a published bundle."""
    def raw_login(user, resource):
        c = connect_login(srv, user, PW, resource=resource, domain=DOMAIN)
        c.presence()
        return c
    return {"name": "civitas", "domain": DOMAIN, "port": srv.port("client"), "password": PW,
            "adduser": lambda user: srv.adduser("%s@%s" % (user, DOMAIN), PW), "raw_login": raw_login,
            "refuses_broken_bundle": refuses_broken_bundle}


def civitas_has_pep(t, info, tmp):
    """Whether a PEP publish (an OMEMO device list with publish-options) succeeds; the reason when not."""
    info["adduser"]("probe")
    rc, lines, err = OmemoDevice(info, tmp, "probe", "p").publish()
    if rc == 0:
        return True, None
    errors = [line for line in lines if line.startswith("publish-error")]
    return False, "; ".join(errors) or err.strip()[-300:]


def main(t):
    srv = Server(t, hosts=[DOMAIN])
    info = civitas_server_info(srv)
    tmp = tempfile.mkdtemp(prefix="civitas-omemo-probe-")
    try:
        has_pep, why = civitas_has_pep(t, info, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not has_pep:
        t.skip("OMEMO scenarios against civitas", "civitas has no PEP yet (%s); they run once a publish succeeds" % why)
    else:
        run_omemo_scenarios(t, info)
    rc = srv.stop()
    t.ok(rc == 0, "civitasd exits 0 after SIGTERM", lambda: srv.log_tail(30))


Tap(timeout=240).main(main)

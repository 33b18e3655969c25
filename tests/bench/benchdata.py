# tests/bench/benchdata.py: the data side of tests/bench/run: bench credentials (computed once per run),
# Prosody's account and roster files written directly, and the final table of figures and ratios.
"""Helpers for tests/bench/run (Debian's python3, standard library only).

  benchdata.py creds OUT.tsv CACHE PASSWORD ITER PREFIX:N [PREFIX:N ...]
      One SCRAM-SHA-1 credential per account, with its own random salt (32 hex characters, used as
      the salt's bytes). Writes "user salt iter stored_key_hex server_key_hex" lines to OUT.tsv and
      "salt_b64 iter salted_password_hex" lines to CACHE, the load generator's SaltedPassword cache,
      so PBKDF2 runs once per user per run (here), on both cores.
  benchdata.py prosody DATA_DIR DOMAIN CREDS.tsv [RPREFIX RN CONTACTS]
      Prosody 0.12 internal storage: DATA_DIR/<domain encoded>/accounts/USER.dat (stored_key,
      server_key, salt, iteration_count) and, for RPREFIX1..RPREFIX<RN>, roster/USER.dat with the
      ring of CONTACTS contacts (i±1..i±CONTACTS/2), subscription both. ejabberd imports the same
      directory with `ejabberdctl import_prosody`.
  benchdata.py table RESULTS [SERVER ...]
      RESULTS holds lines "SERVER RESULT scenario=... k=v ..." (loadgen output prefixed with the
      server's name). Prints the table: absolute figures per server and civitas/peer ratios (and
      civitas-basemods/civitas-base when both were measured: see run --baseline).
"""
import base64
import hashlib
import hmac
import multiprocessing
import os
import secrets
import shlex
import sys


def _one(args):
    user, password, iters = args
    salt = secrets.token_hex(16)
    sp = hashlib.pbkdf2_hmac("sha1", password.encode(), salt.encode(), iters)
    ck = hmac.new(sp, b"Client Key", hashlib.sha1).digest()
    sk = hashlib.sha1(ck).hexdigest()
    svk = hmac.new(sp, b"Server Key", hashlib.sha1).hexdigest()
    return user, salt, sk, svk, sp.hex()


def cmd_creds(out, cache, password, iters, specs):
    iters = int(iters)
    users = []
    for spec in specs:
        prefix, n = spec.split(":")
        users += ["%s%d" % (prefix, i) for i in range(1, int(n) + 1)]
    with multiprocessing.Pool(os.cpu_count() or 1) as pool:
        rows = pool.map(_one, [(u, password, iters) for u in users], chunksize=256)
    with open(out + ".tmp", "w") as f, open(cache, "a") as c:
        for user, salt, sk, svk, sp in rows:
            f.write("%s %s %d %s %s\n" % (user, salt, iters, sk, svk))
            c.write("%s %d %s\n" % (base64.b64encode(salt.encode()).decode(), iters, sp))
    os.replace(out + ".tmp", out)


def prosody_encode(s):
    """Prosody's datamanager file-name encoding: every non-alphanumeric byte as %xx."""
    return "".join(ch if ch.isalnum() and ch.isascii() else "%%%02x" % ord(ch) for ch in s)


def cmd_prosody(data_dir, domain, creds, rprefix=None, rn=0, contacts=0):
    host = os.path.join(data_dir, prosody_encode(domain))
    acc = os.path.join(host, "accounts")
    os.makedirs(acc, exist_ok=True)
    n = 0
    with open(creds) as f:
        for line in f:
            user, salt, iters, sk, svk = line.split()
            with open(os.path.join(acc, prosody_encode(user) + ".dat"), "w") as g:
                g.write('return {\n\t["iteration_count"] = %s;\n\t["salt"] = "%s";\n'
                        '\t["server_key"] = "%s";\n\t["stored_key"] = "%s";\n};\n' % (iters, salt, svk, sk))
            n += 1
    rn, contacts = int(rn), int(contacts)
    if rprefix and rn:
        ros = os.path.join(host, "roster")
        os.makedirs(ros, exist_ok=True)
        half = contacts // 2
        for i in range(rn):
            items = ['\t[false] = { ["version"] = 1; ["pending"] = {}; };']
            for d in list(range(1, half + 1)) + list(range(-half, 0)):
                j = (i + d) % rn
                items.append('\t["%s%d@%s"] = { ["subscription"] = "both"; ["groups"] = {}; };'
                             % (rprefix, j + 1, domain))
            with open(os.path.join(ros, prosody_encode("%s%d" % (rprefix, i + 1)) + ".dat"), "w") as g:
                g.write("return {\n" + "\n".join(items) + "\n};\n")
    print("prosody data: %d accounts, %d rosters in %s" % (n, rn, host))


# ---------------------------------------------------------------------------------------------
# the table

def parse_results(path):
    """{server: {scenario_key: {k: v}}}; scenario_key is e.g. 'idle:1000'."""
    res = {}
    with open(path) as f:
        for line in f:
            parts = line.split(None, 2)
            if len(parts) < 3 or parts[1] != "RESULT":
                continue
            kv = {}
            for tok in shlex.split(parts[2]):
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    kv[k] = v
            sc = kv.get("scenario", "?")
            key = sc + (":" + kv["n"] if sc == "idle" and "n" in kv else "")
            res.setdefault(parts[0], {})[key] = kv
    return res


def fnum(v, digits=0):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return v if v else "n/a"
    if digits == 0 and abs(x) >= 100:
        return "{:,.0f}".format(x)
    return "{:,.{}f}".format(x, digits if digits else 1)


# (label, scenario key, field, higher_is_better, digits)
ROWS = [
    ("login: logins/s", "login", "logins_per_s", True, 0),
    ("login: logins per server CPU-s", "login", "logins_per_server_cpu_s", True, 0),
    ("login: server CPU-s / wall-s", "login", "server_cpu_s/wall_s", None, 2),
    ("login: generator CPU-s / wall-s", "login", "gen_cpu_s/wall_s", None, 2),
    ("idle N: KB per session", "idle:N", "kb_per_session", False, 1),
    ("idle N: logins/s", "idle:N", "logins_per_s", True, 0),
    ("chat: msgs/s delivered (saturated)", "chat", "msgs_per_s", True, 0),
    ("chat: msgs per server CPU-s", "chat", "msgs_per_server_cpu_s", True, 0),
    ("chat: server CPU-s / wall-s", "chat", "server_cpu_s/wall_s", None, 2),
    ("chat: generator CPU-s / wall-s", "chat", "gen_cpu_s/wall_s", None, 2),
    ("chat: latency rate (50% of max), msg/s", "chat", "lat_rate", None, 0),
    ("chat: latency p50 ms", "chat", "p50_ms", False, 3),
    ("chat: latency p99 ms", "chat", "p99_ms", False, 3),
    ("chat: latency p99.9 ms", "chat", "p999_ms", False, 3),
    ("roster: available presences/s", "roster", "available_per_s", True, 0),
    ("roster: available per server CPU-s", "roster", "available_per_server_cpu_s", True, 0),
    ("roster: presence stanzas/s, all types", "roster", "presences_per_s", True, 0),
    ("roster: available received/expected", "roster", "available/expected", None, 0),
    ("roster: logins/s (roster get + presence)", "roster", "logins_per_s", True, 0),
]


def value(kv, field):
    if kv is None:
        return None
    if "/" in field:
        a, b = field.split("/")
        try:
            if a == "available":
                return "%s/%s" % (kv[a], kv[b])
            return float(kv[a]) / float(kv[b]) if float(kv[b]) > 0 else None
        except (KeyError, ValueError):
            return None
    if kv.get("error"):
        return "error:" + kv["error"]
    return kv.get(field)


def cmd_table(path, servers=None):
    res = parse_results(path)
    servers = servers or list(res)
    peers = [s for s in servers if s != "civitas"]
    # ratio columns (a, b): a/b; civitas against each other server, and with --baseline's third
    # instance also the core's change alone (this build with the old module set against the old build)
    ratios = [("civitas", p) for p in peers if "civitas" in servers]
    if "civitas-basemods" in servers and "civitas-base" in servers:
        ratios.append(("civitas-basemods", "civitas-base"))
    head = ["", *servers] + ["%s/%s" % r for r in ratios]
    rows = []
    idle_ns = sorted({int(k.split(":")[1]) for r in res.values() for k in r if k.startswith("idle:")})
    expanded = []
    for label, key, field, better, digits in ROWS:
        if key == "idle:N":     # one row per idle size measured
            expanded += [(label.replace("N", str(n)), "idle:%d" % n, field, better, digits) for n in idle_ns]
        else:
            expanded.append((label, key, field, better, digits))
    for label, key, field, better, digits in expanded:
        vals = [value(res.get(s, {}).get(key), field) for s in servers]
        row = [label] + [fnum(v, digits) if v is not None else "n/a" for v in vals]
        for a, b in ratios:
            c = value(res.get(a, {}).get(key), field)
            v = value(res.get(b, {}).get(key), field)
            try:
                row.append("%.2fx" % (float(c) / float(v)) if better is not None else "")
            except (TypeError, ValueError, ZeroDivisionError):
                row.append("n/a" if better is not None else "")
        rows.append(row)
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i])
                               for i, c in enumerate(r))
    print(line(head))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    bound = None
    for s in res.values():
        if "bound" in s:
            bound = s["bound"]
    if bound:
        print()
        print("bound (one core, in-process, %s): TLS handshake server side %s us + SCRAM-SHA-1 with stored keys"
              " %s us -> %s logins/s; if the server ran PBKDF2-4096 per login (plaintext storage): %s logins/s."
              % (bound.get("tls"), bound.get("tls_server_us"), bound.get("scram_server_us"),
                 fnum(bound.get("bound_logins_per_s")), fnum(bound.get("bound_plaintext_logins_per_s"))))
        print("generator side per login: TLS client %s us (cached SaltedPassword: at most %s logins/s per"
              " generator core; %s without the cache)."
              % (bound.get("tls_client_us"), fnum(bound.get("client_cached_logins_per_s")),
                 fnum(bound.get("client_uncached_logins_per_s"))))
    for s in servers:
        for key, kv in sorted(res.get(s, {}).items()):
            problems = [k + "=" + kv[k] for k in ("failed", "dropped", "error") if kv.get(k) not in (None, "0")]
            try:
                busy = float(kv["other_cpu_s"]) / float(kv["wall_s"])
                if busy > 0.15:
                    problems.append("other processes used %.2f cores meanwhile (figures disturbed)" % busy)
            except (KeyError, ValueError, ZeroDivisionError):
                pass
            if problems:
                print("note: %s %s: %s" % (s, key, " ".join(problems)))


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "creds":
        cmd_creds(args[0], args[1], args[2], args[3], args[4:])
    elif cmd == "prosody":
        cmd_prosody(*args)
    elif cmd == "table":
        cmd_table(args[0], args[1:] or None)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

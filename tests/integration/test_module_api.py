#!/usr/bin/python3
# tests/integration/test_module_api.py: the module API as an administrator meets it (server/module.h):
# option types with their FILE:LINE errors, per-host values, `civitasd --check` listing every module's
# effective options, dependencies checked at --check and at start with modules started after what they
# depend on, and the one list of standard modules (modules/standard.list) matching the README's table.
# Uses the test-only modules in tests/modules/ (make check builds them), found via CIVITAS_MODULE_DIR.
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Tap, Server, build_dir, find_program  # noqa: E402

SRC = os.environ.get("CIVITAS_SRCDIR") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
HOSTS = ("kaarst.example", "meerbusch.example")


def standard_list():
    with open(os.path.join(SRC, "modules", "standard.list")) as f:
        return [l.split("#")[0].strip() for l in f if l.split("#")[0].strip()]


def readme_modules(t):
    """README's module table: every module named in its first column, in order."""
    with open(os.path.join(SRC, "README.md")) as f:
        text = f.read()
    m = re.search(r"^\| module \| what \|.*\n\|[-|]+\|\n((?:\|.*\n)+)", text, re.M)
    t.ok(m, "README.md has the module table (| module | what | ...)")
    names = []
    for row in (m.group(1).splitlines() if m else []):
        names += re.findall(r"`([a-z0-9_]+)`", row.split("|")[1])
    return names


def readme_table(t):
    listed, documented = standard_list(), readme_modules(t)
    t.ok(listed, "modules/standard.list names the standard modules")
    t.is_(sorted(documented), sorted(listed),
          "the README's module table names exactly the modules of modules/standard.list, each once")
    for name in listed:
        t.ok(os.path.exists(os.path.join(SRC, "modules", "mod_%s.c" % name)),
             "standard module %s has its source modules/mod_%s.c" % (name, name))


def module_dir():
    """A directory with every built module, standard and test-only, as CIVITAS_MODULE_DIR."""
    d = tempfile.mkdtemp(prefix="civitas-mods-")
    b = build_dir()
    found = glob.glob(os.path.join(b, "modules", ".libs", "mod_*.so")) + \
        glob.glob(os.path.join(b, "tests", "modules", ".libs", "mod_test_*.so"))
    for p in found:
        os.symlink(p, os.path.join(d, os.path.basename(p)))
    return d, found


def check(path):
    r = subprocess.run([find_program("civitasd"), "--config", path, "--check"], capture_output=True, text=True,
                       timeout=30)
    return r.returncode, r.stdout + r.stderr


def write(srv, name, text):
    p = os.path.join(srv.dir, name)
    with open(p, "w") as f:
        f.write(text)
    return p


def option_errors(t, srv):
    base = srv.config_text().replace(srv.extra_yaml, "")
    # each: section text (after "test_types:\n"), the line of the error within it (1-based), and the
    # message after "FILE:LINE: "
    cases = [
        ("  count: 101\n", 1, "test_types.count: 101 is above the maximum 100"),
        ("  flag: maybe\n", 1, "test_types.flag: expected true or false (yes/no, on/off), got 'maybe'"),
        ("  greeting: \"\"\n", 1, "test_types.greeting: expected a string, got an empty one"),
        ("  greeting: a-greeting-longer-than-20\n", 1,
         "test_types.greeting: 'a-greeting-longer-than-20' is 25 bytes long; allowed: 1 to 20"),
        ("  mode: strict\n", 1, "test_types.mode: 'strict' is not one of off, warn, require"),
        ("  peers: x.example\n", 1,
         "test_types.peers: expected a list of strings ([a, b] or '- a' lines), got 'x.example'"),
        ("  peers: [a, b, c, d]\n", 1, "test_types.peers: 4 entries; allowed: 0 to 3"),
        ("  retention: 2y\n", 1, "test_types.retention: expected a duration (seconds, or a whole number with s, m, "
         "h or d: 30s, 5m, 72h, 14d), got '2y'"),
        ("  retention: 366d\n", 1, "test_types.retention: 366d is above the maximum 365d"),
        ("  retention: 59\n", 1, "test_types.retention: 59 is below the minimum 1m"),
        ("  quota: 10MB\n", 1, "test_types.quota: expected a size (bytes, or a whole number with K, M, G or T, also "
         "written KiB, MiB, GiB, TiB, binary: 512K, 10M, 1G), got '10MB'"),
        ("  quota: 2T\n", 1, "test_types.quota: 2T is above the maximum 1TiB"),
        ("  colour: red\n", 1, "unknown key 'colour' in section 'test_types'"),
        ("  hosts:\n    neuss.example: {count: 1}\n", 2,
         "test_types.hosts: 'neuss.example' is not one of this server's hosts (hosts:)"),
        ("  hosts:\n    kaarst.example:\n      quota: 1M\n", 3,
         "test_types.hosts.kaarst.example: 'quota' cannot differ per host "
         "(per host: count, greeting, mode, peers, retention)"),
        ("  hosts:\n    kaarst.example:\n      count: 500\n", 3,
         "test_types.hosts.kaarst.example.count: 500 is above the maximum 100"),
        ("  hosts: [kaarst.example]\n", 1, "test_types.hosts: expected a mapping of host names to options "
         "(hosts: {kaarst.example: {key: value}})"),
    ]
    for i, (section, rel, msg) in enumerate(cases):
        text = base + "test_types:\n" + section
        line = base.count("\n") + 1 + rel
        p = write(srv, "bad-option-%d.yml" % i, text)
        rc, out = check(p)
        t.ok(rc == 1 and ("%s:%d: %s" % (p, line, msg)) in out.splitlines(),
             "--check: %s -> exit 1 with '%s:%d: %s'" % (section.strip().replace("\n", " "), "FILE", line, msg),
             out)
    # the same checks at start: the server refuses to start, with the same line
    p = write(srv, "bad-at-start.yml", base + "test_types:\n  hosts:\n    meerbusch.example: {retention: 1y}\n")
    r = subprocess.run([find_program("civitasd"), "--config", p], capture_output=True, text=True, timeout=30,
                       cwd=srv.dir)
    msg = ("%s:%d: test_types.hosts.meerbusch.example.retention: expected a duration" % (p, base.count("\n") + 3))
    t.ok(r.returncode == 1 and msg in r.stdout + r.stderr and "ready" not in r.stdout + r.stderr,
         "start: a bad per-host value stops the start with its FILE:LINE: message", r.stdout + r.stderr)
    base = base.replace(srv.modules_yaml, "")      # the standard modules, offline among them
    text = base + "offline:\n  hosts:\n    kaarst.example: {max_messages: 5}\n"
    p = write(srv, "offline-per-host.yml", text)
    rc, out = check(p)
    t.ok(rc == 1 and ("%s:%d: offline.hosts: no option of module 'offline' can differ per host"
                      % (p, base.count("\n") + 2)) in out.splitlines(),
         "--check: hosts: in the section of a module without per-host options is an error", out)


def check_listing(t, srv):
    text = srv.config_text().replace(srv.extra_yaml, "") + ("test_types:\n  count: 7\n  greeting: \"hi \\\"there\\\"\"\n  peers: []\n"
                                "  retention: 72h\n  quota: 512K\n"
                                "  hosts:\n    meerbusch.example: {count: 9, mode: require, retention: 90}\n")
    p = write(srv, "listing.yml", text)
    rc, out = check(p)
    lines = out.splitlines()
    t.ok(rc == 0 and lines and lines[0] == p + ": configuration is usable", "--check: the config is usable", out)
    want = ('test_types: {count: 7, flag: false, greeting: "hi \\"there\\"", motd: ~, mode: warn, peers: [], '
            'retention: 3d, quota: 512KiB, hosts: {meerbusch.example: {count: 9, mode: require, retention: 90s}}}')
    t.ok(want in lines, "--check lists test_types' effective options, defaults included, and the host's own", out)
    t.ok("test_needs: {}" in lines and "disco: {}" in lines, "--check lists modules without options too", out)
    t.ok(lines.index(want) < lines.index("test_needs: {}") if want in lines and "test_needs: {}" in lines else False,
         "--check lists the modules in load order: test_types before test_needs, which depends on it", out)

    p = write(srv, "standard.yml", srv.config_text().replace(srv.extra_yaml, "").replace(srv.modules_yaml, ""))
    rc, out = check(p)
    lines = out.splitlines()
    listed = [l.split(":")[0] for l in lines[2:]]
    t.is_(listed, standard_list(), "without modules:, --check lists every standard module, in the list's order")
    t.ok("offline: {max_messages: 1000, max_age_days: 30}" in lines,
         "--check shows the defaults of a module the config does not mention", out)


def dependencies(t, srv):
    base = srv.config_text().replace(srv.extra_yaml, "")
    mods = "modules: [disco, test_needs]\n"
    p = write(srv, "missing-dep.yml", base.replace(srv.modules_yaml, mods))
    rc, out = check(p)
    msg = "module 'test_needs' depends on module 'test_types', which is not loaded (add 'test_types' to modules:)"
    t.ok(rc == 1 and msg in out.splitlines(), "--check: a module whose dependency is not loaded -> exit 1, "
         "naming both", out)
    r = subprocess.run([find_program("civitasd"), "--config", p], capture_output=True, text=True, timeout=30,
                       cwd=srv.dir)
    t.ok(r.returncode == 1 and msg in (r.stdout + r.stderr), "start: the same dependency error, exit 1",
         r.stdout + r.stderr)

    p = write(srv, "cycle.yml", base.replace(srv.modules_yaml, "modules: [test_loop_a, disco, test_loop_b]\n"))
    rc, out = check(p)
    t.ok(rc == 1 and "modules depend on each other in a cycle: test_loop_a test_loop_b" in out.splitlines(),
         "--check: modules that depend on each other -> exit 1, naming them", out)


def running(t, srv):
    """Config order test_needs before test_types: the server still starts test_types first."""
    log = srv.log().splitlines()
    first_types = next((i for i, l in enumerate(log) if "test_types" in l and "load default" in l), None)
    needs = next((i for i, l in enumerate(log) if "test_needs" in l and "loaded" in l), None)
    t.ok(first_types is not None and needs is not None and first_types < needs,
         "start: test_types is loaded before test_needs although the config names test_needs first")
    t.ok(srv.wait_log(r"load default: count=7 flag=1 greeting=hi motd=\(null\) mode=warn "
                      r"peers=\[a\.example,b\.example\] retention=259200 quota=524288$"),
         "the module's struct holds the section's values and the defaults (string NULL without default, "
         "list default, 72h in seconds, 512K in bytes)")
    t.ok(srv.wait_log(r"load kaarst\.example: count=7 flag=1 greeting=hi .* mode=warn .* retention=259200 "),
         "module_host_conf: a host without its own values gets the section's")
    t.ok(srv.wait_log(r"load meerbusch\.example: count=50 flag=1 greeting=moin motd=\(null\) mode=require "
                      r"peers=\[x\.example\] retention=3600 quota=524288$"),
         "module_host_conf: a host's own values (int, string, enum, list, duration) override the section's")
    # SIGHUP: the config is read again (and the old one freed); the module keeps what it was started
    # with (modules change on restart), so the strings the core gave it must not point into the old one.
    with open(srv.config, "w") as f:
        f.write(srv.config_text().replace("greeting: hi", "greeting: changed"))
    mark = srv.log_mark()
    srv.proc.send_signal(signal.SIGHUP)
    t.ok(srv.wait_log("reloaded configuration", start=mark), "SIGHUP reloads the config")
    mark = srv.log_mark()
    rc = srv.stop()
    t.is_(rc, 0, "civitasd exits 0 after SIGTERM")
    after = srv.log().splitlines()[mark:]
    t.ok(any(re.search(r"unload default: count=7 flag=1 greeting=hi motd=\(null\) mode=warn "
                       r"peers=\[a\.example,b\.example\]", l) for l in after) and
         any(re.search(r"unload meerbusch\.example: count=50 flag=1 greeting=moin .* peers=\[x\.example\]", l)
             for l in after),
         "after a reload, the module's strings and lists (core-owned copies) are intact until its unload")


def main(t):
    t.run(readme_table, t)
    d, found = module_dir()
    if not any("mod_test_types" in p for p in found):
        t.skip("module API with test modules", "tests/modules not built (run through make check)")
        return
    os.environ["CIVITAS_MODULE_DIR"] = d
    extra = ("test_types:\n  count: 7\n  flag: true\n  greeting: hi\n  retention: 72h\n  quota: 512K\n"
             "  hosts:\n    meerbusch.example:\n      count: 50\n      greeting: moin\n      mode: require\n"
             "      peers: [x.example]\n      retention: 1h\n")
    srv = Server(t, hosts=HOSTS, modules=["test_needs", "disco", "test_types"], extra_yaml=extra, start=False)
    srv.modules_yaml = "modules:\n  - test_needs\n  - disco\n  - test_types\n"
    assert srv.modules_yaml in srv.config_text()
    t.run(option_errors, t, srv)
    t.run(check_listing, t, srv)
    t.run(dependencies, t, srv)
    with srv:
        srv.start()
        t.run(running, t, srv)


if __name__ == "__main__":
    Tap().main(main)

#!/usr/bin/python3
"""The layout of the core (issue 10): server/'s include graph has no cycle, civitasd exports exactly
the module API (built with -fvisibility=hidden; CIVITAS_API in the headers), and modules see only
module.h. TAP on stdout."""
import glob
import os
import re
import subprocess
import sys

src = os.environ.get("CIVITAS_SRCDIR", os.path.join(os.path.dirname(__file__), "..", ".."))
build = os.environ.get("CIVITAS_BUILDDIR", src)
script = os.path.join(src, "scripts", "include-graph")
civitasd = os.path.join(build, "civitasd")
n = 0


def ok(cond, name, diag=""):
    global n
    n += 1
    print(("ok %d - %s" if cond else "not ok %d - %s") % (n, name))
    if not cond and diag:
        for line in str(diag).splitlines():
            print("# " + line)


print("1..5")
r = subprocess.run([script], capture_output=True, text=True)
ok(r.returncode == 0, "the include graph of server/ has no cycle", r.stdout + r.stderr)

r = subprocess.run([script, "--exports", civitasd], capture_output=True, text=True)
ok(r.returncode == 0 and "all declared under CIVITAS_API" in r.stdout,
   "civitasd exports only what is declared under CIVITAS_API", r.stdout + r.stderr)

# Every core symbol a module uses is exported (else dlopen fails with "undefined symbol").
def syms(args):
    out = subprocess.run(["nm"] + args, capture_output=True, text=True).stdout
    return {l.split()[-1] for l in out.splitlines() if l.split()}

exported = syms(["-D", "--defined-only", civitasd])
core = syms(["--defined-only", civitasd])
# the standard modules and the test modules (tests/modules, built by make check)
sos = sorted(glob.glob(os.path.join(build, "modules", ".libs", "mod_*.so")) +
             glob.glob(os.path.join(build, "tests", "modules", ".libs", "mod_*.so")))
missing = set()
for so in sos:
    missing |= (syms(["-u", so]) & core) - exported
ok(sos and not missing, "every core function a module uses is exported (%d modules)" % len(sos),
   " ".join(sorted(missing)))

bad = []
for f in sorted(glob.glob(os.path.join(src, "modules", "*.c")) + glob.glob(os.path.join(src, "tests", "modules", "*.c"))):
    for i, line in enumerate(open(f, encoding="utf-8"), 1):
        m = re.match(r'\s*#\s*include\s*"([^"]+)"', line)
        if m and m.group(1) != "module.h":
            bad.append("%s:%d: %s" % (os.path.basename(f), i, m.group(1)))
ok(not bad, "modules include only module.h (and system headers)", "\n".join(bad))

# module.h re-exports nothing internal: a module that names the config, SCRAM, the server object,
# the account creds or a test hook does not compile (and the API itself does).
cc = os.environ.get("CC", "cc")
def compiles(body):
    r = subprocess.run([cc, "-std=gnu11", "-fsyntax-only", "-Werror=implicit-function-declaration",
                        "-I", os.path.join(src, "server"), "-I", os.path.join(build, "server"), "-x", "c", "-"],
                       input='#include "module.h"\n' + body + "\n", capture_output=True, text=True)
    return r.returncode == 0, r.stderr
internal = ["config_t *c;", "cfg_host_t *h;", "scram_hash_t h;", "int f(void) { return srv != 0; }",
            "int f(void) { return storage_account_get(0, 0, 0, 0, 0); }",
            "int f(void) { return storage_set_page_limit_for_test(0, 0); }",
            "int f(void) { return cfg_get_int(0, 0, 0, 0, 0, 0, 0); }",
            "int f(void) { return scram_digest(0, 0, 0, 0); }"]
api_ok, diag = compiles("strlist_t l; storage_t *s; int f(void) { unsigned char d[32]; "
                        "return digest_sha256(\"\", 0, d) + (module_storage(0) == 0); }")
seen = [b for b in internal if compiles(b)[0]]
ok(api_ok and not seen, "module.h declares the API and nothing internal (config, SCRAM, srv, creds, test hooks)",
   diag + "\n".join(seen))
sys.exit(0)

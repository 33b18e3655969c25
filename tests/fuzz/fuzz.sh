#!/bin/sh
# tests/fuzz/fuzz.sh: builds the libFuzzer targets with clang (outside the autotools build, so that
# configure never needs clang) and runs each for a bounded time. Called by `make fuzz` / `make fuzz-run`.
#
#   fuzz.sh build SRCDIR BUILDDIR            compile into BUILDDIR/tests/fuzz/out/
#   fuzz.sh run SRCDIR BUILDDIR SECONDS      run every target SECONDS seconds from its seed corpus
#                                            (tests/fuzz/corpus/TARGET, read only; what the run finds
#                                            goes to BUILDDIR/tests/fuzz/out/corpus/TARGET)
#
# Environment: FUZZ_CC (default clang), FUZZ_CPPFLAGS / FUZZ_LIBS (the libraries' flags; default from
# pkg-config), FUZZ_TARGETS (default: all nine). `run` prints "PASS: fuzz_x" or "FAIL: fuzz_x" per target
# and exits 1 when any target crashed, leaked, timed out or broke an invariant; the crashing input is
# kept as BUILDDIR/tests/fuzz/out/crash-fuzz_x-* and the log as BUILDDIR/tests/fuzz/out/fuzz_x.log.
# Reproduce a crash with: BUILDDIR/tests/fuzz/out/fuzz_x BUILDDIR/tests/fuzz/out/crash-fuzz_x-<hash>
set -e
cmd=$1 src=$2 build=$3
[ -n "$cmd" ] && [ -d "$src" ] && [ -n "$build" ] || { echo "usage: $0 build|run SRCDIR BUILDDIR [SECONDS]" >&2; exit 2; }
src=$(cd "$src" && pwd)
mkdir -p "$build/tests/fuzz/out"
out=$(cd "$build/tests/fuzz/out" && pwd)
targets=${FUZZ_TARGETS:-"fuzz_xmlstream fuzz_jid fuzz_scram fuzz_config fuzz_stanza fuzz_modules fuzz_omemo_bundle fuzz_sasl2 fuzz_http fuzz_websocket"}
cc=${FUZZ_CC:-clang}
core="util strlist codec log jid xml scram config caps_ver sasl2_req"
# fuzz_modules links the whole server but main.c, and every standard module
# (every other server/*.c but main.c and ctl.c, so that a new core file is linked without a change here)
server=$(for f in "$src"/server/*.c; do
    m=$(basename "$f" .c)
    case " $core main ctl " in *" $m "*) ;; *) printf '%s ' "$m" ;; esac
done)
# the standard modules: the one list, modules/standard.list (scripts/gen-modules also writes the C list)
modules=$(sh "$src/scripts/gen-modules" names "$src/modules/standard.list")

build() {
    command -v "$cc" >/dev/null 2>&1 || { echo "fuzz.sh: $cc not found (scripts/install-deps --tests installs clang)" >&2; exit 2; }
    cppflags=${FUZZ_CPPFLAGS-$(pkg-config --cflags expat openssl yaml-0.1 libidn libidn2)}
    libs=${FUZZ_LIBS-$(pkg-config --libs expat openssl yaml-0.1 libidn libidn2)}
    san="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
    sh "$src/scripts/gen-modules" def "$src/modules/standard.list" >"$out/standard_modules.def"
    cflags="-std=gnu11 -g -O1 -Wall -Wextra -Werror -Wno-unused-parameter $san -I$src/server -I$out $cppflags"
    mkdir -p "$out/obj"
    objs=""
    for m in $core; do
        o="$out/obj/$m.o"
        # rebuild when the source or any header of the core is newer than the object
        stale=0
        [ -f "$o" ] || stale=1
        for d in "$src/server/$m.c" "$src"/server/*.h; do [ "$d" -nt "$o" ] && stale=1; done
        if [ $stale = 1 ]; then
            echo "  FUZZCC   server/$m.c"
            $cc $cflags -fsanitize=fuzzer-no-link -c "$src/server/$m.c" -o "$o"
        fi
        objs="$objs $o"
    done
    for t in $targets; do
        echo "  FUZZLD   tests/fuzz/$t"
        if [ "$t" = fuzz_modules ]; then
            build_modules_target
        elif [ "$t" = fuzz_http ] || [ "$t" = fuzz_websocket ]; then
            build_http_target "$t"
        elif [ "$t" = fuzz_omemo_bundle ]; then
            # mod_omemo's checks link libsignal-protocol-c (and OpenSSL, in $libs) themselves
            $cc $cflags -I"$src/modules" $(pkg-config --cflags libsignal-protocol-c) -fsanitize=fuzzer \
                "$src/tests/fuzz/$t.c" $objs $libs \
                $(pkg-config --libs libsignal-protocol-c) -o "$out/$t"
        else
            $cc $cflags -fsanitize=fuzzer "$src/tests/fuzz/$t.c" $objs $libs -o "$out/$t"
        fi
    done
}

# fuzz_modules: the core objects above, the rest of the server, and each module with its
# descriptor renamed so that all of them link into one program.
xcpp=$(pkg-config --cflags libevent libevent_openssl sqlite3 libunbound libsignal-protocol-c)
# libhttp-parser-dev and libwslay-dev have no .pc file (server/http.c, server/websocket.c)
xlibs="$(pkg-config --libs libevent libevent_openssl sqlite3 libunbound libsignal-protocol-c) -lhttp_parser -lwslay"
defs="-DPACKAGE_VERSION=\"fuzz\" -DMODULEDIR=\"/nonexistent\""
mobjs=""
# the rest of the server (every server/*.c but main.c and ctl.c), compiled once per run
build_server_objs() {
    [ -n "$mobjs" ] && return 0
    for m in $server; do
        o="$out/obj/$m.o"
        echo "  FUZZCC   server/$m.c"
        $cc $cflags $xcpp $defs -fsanitize=fuzzer-no-link -c "$src/server/$m.c" -o "$o"
        mobjs="$mobjs $o"
    done
}

build_modules_target() {
    build_server_objs
    modobjs=""
    for m in $modules; do
        o="$out/obj/mod_$m.o"
        echo "  FUZZCC   modules/mod_$m.c"
        $cc $cflags $xcpp $defs -Dcivitas_module=civitas_module_$m -fsanitize=fuzzer-no-link -c "$src/modules/mod_$m.c" -o "$o"
        modobjs="$modobjs $o"
    done
    $cc $cflags $xcpp -fsanitize=fuzzer "$src/tests/fuzz/fuzz_modules.c" $objs $mobjs $modobjs $libs $xlibs -ldl -o "$out/fuzz_modules"
}

# fuzz_http: the HTTP server's parsing through http_accept, with the core objects and the server's;
# fuzz_websocket (WebSocket framing into the client stream) links the same way
build_http_target() {
    build_server_objs
    $cc $cflags $xcpp -fsanitize=fuzzer "$src/tests/fuzz/$1.c" $objs $mobjs $libs $xlibs -ldl -o "$out/$1"
}

run() {
    secs=${1:-30}
    failed=0
    for t in $targets; do
        [ -x "$out/$t" ] || { echo "fuzz.sh: $out/$t is not built (make fuzz)" >&2; exit 2; }
        work="$out/corpus/$t"           # new inputs found go here, never into the source tree
        mkdir -p "$work"
        dict=""
        case $t in fuzz_xmlstream|fuzz_stanza|fuzz_modules|fuzz_omemo_bundle|fuzz_websocket) dict="-dict=$src/tests/fuzz/xml.dict" ;; esac
        case $t in fuzz_http) dict="-dict=$src/tests/fuzz/http.dict" ;; esac
        case $t in fuzz_xmlstream|fuzz_jid|fuzz_omemo_bundle|fuzz_http) maxlen=16384 ;; *) maxlen=8192 ;; esac
        rm -f "$out/crash-$t-"*
        # -timeout: one input taking 10 s is a bug (quadratic parsing); -rss_limit_mb: so is 2 GB
        if "$out/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=$maxlen \
                -print_final_stats=1 -artifact_prefix="$out/crash-$t-" $dict \
                "$work" "$src/tests/fuzz/corpus/$t" >"$out/$t.log" 2>&1; then
            echo "PASS: $t ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$t.log" | grep -o '[0-9]*$') runs in ${secs} s)"
        else
            failed=1
            echo "FAIL: $t (log: $out/$t.log)"
            grep -E 'ERROR:|invariant failed|runtime error|Test unit written' "$out/$t.log" | head -5 | sed 's/^/    /'
        fi
    done
    return $failed
}

case $cmd in
build) build ;;
run) run "$4" ;;
*) echo "fuzz.sh: unknown command $cmd" >&2; exit 2 ;;
esac

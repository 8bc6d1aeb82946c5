#!/bin/sh
# Type-checks the crate for the declared targets this machine cannot build
# (package.json napi.targets: Windows, macOS, arm64, musl), without their
# standard library installed: `cargo check -Zbuild-std` compiles std from
# source for each target first. No linking, so no foreign C toolchain: C
# objects (ring) are stubbed, `check` never links them.
#
#   scripts/check-targets.sh [target ...]     (default: every non-host target)
#
# The std source comes from, in this order:
#   1. a nightly toolchain with the rust-src component (`rustup component add
#      rust-src --toolchain nightly`), used as is;
#   2. Debian's rustc-web packages (rustc + its rust-web-src; 1.96 today), fetched
#      with `apt-get download` into $CHECK_TARGETS_TOOLS (default
#      $CARGO_TARGET_DIR/check-targets-tools, else target/…) and unpacked
#      there, never installed; run with RUSTC_BOOTSTRAP=1 (for -Zbuild-std).
#      A rustc-web below 1.89 (Debian had 1.85 for a while) is below some
#      dependencies' MSRV: then `let_chains` and `unsigned_is_multiple_of`
#      are enabled for crates.io crates, and the check runs against a copy
#      of Cargo.lock with an older `time` (a test dependency); Cargo.lock
#      itself is not touched. The aes crate is always checked on its
#      portable backend.
#
# Checks `--lib --bins --tests`, then `--lib --features node` (the napi
# glue), each with warnings denied in this crate. Exit status: non-zero if
# any target fails. Cost here (2 cores): ~2-4 min per target the first time
# (std from source), seconds once cached.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
targets=${*:-"x86_64-pc-windows-msvc x86_64-apple-darwin aarch64-apple-darwin aarch64-unknown-linux-gnu x86_64-unknown-linux-musl aarch64-unknown-linux-musl"}
target_dir=${CARGO_TARGET_DIR:-$here/target}
tools=${CHECK_TARGETS_TOOLS:-$target_dir/check-targets-tools}
stub="$tools/stub"
mkdir -p "$stub"

# A C compiler / archiver that only creates the file it is asked for.
cat > "$stub/cc" <<'EOF'
#!/bin/sh
out=""
prev=""
for a in "$@"; do
  case "$a" in
    -Fo*|/Fo*) out="${a#???}" ;;
    -out:*|/OUT:*|/out:*) out="${a#*:}" ;;
  esac
  [ "$prev" = "-o" ] && out="$a"
  case "$prev" in crs|rcs|cq|cqs|rc|-crs|-rcs) out="$a" ;; esac
  prev="$a"
done
[ -n "$out" ] && : > "$out"
exit 0
EOF
chmod +x "$stub/cc"

if rustup component list --installed --toolchain nightly 2>/dev/null | grep -q '^rust-src'; then
  echo "check-targets: nightly with rust-src"
  cargo_cmd="cargo +nightly"
  flags=""
else
  deb="$tools/debian"
  if [ ! -x "$deb/usr/bin/rustc" ]; then
    echo "check-targets: no rust-src for any rustup toolchain; fetching Debian's rustc-web into $deb"
    mkdir -p "$deb/debs"
    # The versioned library packages are named after rustc's and LLVM's
    # versions: asked from apt, the names of today as a fallback.
    apt-cache show rustc-web >/dev/null 2>&1 || apt-get update >/dev/null
    std=$(apt-cache depends libstd-rust-web-dev | awk '/Depends: libstd-rust-web-[0-9]/{print $2; exit}')
    llvm=$(apt-cache depends "${std:-libstd-rust-web-1.85}" | awk '/Depends: libllvm[0-9]/{print $2; exit}')
    pkgs="rustc-web cargo-web rust-web-src libstd-rust-web-dev ${std:-libstd-rust-web-1.85} ${llvm:-libllvm19} libhttp-parser2.9 libpcre3"
    (cd "$deb/debs" && apt-get download -q $pkgs >/dev/null)
    for d in "$deb"/debs/*.deb; do dpkg-deb -x "$d" "$deb"; done
    rm -rf "$deb/debs"
  fi
  export LD_LIBRARY_PATH="$deb/usr/lib/x86_64-linux-gnu:$deb/usr/lib:$deb/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # Debian's cargo links libgit2 (and its mbedtls), which a machine without
  # Debian's own cargo lacks: unpacked beside it on first need.
  if ! "$deb/usr/bin/cargo" -V >/dev/null 2>&1; then
    git2=$(apt-cache depends cargo-web | awk '/Depends: libgit2-/{print $2; exit}')
    mkdir -p "$deb/debs"
    (cd "$deb/debs" && apt-get download -q ${git2:-libgit2-1.5} libmbedcrypto7 libmbedtls14 libmbedx509-1 >/dev/null)
    for d in "$deb"/debs/*.deb; do dpkg-deb -x "$d" "$deb"; done
    rm -rf "$deb/debs"
    "$deb/usr/bin/cargo" -V >/dev/null || { echo "check-targets: Debian's cargo does not start" >&2; exit 1; }
  fi
  export RUSTC="$deb/usr/bin/rustc" RUSTDOC="$deb/usr/bin/rustdoc" RUSTC_BOOTSTRAP=1
  cargo_cmd="$deb/usr/bin/cargo"
  flags=""
  minor=$("$RUSTC" -V | sed -n 's/^rustc 1\.\([0-9]*\).*/\1/p')
  if [ "${minor:-0}" -lt 89 ]; then
    # An older rustc-web (1.85 was Debian's for a while) is below some
    # dependencies' MSRV: let_chains and unsigned_is_multiple_of enabled
    # for crates.io crates, and the test dependencies' `time` (through
    # rcgen), which needs 1.87's std, resolved against a copy of
    # Cargo.lock with an older `time` (Cargo.lock itself is left as is).
    cat > "$stub/rustc-wrap" <<'EOF'
#!/bin/sh
rustc="$1"; shift
case "$*" in
  *"/registry/src/"*) exec "$rustc" "$@" -Zcrate-attr='feature(let_chains)' -Zcrate-attr='feature(unsigned_is_multiple_of)' ;;
  *) exec "$rustc" "$@" ;;
esac
EOF
    chmod +x "$stub/rustc-wrap"
    export RUSTC_WRAPPER="$stub/rustc-wrap"
    mkdir -p "$tools/lock"
    cp Cargo.lock "$tools/lock/Cargo.lock"
    lock="-Zunstable-options --lockfile-path $tools/lock/Cargo.lock"
    $cargo_cmd update -q -p time --precise 0.3.44 $lock
    flags="--ignore-rust-version $lock"
  fi
  echo "check-targets: $("$RUSTC" -V) from Debian's rustc-web"
fi

export CARGO_TARGET_DIR="$target_dir/check-targets"
export RUSTFLAGS='--cfg aes_backend="soft" -Dwarnings'
failed=""
for t in $targets; do
  v=$(echo "$t" | tr '-' '_')
  export "CC_$v=$stub/cc" "AR_$v=$stub/cc"
  start=$(date +%s)
  ok=1
  $cargo_cmd check -q -Zbuild-std=std,panic_abort --target "$t" $flags --lib --bins --tests || ok=0
  $cargo_cmd check -q -Zbuild-std=std,panic_abort --target "$t" $flags --lib --features node || ok=0
  secs=$(( $(date +%s) - start ))
  if [ $ok = 1 ]; then echo "check-targets: $t ok (${secs}s)"; else echo "check-targets: $t FAILED (${secs}s)"; failed="$failed $t"; fi
done
if [ -n "$failed" ]; then
  echo "check-targets: failed:$failed"
  exit 1
fi

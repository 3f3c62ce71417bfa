#!/usr/bin/env bash
# Checks a dualseal .deb as a user would meet it: its file list (binaries, both units, the
# conffile, a man page per subcommand, completions for three shells, docs), lintian, the
# maintainer scripts (nothing enabled or started on install), and, unpacked into a scratch
# root, the binaries themselves (`dualseald validate` on the shipped config and on the
# Kubernetes ConfigMap's, `dualsealctl --help`), the man pages (rendered without warnings),
# the completions (loaded by bash), and the units (`systemd-analyze verify` and exposure
# <= 1.5 against the unpacked tree).
#
#   scripts/check-package.sh target/debian/dualseal_0.1.0-1_amd64.deb
#
# Installs lintian and systemd (Debian) when missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEB="$(realpath "$1")"
fail() { echo "check-package: $*" >&2; exit 1; }
need=()
command -v lintian >/dev/null 2>&1 || need+=(lintian)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v man >/dev/null 2>&1 || need+=(man-db)
if ((${#need[@]})); then
    echo "installing ${need[*]} (Debian)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
SCRATCH="$TMP/root"

# --- the file list -----------------------------------------------------------------------------
dpkg-deb -c "$DEB" | awk '{print $6}' | sed 's#^\./#/#' | grep -v '/$' | sort >"$TMP/files"
echo "$(wc -l <"$TMP/files") files in $(basename "$DEB")"
expect=(
    /usr/bin/dualseald /usr/bin/dualsealctl
    /usr/lib/systemd/system/dualseald.service /usr/lib/systemd/system/dualseald@.service
    /etc/dualseal/dualseal.toml /usr/lib/sysusers.d/dualseal.conf
    /usr/share/man/man1/dualsealctl.1.gz /usr/share/man/man8/dualseald.8.gz
    /usr/share/man/man5/dualseal.toml.5.gz
    /usr/share/bash-completion/completions/dualsealctl /usr/share/bash-completion/completions/dualseald
    /usr/share/zsh/vendor-completions/_dualsealctl /usr/share/zsh/vendor-completions/_dualseald
    /usr/share/fish/vendor_completions.d/dualsealctl.fish /usr/share/fish/vendor_completions.d/dualseald.fish
    /usr/share/doc/dualseal/README.md /usr/share/doc/dualseal/copyright
    /usr/share/doc/dualseal/examples/dualseal.example.toml
    /usr/share/doc/dualseal/examples/prometheus/dualseal.rules.yml
    /usr/share/doc/dualseal/examples/grafana/dualseal.json
)
for f in "${expect[@]}"; do
    grep -qxF "$f" "$TMP/files" || fail "$f is not in the package"
done
# Nothing outside the places a package may write to.
if grep -vE '^/(usr/(bin|share|lib/sysusers\.d|lib/systemd/system)|etc/dualseal)/' "$TMP/files"; then
    fail "files outside /usr/bin, /usr/share, /usr/lib/sysusers.d, /usr/lib/systemd/system, /etc/dualseal (above)"
fi
dpkg-deb -f "$DEB" Package Version Architecture Depends

# --- maintainer scripts: the units are installed, never enabled or started -------------------
# postinst runs with systemctl & co. replaced by stubs that log their calls, as on a machine
# booted with systemd: a first install may reload units and create the group, nothing more;
# an upgrade restarts the service only if it runs (try-restart).
dpkg-deb -e "$DEB" "$TMP/control"
grep -qxF /etc/dualseal/dualseal.toml "$TMP/control/conffiles" || fail "/etc/dualseal/dualseal.toml is not a conffile"
for s in preinst postinst prerm postrm; do
    [[ ! -f "$TMP/control/$s" ]] || sh -n "$TMP/control/$s" || fail "$s is not valid sh"
done
mkdir -p "$TMP/stubs"
for tool in deb-systemd-helper deb-systemd-invoke systemctl systemd-sysusers; do
    # was-enabled answers "no": the admin never enabled the unit.
    printf '#!/bin/sh\necho "%s $*" >>"%s"\ncase "$*" in *was-enabled*) exit 1 ;; esac\n' \
        "$tool" "$TMP/calls" >"$TMP/stubs/$tool"
    chmod +x "$TMP/stubs/$tool"
done
sed 's#\[ -d /run/systemd/system \]#true#' "$TMP/control/postinst" >"$TMP/postinst"
for previous in "" 0.0.1-1; do
    : >"$TMP/calls"
    PATH="$TMP/stubs:$PATH" sh -e "$TMP/postinst" configure "$previous" || fail "postinst configure '$previous' failed"
    if grep -E ' (enable|start|restart|reload-or-restart)( |$)' "$TMP/calls"; then
        fail "postinst configure '$previous' enables or starts the service (above): it must not"
    fi
    grep -q '^systemd-sysusers dualseal.conf' "$TMP/calls" || fail "postinst does not create the dualseal group"
done
grep -q '^deb-systemd-invoke try-restart .*dualseald.service' "$TMP/calls" \
    || fail "an upgrade does not restart a running dualseald: $(cat "$TMP/calls")"
echo "postinst: a first install and an upgrade enable and start nothing; an upgrade try-restarts"

# --- lintian --------------------------------------------------------------------------------------
# Overrides live in contrib/debian/lintian-overrides, each with its reason; they are shown here
# (O:) so that none hides silently.
# (lintian 2.116 exits 2 with --show-overrides even when every shown tag is overridden, so the
# verdict is read from its output: any E: or W: line fails.)
lintian --show-overrides --tag-display-limit 0 "$DEB" 2>&1 | grep -v 'running with root privileges' >"$TMP/lintian" || true
cat "$TMP/lintian"
grep -q '^O: dualseal: initial-upload-closes-no-bugs' "$TMP/lintian" || fail "lintian did not run (no output above)"
if grep -qE '^(E|W):' "$TMP/lintian"; then fail "lintian errors or warnings (above)"; fi
echo "lintian: no error or warning ($(grep -c '^O:' "$TMP/lintian" || true) overridden, each explained in contrib/debian/lintian-overrides)"

# --- unpacked --------------------------------------------------------------------------------------
dpkg-deb -x "$DEB" "$SCRATCH"
"$SCRATCH/usr/bin/dualseald" --version
"$SCRATCH/usr/bin/dualseald" validate --config "$SCRATCH/etc/dualseal/dualseal.toml"
"$SCRATCH/usr/bin/dualsealctl" --help >"$TMP/help" || fail "dualsealctl --help failed"
# The Kubernetes shards' config, with the shard from the pod's ordinal as the StatefulSet sets it.
python3 - "$ROOT/contrib/kubernetes/configmap.yaml" "$TMP/k8s.toml" <<'PY'
import sys, yaml
open(sys.argv[2], "w").write(yaml.safe_load(open(sys.argv[1]))["data"]["dualseal.toml"])
PY
out="$(DUALSEAL_SHARD_ORDINAL=3 DUALSEAL_SHARD_COUNT=4 "$SCRATCH/usr/bin/dualseald" validate --config "$TMP/k8s.toml")"
[[ "$out" == *"shard 4/4"* ]] || fail "pod ordinal 3 of 4 should run shard 4/4: $out"
rc=0
DUALSEAL_SHARD_ORDINAL=4 DUALSEAL_SHARD_COUNT=4 "$SCRATCH/usr/bin/dualseald" validate --config "$TMP/k8s.toml" 2>"$TMP/err" || rc=$?
[[ $rc == 78 ]] || fail "an ordinal beyond the count should exit 78, got $rc: $(cat "$TMP/err")"

# The group the units name, as systemd-sysusers creates it from the packaged sysusers.d file.
systemd-sysusers --root="$SCRATCH" "$SCRATCH/usr/lib/sysusers.d/dualseal.conf"
grep -q '^dualseal:' "$SCRATCH/etc/group" || fail "systemd-sysusers did not create the dualseal group"

# A man page for every subcommand `dualsealctl --help` lists, and every page renders cleanly.
subcommands="$(sed -n '/^Commands:/,/^$/p' "$TMP/help" | awk 'NR>1 && NF {print $1}' | grep -vx help)"
[[ $(wc -w <<<"$subcommands") -ge 20 ]] || fail "too few subcommands parsed from --help: $subcommands"
for c in $subcommands; do
    [[ -f "$SCRATCH/usr/share/man/man1/dualsealctl-$c.1.gz" ]] || fail "no man page for dualsealctl $c"
done
for page in "$SCRATCH"/usr/share/man/man?/*.gz; do
    warnings="$(MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -l "$page" 2>&1 >/dev/null)"
    [[ -z "$warnings" ]] || fail "$(basename "$page"): $warnings"
done
config_page="$(MANWIDTH=200 man -l "$SCRATCH/usr/share/man/man5/dualseal.toml.5.gz" 2>/dev/null)"
for key in journal_path operation_timeout_secs tls_cert kms_endpoint_url break_glass s3_put_per_1000; do
    grep -q "$key = " <<<"$config_page" || fail "dualseal.toml(5) does not document $key"
done
echo "man pages: $(ls "$SCRATCH"/usr/share/man/man?/*.gz | wc -l), one per dualsealctl subcommand, no warnings"

# Completions: bash registers them; zsh and fish parse when installed.
bash -c "source '$SCRATCH/usr/share/bash-completion/completions/dualsealctl' && complete -p dualsealctl" >/dev/null \
    || fail "the bash completion does not register dualsealctl"
bash -c "source '$SCRATCH/usr/share/bash-completion/completions/dualseald' && complete -p dualseald" >/dev/null \
    || fail "the bash completion does not register dualseald"
if command -v zsh >/dev/null; then zsh -n "$SCRATCH/usr/share/zsh/vendor-completions/_dualsealctl"; fi
if command -v fish >/dev/null; then fish -n "$SCRATCH/usr/share/fish/vendor_completions.d/dualsealctl.fish"; fi

# Units: every Exec path names a file the package installs; then `systemd-analyze verify` and the
# exposure check on the packaged units, pointed at the unpacked binaries (--root would also need
# the scratch root to hold systemd's own targets and /bin/kill).
mkdir -p "$TMP/units"
for u in dualseald.service dualseald@.service; do
    unit="$SCRATCH/usr/lib/systemd/system/$u"
    for exe in $(grep -oE '^Exec(Start|StartPre)=[^ ]+' "$unit" | cut -d= -f2); do
        [[ -x "$SCRATCH$exe" ]] || fail "$u runs $exe, which the package does not install"
    done
    sed "s#/usr/bin/dualseal#$SCRATCH/usr/bin/dualseal#g" "$unit" >"$TMP/units/$u"
done
cp "$TMP/units/dualseald@.service" "$TMP/units/dualseald@shard1.service"
units=("$TMP/units/dualseald.service" "$TMP/units/dualseald@shard1.service")
systemd-analyze verify "${units[@]}"
for unit in "${units[@]}"; do
    out="$(systemd-analyze security --offline=true --threshold=15 "$unit")" || {
        echo "$out" | tail -20
        fail "$(basename "$unit"): exposure above 1.5"
    }
    echo "$(basename "$unit") (packaged): $(tail -1 <<<"$out")"
done
echo "package: file list, lintian, maintainer scripts, binaries, man pages, completions and units ok"

#!/usr/bin/env bash
# Installs arc-node as a systemd service: the binary, the arc-node system user, the config and
# state directories, the example environment file and the unit. Safe to run again (an upgrade
# replaces the binary and the unit, and never touches an existing environment file).
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/install.sh [OPTIONS]

Builds arc-node (cargo build --release --bin arc-node) and installs it as a systemd service:
  <prefix>/usr/local/bin/arc-node                     the binary
  <prefix>/etc/arc-node/arc-node.env                  configuration (kept if it exists)
  <prefix>/etc/systemd/system/arc-node.service        the unit
  <prefix>/var/lib/arc-node                           data (WAL, local storage, cache)
and the system user and group arc-node (only when the prefix is /).

Options:
  --prefix DIR    install under DIR instead of / (a staging root, e.g. for packaging);
                  skips user creation, ownership and systemctl
  --binary PATH   install this arc-node binary instead of building one
  --no-build      do not build; install the binary cargo already built
                  (${CARGO_TARGET_DIR:-<repo>/target}/release/arc-node)
  --dry-run       print every action without changing anything
  -h, --help      show this help

Then: edit /etc/arc-node/arc-node.env and run systemctl enable --now arc-node.
EOF
}

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
SERVICE_USER=arc-node

prefix=/
binary=
build=1
dry_run=0

die() {
    echo "install.sh: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix)
            [[ $# -ge 2 ]] || die "--prefix needs a directory"
            prefix="$2"
            shift 2
            ;;
        --prefix=*)
            prefix="${1#--prefix=}"
            shift
            ;;
        --binary)
            [[ $# -ge 2 ]] || die "--binary needs a path"
            binary="$2"
            build=0
            shift 2
            ;;
        --binary=*)
            binary="${1#--binary=}"
            build=0
            shift
            ;;
        --no-build)
            build=0
            shift
            ;;
        --dry-run)
            dry_run=1
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            die "unknown option: $1 (see --help)"
            ;;
    esac
done

[[ -n "$prefix" ]] || die "--prefix must not be empty"
# Everything below is written as "$root/<absolute path>"; root is empty for a real install.
root="$prefix"
while [[ "$root" == */ ]]; do
    root="${root%/}"
done
if [[ -n "$root" && "$root" != /* ]]; then
    root="$PWD/$root"
fi
real_install=0
[[ -z "$root" ]] && real_install=1

# Prints a command, then runs it unless this is a dry run.
run() {
    if [[ $dry_run -eq 1 ]]; then
        printf 'would run:'
    else
        printf '+'
    fi
    printf ' %q' "$@"
    printf '\n'
    if [[ $dry_run -eq 0 ]]; then
        "$@"
    fi
}

note() {
    echo "-- $*"
}

if [[ $real_install -eq 1 && $dry_run -eq 0 && $EUID -ne 0 ]]; then
    die "installing to / needs root (sudo $0 ...), or use --prefix DIR or --dry-run"
fi

# --- the binary -----------------------------------------------------------------------------
if [[ $build -eq 1 ]]; then
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found; build first and pass --no-build or --binary PATH"
    run cargo build --release --bin arc-node --manifest-path "$REPO_DIR/Cargo.toml"
fi
if [[ -z "$binary" ]]; then
    binary="${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/arc-node"
fi
if [[ ! -x "$binary" ]]; then
    # A dry run that would build first cannot expect the binary to exist yet.
    if [[ $dry_run -eq 1 && $build -eq 1 ]]; then
        note "the build would produce $binary"
    else
        die "no executable arc-node binary at $binary (build it, or pass --binary PATH)"
    fi
fi

# Installs a file unless an identical one is already there (keeps re-runs quiet and cheap).
install_file() {
    local mode="$1" source="$2" target="$3"
    if [[ -f "$target" ]] && cmp -s "$source" "$target"; then
        note "unchanged: $target"
        return
    fi
    run install -D -m "$mode" "$source" "$target"
}

install_file 0755 "$binary" "$root/usr/local/bin/arc-node"

# --- the user -------------------------------------------------------------------------------
if [[ $real_install -eq 0 ]]; then
    note "skipping user creation: prefix $prefix is not / (create user '$SERVICE_USER' on the target system)"
elif id -u "$SERVICE_USER" >/dev/null 2>&1; then
    note "user exists: $SERVICE_USER"
else
    group_option=(--user-group)
    if getent group "$SERVICE_USER" >/dev/null 2>&1; then
        group_option=(--gid "$SERVICE_USER")
    fi
    run useradd --system "${group_option[@]}" --home-dir /var/lib/arc-node --no-create-home \
        --shell /usr/sbin/nologin --comment "arc-node time-series database" "$SERVICE_USER"
fi

# --- directories ----------------------------------------------------------------------------
# Ownership only for a real install: under a staging prefix the user may not exist.
ensure_dir() {
    local mode="$1" owner="$2" group="$3" dir="$4"
    if [[ -d "$dir" ]]; then
        note "exists: $dir"
        return
    fi
    if [[ $real_install -eq 1 ]]; then
        run install -d -m "$mode" -o "$owner" -g "$group" "$dir"
    else
        run install -d -m "$mode" "$dir"
    fi
}

# The service reads TLS keys (or a TOML file) here, so its group may read; only root writes.
ensure_dir 0750 root "$SERVICE_USER" "$root/etc/arc-node"
ensure_dir 0750 "$SERVICE_USER" "$SERVICE_USER" "$root/var/lib/arc-node"

# --- configuration --------------------------------------------------------------------------
env_file="$root/etc/arc-node/arc-node.env"
if [[ -e "$env_file" ]]; then
    note "keeping existing $env_file (compare with $SCRIPT_DIR/arc-node.env for new settings)"
elif [[ $real_install -eq 1 ]]; then
    run install -m 0640 -o root -g "$SERVICE_USER" "$SCRIPT_DIR/arc-node.env" "$env_file"
else
    run install -D -m 0640 "$SCRIPT_DIR/arc-node.env" "$env_file"
fi

# --- the unit -------------------------------------------------------------------------------
# Ours to replace on upgrade; local changes belong in a drop-in (systemctl edit arc-node).
install_file 0644 "$SCRIPT_DIR/arc-node.service" "$root/etc/systemd/system/arc-node.service"

if [[ $real_install -eq 1 && -d /run/systemd/system ]]; then
    run systemctl daemon-reload ||
        note "systemctl daemon-reload failed; run it before starting the service"
elif [[ $real_install -eq 1 ]]; then
    note "skipping systemctl daemon-reload: systemd is not running on this machine"
else
    note "skipping systemctl daemon-reload: prefix $prefix is not /"
fi

if [[ $dry_run -eq 1 ]]; then
    note "dry run: nothing was changed"
else
    note "done. Next: edit /etc/arc-node/arc-node.env, then: systemctl enable --now arc-node"
fi

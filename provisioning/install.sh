#!/usr/bin/env bash
# Install the VRM box on Raspberry Pi OS Bookworm or Debian 12: packages, accounts, a venv,
# systemd units, Mosquitto pointed at the box's broker config, then `vrmbox provision`.
# Idempotent: a second run changes nothing. docs/provisioning.md explains every step.
#
# Usage: sudo provisioning/install.sh [--dry-run] [--prefix DIR] [-- PROVISION-ARGS...]
#        sudo provisioning/install.sh --uninstall [--purge] [--dry-run]
#   --dry-run    print every step, change nothing (needs no root)
#   --uninstall  remove units, accounts and the venv; keep /etc/vrmbox and the data
#   --purge      with --uninstall: also delete /etc/vrmbox, /var/lib/vrmbox, /var/lib/vrmbox-broker
#   PROVISION-ARGS go to `vrmbox provision`, e.g. -- --market mqtts://market.example:8883 ...
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt/vrmbox
DRY=0 UNINSTALL=0 PURGE=0
PROVISION_ARGS=()
ARGS="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    --prefix) PREFIX="$2"; shift ;;
    --) shift; PROVISION_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$PURGE" -eq 1 ] && [ "$UNINSTALL" -eq 0 ]; then
  echo "install.sh: --purge goes with --uninstall" >&2; exit 2
fi

# Names: the accounts are provisioning/accounts.py's, the paths provisioning/layout.py's
# (tests/test_systemd_units.py checks the units agree with both).
BOX_USER=vrmbox UI_USER=vrmbox-ui COMPANION_USER=vrmbox-companion
HW_GROUPS=(gpio i2c spi)
VENV="$PREFIX/venv"
UNIT_DIR=/etc/systemd/system
UNITS=(vrmbox.service vrmbox-ui.service vrmbox-companion.service)
DROP_IN="$UNIT_DIR/mosquitto.service.d/vrmbox.conf"
DATA_DIRS=(/etc/vrmbox /var/lib/vrmbox /var/lib/vrmbox-broker)

say() { echo "== $*"; }
run() {                      # print a step; do it unless --dry-run
  echo "+ $*"
  if [ "$DRY" -eq 0 ]; then "$@"; fi
}
have_systemd() { [ -d /run/systemd/system ] || [ "$DRY" -eq 1 ]; }   # a dry run shows the steps

if [ "$DRY" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo $0 $ARGS), or try --dry-run" >&2; exit 1
fi

if [ -r /etc/os-release ]; then
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" != "bookworm" ]; then
    say "note: made for Debian 12 / Raspberry Pi OS Bookworm; this is ${PRETTY_NAME:-unknown}"
  fi
fi

uninstall() {
  say "stopping and removing the units"
  if have_systemd; then
    for u in "${UNITS[@]}"; do
      if [ -e "$UNIT_DIR/$u" ] || [ "$DRY" -eq 1 ]; then run systemctl disable --now "$u"; fi
    done
  else
    say "systemd is not running here: nothing to stop"
  fi
  for u in "${UNITS[@]}"; do
    if [ -e "$UNIT_DIR/$u" ] || [ "$DRY" -eq 1 ]; then run rm -f "$UNIT_DIR/$u"; fi
  done
  run rm -f "$DROP_IN"
  if have_systemd; then run systemctl daemon-reload; run systemctl try-restart mosquitto.service; fi
  say "removing the accounts"
  for u in "$BOX_USER" "$UI_USER" "$COMPANION_USER"; do
    if id -u "$u" >/dev/null 2>&1 || [ "$DRY" -eq 1 ]; then run userdel "$u"; fi
  done
  say "removing the program"
  run rm -rf "$VENV" "$PREFIX/src"
  if [ "$PURGE" -eq 1 ]; then
    say "purging configuration, keys and data"
    for d in "${DATA_DIRS[@]}"; do run rm -rf "$d"; done
  else
    say "kept configuration, keys and data: ${DATA_DIRS[*]} (--purge deletes them)"
  fi
}

if [ "$UNINSTALL" -eq 1 ]; then uninstall; exit 0; fi

say "1/7 system packages"
PKGS=(mosquitto mosquitto-clients python3-venv python3-pip i2c-tools)
for p in python3-lgpio liblgpio1; do            # Raspberry Pi OS ships these; plain Debian not
  if apt-cache show "$p" >/dev/null 2>&1; then PKGS+=("$p"); fi
done
MISSING=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then MISSING+=("$p"); fi
done
if [ ${#MISSING[@]} -gt 0 ] || [ "$DRY" -eq 1 ]; then
  run apt-get update -qq
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PKGS[@]}"
else
  say "all present: ${PKGS[*]}"
fi

say "2/7 accounts: $BOX_USER (data, daemon), $UI_USER (display, buttons), $COMPANION_USER (phone app)"
for g in "${HW_GROUPS[@]}"; do                  # Raspberry Pi OS has them; plain Debian may not
  if ! getent group "$g" >/dev/null; then run groupadd --system "$g"; fi
done
for u in "$BOX_USER" "$UI_USER" "$COMPANION_USER"; do
  if ! id -u "$u" >/dev/null 2>&1; then
    run useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$u"
  fi
done
# Only the UI touches the board's buses; the daemon and the companion never do.
UI_GROUPS="$(IFS=,; echo "${HW_GROUPS[*]}")"
if ! id -nG "$UI_USER" 2>/dev/null | tr ' ' '\n' | grep -qx spi; then
  run usermod --append --groups "$UI_GROUPS" "$UI_USER"
fi

say "3/7 I2C and SPI"
if command -v raspi-config >/dev/null 2>&1; then
  run raspi-config nonint do_i2c 0
  run raspi-config nonint do_spi 0
else
  say "not a Raspberry Pi OS image (no raspi-config): skipped"
fi

say "4/7 the program in $PREFIX (a venv, as PEP 668 asks)"
EXTRAS=""
case "$(uname -m)" in aarch64|armv7l) EXTRAS="[pi]" ;; esac
TAR=(tar -C "$SRC" --exclude=.git --exclude=.venv --exclude=__pycache__ --sort=name --mtime=@0
     --owner=0 --group=0 -c .)
TREE="$("${TAR[@]}" | sha256sum | cut -d' ' -f1)"
if [ "$DRY" -eq 1 ] || [ "$(cat "$PREFIX/src/.tree-sha256" 2>/dev/null)" != "$TREE" ] \
    || [ ! -x "$VENV/bin/vrmbox" ]; then
  run install -d -m 0755 "$PREFIX"
  run rm -rf "$PREFIX/src.new"
  run mkdir -p "$PREFIX/src.new"
  echo "+ ${TAR[*]} | tar -C $PREFIX/src.new -x"
  if [ "$DRY" -eq 0 ]; then
    "${TAR[@]}" | tar -C "$PREFIX/src.new" -x
    echo "$TREE" > "$PREFIX/src.new/.tree-sha256"
  fi
  run rm -rf "$PREFIX/src"
  run mv "$PREFIX/src.new" "$PREFIX/src"
  if [ ! -x "$VENV/bin/python" ] || [ "$DRY" -eq 1 ]; then run python3 -m venv "$VENV"; fi
  run "$VENV/bin/python" -m pip install -q --upgrade pip
  run "$VENV/bin/python" -m pip install -q "$PREFIX/src$EXTRAS"
else
  say "$PREFIX/src is this version already; venv in place"
fi

say "5/7 systemd units"
install_file() {             # install_file SRC DEST: only when it differs
  local src="$1" dest="$2" tmp
  tmp="$(mktemp)"
  sed "s|/opt/vrmbox|$PREFIX|g" "$src" > "$tmp"
  if [ "$DRY" -eq 1 ]; then
    echo "+ install -D -m 0644 $src $dest   (with /opt/vrmbox -> $PREFIX)"
  elif ! cmp -s "$tmp" "$dest"; then
    run install -D -m 0644 "$tmp" "$dest"
  fi
  rm -f "$tmp"
}
for u in "${UNITS[@]}"; do install_file "$SRC/provisioning/systemd/$u" "$UNIT_DIR/$u"; done
install_file "$SRC/provisioning/systemd/mosquitto.service.d/vrmbox.conf" "$DROP_IN"
if have_systemd; then run systemctl daemon-reload; fi

say "6/7 vrmbox provision: keys, secrets, certificates, broker accounts and config"
run "$VENV/bin/vrmbox" provision "${PROVISION_ARGS[@]}"

say "7/7 start"
if have_systemd; then
  run systemctl enable --now mosquitto.service vrmbox.service
  run systemctl restart mosquitto.service
  for cmd in ui companion; do
    if [ "$DRY" -eq 1 ] || "$VENV/bin/vrmbox" "$cmd" --help >/dev/null 2>&1; then
      run systemctl enable --now "vrmbox-$cmd.service"
    else
      say "vrmbox $cmd is not part of this version yet: vrmbox-$cmd.service left disabled"
    fi
  done
else
  say "systemd is not running here: start the units yourself (systemctl enable --now vrmbox)"
fi
say "done. The box's config: /etc/vrmbox/config.toml (check it with: $VENV/bin/vrmbox config check)"

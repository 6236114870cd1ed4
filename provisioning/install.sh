#!/usr/bin/env bash
# Install the VRM box on Raspberry Pi OS Bookworm or Debian 12: packages, accounts, a venv,
# systemd units, Mosquitto pointed at the box's broker config, then `vrmbox provision`.
# Idempotent: a second run changes nothing; a run that failed or was interrupted is finished by
# running it again. docs/provisioning.md explains every step.
#
# Usage: sudo provisioning/install.sh [--board PROFILE] [--dry-run] [--prefix DIR] [-- PROVISION-ARGS...]
#        sudo provisioning/install.sh --uninstall [--purge] [--dry-run]
#   --board P    the board the box's face drives (hardware/profiles/P.toml; `headless`: none);
#                without it (and none chosen before) the face is installed but not started
#   --dry-run    print every step, change nothing (needs no root)
#   --uninstall  remove units, accounts, sockets and the program; keep /etc/vrmbox and the data
#   --purge      with --uninstall: also delete /etc/vrmbox, /var/lib/vrmbox, /var/lib/vrmbox-broker
#   PROVISION-ARGS go to `vrmbox provision`, e.g. -- --market mqtts://market.example:8883 ...
set -Eeuo pipefail         # -E: the ERR trap reaches functions too

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt/vrmbox
DRY=0 UNINSTALL=0 PURGE=0 BOARD=""
PROVISION_ARGS=()
ARGS="$*"
usage() { sed -n '2,15p' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }
              PREFIX="$2"; shift ;;
    --board) [ $# -ge 2 ] || { echo "install.sh: --board needs a profile name" >&2; exit 2; }
             BOARD="$2"; shift ;;
    --board=*) BOARD="${1#--board=}" ;;
    --) shift; PROVISION_ARGS=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
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
MARK="$VENV/.vrmbox-tree-sha256"      # written last: a venv without it is not finished
BROKER_MARK="$PREFIX/.broker-config-sha256"   # what Mosquitto was last (re)started with
BROKER_CONF=/etc/vrmbox/broker/mosquitto.conf
UNIT_DIR=/etc/systemd/system
UNITS=(vrmbox.service vrmbox-ui.service vrmbox-companion.service)
DROP_IN="$UNIT_DIR/mosquitto.service.d/vrmbox.conf"
DATA_DIRS=(/etc/vrmbox /var/lib/vrmbox /var/lib/vrmbox-broker)
RUN_DIR=/run/vrmbox
PROFILES="$SRC/hardware/profiles"
# The OS's own builds where PyPI has no wheel for the Pi (spidev, sdnotify: sources only;
# tests/test_pi_packages.py checks the list), and Raspberry Pi OS's lgpio, which Raspberry Pi
# recommends over PyPI's; the Pi's venv sees them (--system-site-packages).
PI_PACKAGES=(python3-lgpio python3-spidev python3-sdnotify liblgpio1)

say() { echo "== $*"; }
run() {                      # print a step; do it unless --dry-run
  echo "+ $*"
  if [ "$DRY" -eq 0 ]; then "$@"; fi
}
have_systemd() { [ -d /run/systemd/system ] || [ "$DRY" -eq 1 ]; }   # a dry run shows the steps
profile_names() { for f in "$PROFILES"/*.toml; do basename "$f" .toml; done | paste -sd' ' -; }
is_pi_arch() { case "$(uname -m)" in aarch64|armv7l) return 0 ;; *) return 1 ;; esac; }

# ------------------------------------------------------------------ a failed or interrupted step
STEP="checks"
on_error() {
  local rc=$?
  trap - ERR INT TERM
  echo "install.sh: step '$STEP' failed (exit $rc, at: $BASH_COMMAND)." >&2
  echo "install.sh: nothing after it was done. Fix the cause above, then run the same command" >&2
  echo "install.sh: again: finished steps are skipped and this one is done from its start." >&2
  exit "$rc"
}
on_interrupt() {
  trap - ERR INT TERM
  echo "" >&2
  echo "install.sh: interrupted during step '$STEP'. Run the same command again to finish the" >&2
  echo "install.sh: install: finished steps are skipped and this one is done from its start." >&2
  exit 130
}
trap on_error ERR
trap on_interrupt INT TERM

# ------------------------------------------------------------------ checks, before any change
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
  STEP="uninstall"
  say "stopping and removing the units"
  if have_systemd; then
    # One transaction, the face and the phone app first: stopped one at a time, a unit still
    # restarting (a companion in a restart loop) would start the daemon again through Wants=,
    # and its account could not be removed.
    local present=()
    for u in vrmbox-companion.service vrmbox-ui.service vrmbox.service; do
      if [ -e "$UNIT_DIR/$u" ] || [ "$DRY" -eq 1 ]; then present+=("$u"); fi
    done
    if [ ${#present[@]} -gt 0 ]; then
      run systemctl disable --now "${present[@]}"
      run systemctl reset-failed "${present[@]}" 2>/dev/null || true     # forget a failed state
    fi
  else
    say "systemd is not running here: nothing to stop"
  fi
  for u in "${UNITS[@]}"; do
    if [ -e "$UNIT_DIR/$u" ] || [ "$DRY" -eq 1 ]; then run rm -f "$UNIT_DIR/$u"; fi
    if [ -d "$UNIT_DIR/$u.d" ] || [ "$DRY" -eq 1 ]; then run rm -rf "$UNIT_DIR/$u.d"; fi
  done
  if [ -e "$DROP_IN" ] || [ "$DRY" -eq 1 ]; then
    run rm -f "$DROP_IN"
    run rmdir --ignore-fail-on-non-empty "$(dirname "$DROP_IN")"
  fi
  if have_systemd; then
    run systemctl daemon-reload
    run systemctl try-restart mosquitto.service
  fi
  if [ -e "$RUN_DIR" ] || [ "$DRY" -eq 1 ]; then run rm -rf "$RUN_DIR"; fi   # sockets of a killed daemon
  say "removing the accounts"
  for u in "$BOX_USER" "$UI_USER" "$COMPANION_USER"; do
    if id -u "$u" >/dev/null 2>&1 || [ "$DRY" -eq 1 ]; then run userdel "$u"; fi
  done
  say "removing the program"
  run rm -rf "$VENV" "$PREFIX/src" "$PREFIX/src.new" "$BROKER_MARK"
  if [ -d "$PREFIX" ] || [ "$DRY" -eq 1 ]; then run rmdir --ignore-fail-on-non-empty "$PREFIX"; fi
  if [ "$PURGE" -eq 1 ]; then
    say "purging configuration, keys and data"
    for d in "${DATA_DIRS[@]}"; do run rm -rf "$d"; done
    say "kept: Debian's packages (mosquitto, python3-venv, ...; apt remove them if nothing else needs them)"
    say "kept: the groups gpio, i2c, spi (Raspberry Pi OS's own; other programs use them)"
  else
    say "kept configuration, keys and data: ${DATA_DIRS[*]} (--purge deletes them)"
  fi
}

if [ "$UNINSTALL" -eq 1 ]; then uninstall; exit 0; fi

if [ ! -f "$SRC/pyproject.toml" ] || [ ! -d "$SRC/provisioning/systemd" ]; then
  echo "install.sh: $SRC is not a VRM box source tree (run it from a clone: provisioning/install.sh)" >&2
  exit 1
fi
if [ -n "$BOARD" ] && [ ! -f "$PROFILES/$BOARD.toml" ]; then
  echo "install.sh: --board $BOARD: no such board; known: $(profile_names)" >&2
  echo "install.sh: (wiring notes in hardware/wiring/; nothing was changed)" >&2
  exit 2
fi
if ! command -v python3 >/dev/null 2>&1 \
    || ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  if [ "$DRY" -eq 0 ] && ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: needs Python 3.11 or later and apt-get (Debian 12 / Raspberry Pi OS Bookworm)" >&2
    exit 1
  fi
fi
if [ "$DRY" -eq 0 ]; then
  mkdir -p "$PREFIX" 2>/dev/null || true
  free_kb="$(df -Pk "$PREFIX" 2>/dev/null | awk 'NR==2 {print $4}')"
  if [ -n "${free_kb:-}" ] && [ "$free_kb" -lt 400000 ]; then
    echo "install.sh: $PREFIX has $((free_kb / 1024)) MB free; the program needs about 400 MB" >&2
    exit 1
  fi
fi
if ! have_systemd; then
  say "note: systemd is not running here: the units are installed but nothing is started"
fi

STEP="1/7 system packages"
say "$STEP"
PKGS=(mosquitto mosquitto-clients python3-venv python3-pip i2c-tools)
if is_pi_arch; then
  for p in "${PI_PACKAGES[@]}"; do
    if apt-cache show "$p" >/dev/null 2>&1; then PKGS+=("$p"); fi
  done
fi
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

STEP="2/7 accounts"
say "$STEP: $BOX_USER (data, daemon), $UI_USER (display, buttons), $COMPANION_USER (phone app)"
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

STEP="3/7 I2C and SPI"
say "$STEP"
if command -v raspi-config >/dev/null 2>&1; then
  run raspi-config nonint do_i2c 0
  run raspi-config nonint do_spi 0
else
  say "not a Raspberry Pi OS image (no raspi-config): skipped"
fi

STEP="4/7 the program in $PREFIX"
say "$STEP (a venv, as PEP 668 asks)"
EXTRAS=""
VENV_FLAGS=()
if is_pi_arch; then EXTRAS="[pi]"; VENV_FLAGS=(--system-site-packages); fi
TAR=(tar -C "$SRC" --exclude=.git --exclude=.venv --exclude=__pycache__ --exclude='*.egg-info'
     --exclude=build --sort=name --mtime=@0 --owner=0 --group=0 -c .)
TREE="$("${TAR[@]}" | sha256sum | cut -d' ' -f1)"
UPGRADED=0
if [ "$DRY" -eq 1 ] || [ "$(cat "$MARK" 2>/dev/null)" != "$TREE" ] || [ ! -x "$VENV/bin/vrmbox" ]; then
  if [ -x "$VENV/bin/vrmbox" ]; then UPGRADED=1; fi      # another version is installed
  run install -d -m 0755 "$PREFIX"
  run rm -rf "$PREFIX/src.new"
  run mkdir -p "$PREFIX/src.new"
  echo "+ ${TAR[*]} | tar -C $PREFIX/src.new -x"
  if [ "$DRY" -eq 0 ]; then "${TAR[@]}" | tar -C "$PREFIX/src.new" -x; fi
  run rm -rf "$PREFIX/src"
  run mv "$PREFIX/src.new" "$PREFIX/src"
  # A Pi's venv must see the OS's board libraries; recreate one made without them.
  if [ "$DRY" -eq 0 ] && [ -f "$VENV/pyvenv.cfg" ] && is_pi_arch \
      && ! grep -q '^include-system-site-packages = true' "$VENV/pyvenv.cfg"; then
    run rm -rf "$VENV"
  fi
  if [ ! -x "$VENV/bin/python" ] || [ "$DRY" -eq 1 ]; then run python3 -m venv "${VENV_FLAGS[@]}" "$VENV"; fi
  run "$VENV/bin/python" -m pip install -q --upgrade pip
  run "$VENV/bin/python" -m pip install -q "$PREFIX/src$EXTRAS"
  if [ "$DRY" -eq 0 ]; then echo "$TREE" > "$MARK"; fi
else
  say "$PREFIX/src is this version already; venv in place"
fi

STEP="5/7 systemd units"
say "$STEP"
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

STEP="6/7 vrmbox provision"
say "$STEP: keys, secrets, certificates, broker accounts and config"
BOARD_ARGS=()
if [ -n "$BOARD" ]; then BOARD_ARGS=(--board "$BOARD"); fi
run "$VENV/bin/vrmbox" provision "${BOARD_ARGS[@]}" "${PROVISION_ARGS[@]}"

broker_sum() {               # the broker's config as Mosquitto reads it, one checksum
  local files=("$DROP_IN" "$BROKER_CONF")
  if [ -r "$BROKER_CONF" ]; then
    while read -r f; do files+=("$f"); done < <(awk \
      '$1 ~ /^(cafile|certfile|keyfile|password_file|acl_file)$/ {print $2}' "$BROKER_CONF")
  fi
  { cat "${files[@]}" 2>/dev/null || true; } | sha256sum | cut -d' ' -f1   # a missing file: "changed"
}

STEP="7/7 start"
say "$STEP"
CHOSEN="$BOARD"
if [ -z "$CHOSEN" ] && [ "$DRY" -eq 0 ]; then
  CHOSEN="$("$VENV/bin/vrmbox" config check --json 2>/dev/null \
            | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin).get("ui_profile") or "")' \
            2>/dev/null || true)"
fi
if have_systemd; then
  START=(mosquitto.service vrmbox.service vrmbox-companion.service)
  if [ -n "$CHOSEN" ]; then START+=(vrmbox-ui.service); fi
  run systemctl enable "${START[@]}"
  # Mosquitto is restarted only for a config it has not loaded yet (its drop-in, its config and
  # every file that names), so a second run leaves the broker and its clients' sessions alone.
  BROKER_SUM="$(broker_sum)"
  if [ "$DRY" -eq 1 ] || [ "$(cat "$BROKER_MARK" 2>/dev/null)" != "$BROKER_SUM" ] \
      || ! systemctl is-active --quiet mosquitto.service; then
    run systemctl restart mosquitto.service
    if [ "$DRY" -eq 0 ]; then echo "$BROKER_SUM" > "$BROKER_MARK"; fi
  else
    say "the broker runs this config already"
  fi
  if [ "$UPGRADED" -eq 1 ]; then
    say "a new version: restarting the box's services (the store is migrated when the daemon opens it)"
    run systemctl restart "${START[@]:1}"
  else
    run systemctl start "${START[@]:1}"
  fi
  if [ -z "$CHOSEN" ]; then
    run systemctl disable --now vrmbox-ui.service
    say "the box's face is installed but NOT started: no board chosen."
    if [ -e /dev/i2c-1 ] && command -v i2cdetect >/dev/null 2>&1 \
        && i2cdetect -y 1 0x3c 0x3d 2>/dev/null | grep -Eq ' 3[cd]( |$)'; then
      say "a display answers on I2C bus 1 at 0x3C/0x3D: an SSD1306 (adafruit-oled-bonnet is 128x64,"
      say "generic-ssd1306-128x32 is 128x32; both answer there, so it is not chosen for you)."
    fi
    say "choose one and run again: sudo $0 --board PROFILE   (profiles: $(profile_names))"
  fi
else
  say "systemd is not running here: start the units yourself (systemctl enable --now vrmbox)"
fi
trap - ERR INT TERM
say "done. The box's config: /etc/vrmbox/config.toml (check it with: $VENV/bin/vrmbox config check)"
say "status: sudo $VENV/bin/vrmbox status; pair a phone: sudo $VENV/bin/vrmbox pair"

#!/usr/bin/env bash
# The Debian 12 packages the demo and the tests need, installed when missing. Sourced by the scripts.
tabula_packages=(btrfs-progs util-linux qemu-system-x86 busybox-static cpio kmod debootstrap shellcheck nix-bin make systemd jq dmsetup tzdata)
tabula_install_packages() {
  local missing=()
  for p in "${tabula_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

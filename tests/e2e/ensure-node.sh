#!/usr/bin/env bash
# The real test node runs on Debian's packages: containerd + runc (the CRI), the CNI plugins,
# iptables + conntrack (kube-proxy), buildah + debootstrap (images without a daemon or a
# registry). Installed once if missing; their services are not started (policy-rc.d): the
# harness runs its own containerd with its own sockets and state under the cluster workdir.
set -euo pipefail
PACKAGES=(containerd runc containernetworking-plugins iptables conntrack buildah debootstrap
  catatonit)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "the real test node needs Debian's ${missing[*]}: apt-get install ${missing[*]}" >&2
  exit 1
fi
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"

#!/usr/bin/env bash
# Proves that tools/install-deps.sh is enough on a bare Debian 12: a minimal root (debootstrap
# --variant=minbase: only Essential and apt) gets install-deps.sh and nothing else, then the
# configure step of tools/main-job.sh runs in it. A package that the build needs but
# install-deps.sh does not name (e.g. ocl-icd-opencl-dev, which Debian's dnnl-config.cmake needs
# for find_package(OpenCL)) fails this check, while the development machines, which have it
# anyway, would not notice.
#
#   tools/bare-root-check.sh [SOURCE_DIR]     (default: this checkout; run as root or with sudo)
#
# Cached outside the clone, in $TANDEM_BARE_ROOT_CACHE (default /var/cache/tandem/debootstrap):
# the minimal root as a tarball (made once, ~1-3 minutes) and apt's downloaded .debs. Each run
# unpacks a fresh root from the tarball, so packages installed by an earlier run never hide a
# missing one; with both caches warm a run takes about 2-4 minutes (apt unpacks ~300 packages).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(realpath "${1:-$PWD}")
cache=${TANDEM_BARE_ROOT_CACHE:-/var/cache/tandem/debootstrap}
suite=bookworm
mirror=${TANDEM_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "bare-root-check: run as root or install sudo" >&2; exit 1; }
    exec sudo --preserve-env=TANDEM_BARE_ROOT_CACHE,TANDEM_DEBIAN_MIRROR "$0" "$src"
fi

base="$cache/$suite-minbase.tar"
if [ ! -f "$base" ]; then
    if ! command -v debootstrap >/dev/null; then
        echo "bare-root-check: installing debootstrap on this machine"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap \
            || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y -q --no-install-recommends debootstrap; }
    fi
    echo "bare-root-check: making the minimal $suite root (once; cached in $base)"
    mkdir -p "$cache"
    staging=$(mktemp -d "$cache/staging.XXXXXX")
    trap 'rm -rf "$staging"' EXIT
    debootstrap --variant=minbase "$suite" "$staging" "$mirror" >"$cache/debootstrap.log" 2>&1 \
        || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    tar -C "$staging" -cf "$base.part" . && mv "$base.part" "$base"
    rm -rf "$staging"
    trap - EXIT
fi

root=$(mktemp -d /var/tmp/tandem-bare-root.XXXXXX)
trap 'rm -rf --one-file-system "$root"' EXIT
tar -C "$root" -xf "$base"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$cache/apt-archives/partial" "$root/src"
echo "bare-root-check: $(dpkg-query --admindir="$root/var/lib/dpkg" -W | wc -l) packages in the" \
    "fresh root; running install-deps.sh and the configure step of $src there"

# A private mount namespace: the bind mounts vanish with it, whatever happens. The source is
# read-only inside; the build directory lives in the throwaway root.
unshare --mount --propagation private -- bash -euo pipefail -c '
    root=$1 src=$2 cache=$3
    mount --bind "$src" "$root/src"
    mount -o remount,bind,ro "$root/src"
    mount --bind "$cache/apt-archives" "$root/var/cache/apt/archives"
    mount -t proc proc "$root/proc"
    exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        bash -euo pipefail -c "
            /src/tools/install-deps.sh
            cmake -S /src -B /tmp/build -G Ninja -DCMAKE_BUILD_TYPE=Release
        "
' bash "$root" "$src" "$cache"
echo "bare-root-check: install-deps.sh and the configure step passed on a bare $suite root"

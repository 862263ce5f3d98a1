#!/usr/bin/env bash
# Proves that tools/install-deps.sh is enough on a bare Debian 12: a minimal root (debootstrap
# --variant=minbase: only Essential and apt) gets install-deps.sh and nothing else, then the
# configure step of tools/main-job.sh runs in it. A package that the build needs but
# install-deps.sh does not name (e.g. ocl-icd-opencl-dev, which Debian's dnnl-config.cmake needs
# for find_package(OpenCL)) fails this check, while the development machines, which have it
# anyway, would not notice.
#
#   tools/bare-root-check.sh [--main-job] [SOURCE_DIR]   (default: this checkout; as root or sudo)
#
# --main-job runs the whole of tools/main-job.sh there instead of the configure step alone (a
# full build of tandem-run and the demo generation: ~7 minutes on 2 cores; not run by CI).
#
# Cached outside the clone, in $TANDEM_BARE_ROOT_CACHE (default /var/cache/tandem/debootstrap):
# the minimal root as a tarball (made once, ~1-3 minutes) and apt's downloaded .debs. Each run
# unpacks a fresh root from the tarball, so packages installed by an earlier run never hide a
# missing one; with both caches warm a run takes under 2 minutes (apt unpacks ~300 packages).
set -euo pipefail
cd "$(dirname "$0")/.."
main_job=0
if [ "${1:-}" = --main-job ]; then
    main_job=1
    shift
fi
src=$(realpath "${1:-$PWD}")
cache=${TANDEM_BARE_ROOT_CACHE:-/var/cache/tandem/debootstrap}
suite=bookworm
mirror=${TANDEM_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "bare-root-check: run as root or install sudo" >&2; exit 1; }
    args=("$src")
    [ "$main_job" -eq 0 ] || args=(--main-job "$src")
    exec sudo --preserve-env=TANDEM_BARE_ROOT_CACHE,TANDEM_DEBIAN_MIRROR "$0" "${args[@]}"
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

# What runs inside: install-deps.sh, then the configure step of tools/main-job.sh (the source
# read-only, the build directory in the throwaway root), or with --main-job the whole main job
# in a copy of the source (it builds into the checkout's build/).
steps="/src/tools/install-deps.sh && cmake -S /src -B /tmp/build -G Ninja -DCMAKE_BUILD_TYPE=Release"
if [ "$main_job" -eq 1 ]; then
    mkdir -p "$root/work"
    tar -C "$src" --exclude='./build*' --exclude=./.venv --exclude=./.git -cf - . |
        tar -C "$root/work" -xf -
    steps="/work/tools/main-job.sh --threads 2"
fi

what="the configure step"
[ "$main_job" -eq 0 ] || what="tools/main-job.sh"
echo "bare-root-check: $(dpkg-query --admindir="$root/var/lib/dpkg" -W | wc -l) packages in the" \
    "fresh root; running install-deps.sh and $what of $src there"

# A private mount namespace: the bind mounts vanish with it, whatever happens.
unshare --mount --propagation private -- bash -euo pipefail -c '
    root=$1 src=$2 cache=$3 steps=$4
    mount --bind "$src" "$root/src"
    mount -o remount,bind,ro "$root/src"
    mount --bind "$cache/apt-archives" "$root/var/cache/apt/archives"
    mount -t proc proc "$root/proc"
    exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        bash -euo pipefail -c "$steps"
' bash "$root" "$src" "$cache" "$steps"
echo "bare-root-check: install-deps.sh and $what passed on a bare $suite root"

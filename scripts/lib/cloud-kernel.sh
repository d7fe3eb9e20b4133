# Sourced by make-guest.sh and lab.sh: Debian's cloud kernel package
# (linux-image-cloud-amd64's dependency), fetched with `apt-get download`
# and unpacked with `dpkg -x` into ${XDG_CACHE_HOME:-~/.cache}/tern-guest/,
# without installing anything on the host. After `cloud_kernel_fetch`:
#   $kernel_pkg  the package (linux-image-6.1.0-NN-cloud-amd64)
#   $kernel_dir  its unpacked tree (boot/vmlinuz-*, lib/modules/*) under $kernel_dir/root
#   $kver        the kernel release (uname -r)
# A second call with the same package version is a cache hit.

tern_cache=${XDG_CACHE_HOME:-$HOME/.cache}/tern-guest

cloud_kernel_package() {
  apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

cloud_kernel_fetch() {
  mkdir -p "$tern_cache"
  kernel_pkg=$(cloud_kernel_package || true)
  if [ -z "$kernel_pkg" ]; then
    echo "cloud-kernel: linux-image-cloud-amd64 unknown to apt; running apt-get update" >&2
    apt-get update -qq
    kernel_pkg=$(cloud_kernel_package)
  fi
  [ -n "$kernel_pkg" ] || { echo "cloud-kernel: cannot resolve linux-image-cloud-amd64" >&2; return 1; }
  local ver
  ver=$(apt-cache show --no-all-versions "$kernel_pkg" | awk '/^Version:/ { print $2; exit }')
  [ -n "$ver" ] || { echo "cloud-kernel: no version for $kernel_pkg" >&2; return 1; }
  kernel_dir="$tern_cache/${kernel_pkg}_${ver}"
  if [ ! -f "$kernel_dir/.done" ]; then
    echo "cloud-kernel: fetching $kernel_pkg $ver" >&2
    rm -rf "$kernel_dir"
    mkdir -p "$kernel_dir/dl"
    if ! (cd "$kernel_dir/dl" && apt-get -q -o APT::Sandbox::User=root download "$kernel_pkg=$ver" >/dev/null); then
      echo "cloud-kernel: download failed; running apt-get update and retrying" >&2
      apt-get update -qq
      (cd "$kernel_dir/dl" && apt-get -q -o APT::Sandbox::User=root download "$kernel_pkg=$ver" >/dev/null)
    fi
    dpkg -x "$kernel_dir"/dl/*.deb "$kernel_dir/root"
    rm -rf "$kernel_dir/dl"
    touch "$kernel_dir/.done"
  fi
  local vmlinuz
  vmlinuz=$(ls "$kernel_dir"/root/boot/vmlinuz-* | head -n1)
  kver=${vmlinuz##*/vmlinuz-}
}

# cloud_kernel_module NAME DEST: copies module NAME (.ko, .ko.xz or .ko.zst)
# of the fetched kernel to DEST, decompressed. Fails when it is missing.
cloud_kernel_module() {
  local moddir="$kernel_dir/root/lib/modules/$kver" f
  f=$(find "$moddir/kernel" \( -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" \) | head -n1)
  [ -n "$f" ] || return 1
  case "$f" in
    *.xz) xz -dc "$f" > "$2" ;;
    *.zst) zstd -qdc "$f" > "$2" ;;
    *) cp "$f" "$2" ;;
  esac
}

# cloud_kernel_builtin NAME: true when NAME is built into the kernel.
cloud_kernel_builtin() {
  grep -q "/$1.ko\$" "$kernel_dir/root/lib/modules/$kver/modules.builtin" 2>/dev/null
}

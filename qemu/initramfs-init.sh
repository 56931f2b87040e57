#!/bin/busybox sh
# Stage 1 (PID 1 in the initramfs): mount the read-only 9p root fs, this repository and
# the per-run results share, then hand over to qemu/guest-stage2.sh from the repository.
/bin/busybox --install -s /bin
export PATH=/bin

die() {
    echo "EEH-GUEST-INIT-FAILED: $*"
    poweroff -f
}

mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m" || die "insmod $m"
done

p9="trans=virtio,version=9p2000.L,msize=262144"
mount -t 9p -o "ro,cache=loose,$p9" root /newroot || die "mount root fs"
# Extra read-only shares (kernel argument eeh.mnt=TAG,...: qemu_launcher.config.Share) go
# at /mnt/TAG; the root fs has only /mnt/repo and /mnt/results, so /mnt becomes a tmpfs
# holding the mount points (only then: a guest without extra shares is as before).
shares=
for arg in $(cat /proc/cmdline); do
    case "$arg" in eeh.mnt=*) shares=$(echo "${arg#eeh.mnt=}" | tr , ' ') ;; esac
done
if [ -n "$shares" ]; then
    mount -t tmpfs -o mode=755 tmpfs /newroot/mnt || die "mount /mnt"
    mkdir -p /newroot/mnt/repo /newroot/mnt/results
    for tag in $shares; do
        mkdir -p "/newroot/mnt/$tag" &&
            mount -t 9p -o "ro,cache=loose,$p9" "$tag" "/newroot/mnt/$tag" ||
            die "mount share $tag"
    done
fi
# the repository with cache=loose too: read-only here, and what a guest reads (its
# code, the bytecode) is not rewritten on the host while it runs; ~0.1 s less per start
mount -t 9p -o "ro,cache=loose,$p9" repo /newroot/mnt/repo || die "mount repository"
mount -t 9p -o "rw,$p9" results /newroot/mnt/results || die "mount results"
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=755 tmpfs /newroot/run
for d in proc sys dev; do mount --move "/$d" "/newroot/$d"; done
exec switch_root /newroot /bin/sh /mnt/repo/qemu/guest-stage2.sh

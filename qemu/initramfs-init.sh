#!/bin/busybox sh
# Stage 1 (PID 1 in the initramfs): mount the read-only 9p root fs, this repository and
# the per-run results share, then hand over to qemu/guest-stage2.sh from the repository.
#
# With a virtio-serial port named eeh.launch (qemu_launcher.snapshot: a staged boot),
# stage 1 first waits on it, having mounted nothing from the host: a guest stopped here
# can be saved to a file and restored from it (a mounted 9p share blocks migration).
# The launcher then hot-plugs the guest's functions and writes one line,
#   go <functions> <epoch seconds>
# after which stage 1 sets the clock (a restored guest's is that of the save), waits for
# the <functions> hot-plugged PCI functions to appear, and carries on.
#
# The zygote (qemu_launcher/guest_zygote.py, put in the initramfs with the python3 and
# modules it needs by qemu_launcher.preload): in a staged boot, stage 1 starts python3
# before the wait and lets it import what the guest command will; so the saved state, and
# every guest restored from it, has that interpreter ready. It listens on fd 4 and answers
# on fd 5 (two FIFOs); once the shares are mounted it moves into the new root, and stage 2
# (argument "zygote") asks it to run the guest command.
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

launch=
for p in /sys/class/virtio-ports/*; do
    [ -f "$p/name" ] && [ "$(cat "$p/name")" = eeh.launch ] && launch="/dev/${p##*/}"
done
zygote=
if [ -n "$launch" ] && [ -f /usr/lib/eeh-zygote/zygote.py ]; then
    mkfifo /zygote.in /zygote.out && exec 4<>/zygote.in 5<>/zygote.out
    /usr/bin/python3 /usr/lib/eeh-zygote/zygote.py serve </dev/console &
    if read -t 300 -r word n failed secs <&5 && [ "$word" = preloaded ]; then
        zygote=$!
        echo "EEH-GUEST-ZYGOTE preloaded $n modules in $secs s ($failed failed)"
    else
        echo "EEH-GUEST-ZYGOTE not started (${word:-no answer}): python3 starts after the go"
        kill $! 2>/dev/null
        exec 4>&- 5>&-
    fi
fi
if [ -n "$launch" ]; then
    set -- /sys/bus/pci/devices/*; before=$#
    exec 3<"$launch"
    read -r up _ </proc/uptime; echo "EEH-GUEST-WAITING uptime=$up"
    read -r word n epoch <&3 || die "no go line on $launch"
    [ "$word" = go ] || die "bad line on $launch: $word $n $epoch"
    exec 3<&-
    read -r got _ </proc/uptime
    date -s "@$epoch" >/dev/null || die "bad clock in the go line: $epoch"
    # counted with the shell's own glob: no process per look (a fork under TCG is dear)
    i=0
    while set -- /sys/bus/pci/devices/*; [ $# -lt $((before + n)) ]; do
        i=$((i + 1))
        [ $i -le 600 ] || die "$n hot-plugged PCI functions did not appear in 30 s"
        sleep 0.05
    done
    read -r up _ </proc/uptime; echo "EEH-GUEST-GO uptime=$up go=$got"
fi

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
stage2=
if [ -n "$zygote" ]; then
    # into the new root before switch_root moves it (and empties the initramfs: the
    # zygote's files stay while it has them open or mapped)
    echo "root /newroot" >&4
    if read -t 60 -r word rest <&5 && [ "$word" = rooted ]; then
        stage2=zygote
    else
        echo "EEH-GUEST-ZYGOTE not moved into the root fs (${word:-no answer} $rest)"
        kill "$zygote" 2>/dev/null
        exec 4>&- 5>&-
    fi
fi
exec switch_root /newroot /bin/sh /mnt/repo/qemu/guest-stage2.sh $stage2

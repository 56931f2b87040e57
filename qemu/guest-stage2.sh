#!/bin/sh
# Stage 2 (PID 1 on the 9p root fs): start udevd, announce readiness, run the command the
# host wrote to the results share (in the environment and directory of results/guest-env),
# hand its output and exit status back, power off.
# Markers on the console (the host's launcher reads them):
#   EEH-GUEST-STAGE2 uptime=<s>     the 9p root fs is mounted (kernel boot done)
#   EEH-GUEST-READY uptime=<s>      userspace is up, udevd runs
#   EEH-GUEST-EXIT <status>         the command finished with <status>
# With the argument "zygote" (stage 1 started one: qemu_launcher/guest_zygote.py), fd 4
# and fd 5 are its request and reply pipes: the command goes to it first, and runs here
# with sh only if the zygote answers that it cannot run it (not `python3 -m ...`).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/mnt/repo
R=/mnt/results

read -r up _ </proc/uptime; echo "EEH-GUEST-STAGE2 uptime=$up"
# udevd runs for pyudev (monitoring, hot-plug). Coldplug events are not replayed: that
# costs about 3 s under TCG, and drivers enumerate present devices from sysfs. A command
# that needs the udev database can run `udevadm trigger && udevadm settle` itself.
/usr/lib/systemd/systemd-udevd --daemon 2>/dev/null

read -r up _ </proc/uptime
echo "EEH-GUEST-READY uptime=$up"

zygote=${1:-}
status=0
if [ -f "$R/guest-command" ]; then
    cd /mnt/repo
    # the command's environment (EEH_GUEST=<this guest's name>, ...) and working
    # directory, written by the host's launcher (MachineConfig.guest_env_script)
    if [ -f "$R/guest-env" ]; then . "$R/guest-env"; fi
    ran=
    if [ "$zygote" = zygote ]; then
        z=/run/eeh-zygote
        mkdir -p $z && mkfifo $z/out
        cat /proc/self/environ >$z/env  # exactly what the command's process gets
        pwd >$z/cwd
        echo "run $R/guest-command $z/env $z/cwd $z/out $z/status" >&4
        # (busybox's read: this sh has no read -t; the zygote answers at once if alive)
        answer=$(busybox sh -c 'read -t 30 -r line <&5 && echo "$line"')
        if [ "$answer" = running ]; then
            # the zygote writes the status before it closes its end of the output
            tee "$R/guest-output.log" <$z/out
            read -r status <$z/status || {
                echo "EEH-GUEST-ZYGOTE ended without the command's exit status"
                status=255
            }
            echo "$status" >"$R/guest-exit-status"
            ran=1
        else
            echo "EEH-GUEST-ZYGOTE runs the command with sh: ${answer:-no answer}"
        fi
    fi
    exec 4>&- 5>&-
    if [ -z "$ran" ]; then
        { sh "$R/guest-command"; echo $? >"$R/guest-exit-status"; } 2>&1 | tee "$R/guest-output.log"
        read -r status <"$R/guest-exit-status"
    fi
elif [ "$zygote" = zygote ]; then
    echo quit >&4
fi
echo  # the command may not have ended its last line
echo "EEH-GUEST-EXIT $status"
sync
exec busybox poweroff -f

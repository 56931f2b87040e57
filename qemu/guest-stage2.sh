#!/bin/sh
# Stage 2 (PID 1 on the 9p root fs): start udevd, announce readiness, run the command the
# host wrote to the results share (in the environment and directory of results/guest-env),
# hand its output and exit status back, power off.
# Markers on the console (the host's launcher reads them):
#   EEH-GUEST-STAGE2 uptime=<s>     the 9p root fs is mounted (kernel boot done)
#   EEH-GUEST-READY uptime=<s>      userspace is up, udevd runs
#   EEH-GUEST-EXIT <status>         the command finished with <status>
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

status=0
if [ -f "$R/guest-command" ]; then
    cd /mnt/repo
    # the command's environment (EEH_GUEST=<this guest's name>, ...) and working
    # directory, written by the host's launcher (MachineConfig.guest_env_script)
    if [ -f "$R/guest-env" ]; then . "$R/guest-env"; fi
    { sh "$R/guest-command"; echo $? >"$R/guest-exit-status"; } 2>&1 | tee "$R/guest-output.log"
    read -r status <"$R/guest-exit-status"
fi
echo  # the command may not have ended its last line
echo "EEH-GUEST-EXIT $status"
sync
exec busybox poweroff -f

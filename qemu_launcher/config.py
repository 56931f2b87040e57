"""Frozen configuration of one QEMU guest, and the pure function that turns it into argv."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qemu_launcher.assets import GuestAssets
from qemu_launcher.errors import VmError

READY_MARKER = "EEH-GUEST-READY"
EXIT_MARKER = "EEH-GUEST-EXIT"
INIT_FAILED_MARKER = "EEH-GUEST-INIT-FAILED"
# The shares every guest has (qemu/initramfs-init.sh mounts them): the root fs, the
# checkout at /mnt/repo, the run's results at /mnt/results.
BUILTIN_SHARES = ("root", "repo", "results")
SHARE_TAG = re.compile(r"[a-z][a-z0-9_]{0,15}")
# The kernel argument that names the extra shares to the initramfs (comma-separated tags)
SHARES_ARG = "eeh.mnt"
GUEST_CWD = "/mnt/repo"  # where the guest command runs unless told otherwise
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(VmError):
    """A machine configuration that cannot be started (a bad share or guest variable)."""


@dataclass(frozen=True)
class Share:
    """A host directory every guest of a machine mounts read-only at /mnt/<tag> (9p)."""

    tag: str
    path: Path

    def __post_init__(self) -> None:
        if not SHARE_TAG.fullmatch(self.tag) or self.tag in BUILTIN_SHARES:
            raise ConfigError(f"share tag {self.tag!r}: a lowercase letter, then up to 15 "
                              f"of a-z, 0-9, _ (not {', '.join(BUILTIN_SHARES)})")
        if not self.path.is_dir():
            raise ConfigError(f"share {self.tag}: {self.path} is not a directory")

    @property
    def guest_path(self) -> str:
        return f"/mnt/{self.tag}"


@dataclass(frozen=True)
class VfioUserDevice:
    """A function served by the device model over vfio-user, cold-plugged at start."""

    id: str
    socket: Path
    root_port: str  # id of the pcie-root-port it sits on
    msix: bool = True  # the function has an MSI-X capability (see machine.UNPLUG_FIX)

    def qdev(self) -> dict[str, object]:
        """The device as QMP `device_add` arguments (also used, as JSON, on the command line)."""
        return {"driver": "vfio-user-pci", "id": self.id, "bus": self.root_port,
                "socket": {"type": "unix", "path": str(self.socket)}}


@dataclass(frozen=True)
class MachineConfig:
    """Everything that decides a guest's QEMU command line."""

    name: str = "guest"
    memory_mib: int = 512
    cpus: int = 1
    accel: str = "tcg"  # "tcg" or "kvm"; "auto" is resolved by the launcher's probe
    kernel_args: tuple[str, ...] = ()
    root_ports: int = 0  # spare pcie-root-ports (for vfio-user functions and hot-plug)
    vfio_user: tuple[VfioUserDevice, ...] = ()
    extra_args: tuple[str, ...] = ()
    boot_timeout: float = 120.0  # seconds until the readiness marker, or BootTimeout
    host_cpus: tuple[int, ...] = ()  # host CPUs QEMU's threads may run on (empty: any)
    shares: tuple[Share, ...] = ()  # extra read-only directories, at /mnt/<tag>
    # the guest command's environment besides EEH_GUEST (always the machine's name), and
    # where it runs (default GUEST_CWD)
    guest_env: tuple[tuple[str, str], ...] = ()
    guest_cwd: str = GUEST_CWD

    def __post_init__(self) -> None:
        tags = [s.tag for s in self.shares]
        if len(set(tags)) != len(tags):
            raise ConfigError(f"machine {self.name}: a share tag twice: {tags}")
        for key, value in self.guest_env:
            if not ENV_NAME.fullmatch(key) or "\0" in value:
                raise ConfigError(f"machine {self.name}: guest variable {key!r} "
                                  "(a name of letters, digits and _, a value without NUL)")
        if not self.guest_cwd.startswith("/") or "\0" in self.guest_cwd:
            raise ConfigError(f"machine {self.name}: guest_cwd {self.guest_cwd!r} is not an "
                              "absolute path")

    def root_port_ids(self) -> list[str]:
        return [f"rp{i}" for i in range(self.root_ports)]

    def guest_environment(self) -> dict[str, str]:
        """The variables the guest command gets: EEH_GUEST, then `guest_env`."""
        return {"EEH_GUEST": self.name, **dict(self.guest_env)}

    def guest_env_script(self) -> str:
        """What qemu/guest-stage2.sh sources before the command (results/guest-env)."""
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.guest_environment().items()]
        return "\n".join([*lines, f"cd {shlex.quote(self.guest_cwd)}"]) + "\n"


def env_pairs(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """A mapping as MachineConfig.guest_env (ordered, hashable)."""
    return tuple((str(k), str(v)) for k, v in env.items())


@dataclass(frozen=True)
class RunPaths:
    """Where one run's files go: artifacts (kept) and sockets (short path, removed)."""

    run_dir: Path
    sock_dir: Path
    repo: Path

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.run_dir / "qemu.log"

    @property
    def qmp_log(self) -> Path:
        return self.run_dir / "qmp.jsonl"

    @property
    def results(self) -> Path:
        return self.run_dir / "results"

    @property
    def qmp_socket(self) -> Path:
        return self.sock_dir / "qmp.sock"

    @property
    def launch_socket(self) -> Path:
        return self.sock_dir / "launch.sock"


@dataclass(frozen=True)
class CommandLine:
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = field(default=())


# Kernel arguments that shorten a boot under TCG, where every instruction is emulated
# (measured with `initcall_debug ignore_loglevel`, bench.boot): no self-tests of the crypto
# algorithms (~0.4 s), no read-only marking and W+X scan of kernel memory, none of the
# slowest initcalls that nothing here uses (jitter-entropy RNG self-test, BPF struct_ops
# BTF setup, trace enum maps), no PS/2 probing, one UART, and no local APIC timer (its
# calibration waits out ~0.1 s of emulated time; the HPET drives the single CPU's tick).
# no_timer_check: the kernel's check that the IO-APIC timer ticks within a busy-wait of
# its own panics ("IO-APIC + timer doesn't work") when a loaded host starves the TCG
# guest during it (seen with 5 QEMUs on 2 host CPUs); the timer works, the check is moot.
FAST_BOOT_ARGS = ("cryptomgr.notests", "rodata=off", "no_timer_check",
                  "initcall_blacklist=jent_mod_init,bpf_tcp_ca_kfunc_init,"
                  "bpf_dummy_struct_ops_init,trace_eval_init",
                  "i8042.noaux", "i8042.nokbd", "i8042.nopnp", "8250.nr_uarts=1",
                  "noapictimer")


# TCG's default CPU (qemu64) plus RDRAND, which TCG emulates from the host's RNG: the
# kernel's RNG is then ready during boot. Without it the first read of /dev/urandom (by
# python3's start) waits for the kernel's jitter entropy, ~0.9 s of busy CPU per guest.
# (`max` instead: the kernel boots 0.3 s slower.)
TCG_CPU = "qemu64,+rdrand"


def boot_kernel(cfg: MachineConfig, assets: GuestAssets) -> Path:
    """Under TCG the uncompressed kernel (PVH entry: no emulated decompressor, qemu_launcher.pvh);
    else, or if there is none, the compressed one. (qboot instead of SeaBIOS saves only
    ~0.05 s more with PVH, and numbers the root ports' buses in reverse.)"""
    return assets.pvh_kernel if cfg.accel == "tcg" and assets.pvh_kernel else assets.kernel


def build_command(cfg: MachineConfig, assets: GuestAssets, paths: RunPaths) -> CommandLine:
    """The QEMU argv for `cfg`: a list, never a shell string."""
    mem = f"{cfg.memory_mib}M"
    mounts = (f"{SHARES_ARG}={','.join(s.tag for s in cfg.shares)}",) if cfg.shares else ()
    append = " ".join(("console=ttyS0", "quiet", "panic=-1", "mitigations=off",
                       *FAST_BOOT_ARGS, *cfg.kernel_args, *mounts))
    a: list[str] = [*assets.qemu.argv]
    a += ["-name", cfg.name, "-machine", "q35,memory-backend=mem", "-accel", cfg.accel,
          "-cpu", TCG_CPU if cfg.accel == "tcg" else "host",
          "-smp", str(cfg.cpus), "-m", mem,
          "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
          "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
          "-kernel", str(boot_kernel(cfg, assets)), "-initrd", str(assets.initramfs),
          "-append", append,
          "-chardev", f"file,id=console0,path={paths.console_log}",
          "-serial", "chardev:console0",
          "-chardev", f"socket,id=qmp0,path={paths.qmp_socket}",
          "-mon", "chardev=qmp0,mode=control"]
    shares = (("root", assets.rootfs, True), ("repo", paths.repo, True),
              ("results", paths.results, False), *((s.tag, s.path, True) for s in cfg.shares))
    for i, (tag, path, ro) in enumerate(shares):
        a += ["-fsdev", f"local,id=fs{i},path={str(path).replace(',', ',,')},"
              "security_model=none"
              + (",readonly=on" if ro else ""),
              "-device", f"virtio-9p-pci,fsdev=fs{i},mount_tag={tag}"]
    for i, rp in enumerate(cfg.root_port_ids()):
        a += ["-device", f"pcie-root-port,id={rp},chassis={i + 1},slot={i + 1}"]
    for dev in cfg.vfio_user:
        a += ["-device", json.dumps(dev.qdev())]
    a += list(cfg.extra_args)
    return CommandLine(tuple(a), assets.qemu.env)

"""The guest kernel as an uncompressed ELF, for a PVH boot under TCG.

A `-kernel bzImage` boot runs firmware, the real-mode setup code and then the kernel's
own decompressor (zstd, about 57 MB out of 12 MB), all emulated instruction by
instruction under TCG: about 0.6 s of each guest's CPU before the kernel's first line.
The Debian kernel is built with CONFIG_PVH, so QEMU can load the uncompressed ELF
directly (its XEN_ELFNOTE_PHYS32_ENTRY note names the 32-bit entry point) and jump in.

The ELF is the bzImage's payload (boot protocol >= 2.08: `payload_offset` and
`payload_length` in the setup header; the payload's last 4 bytes are the uncompressed
size), decompressed once per kernel into the asset cache by the root fs's python3 with
the root fs's libzstd (qemu_launcher.rootfs_python: the host needs neither). Anything unexpected
(another compression, no PVH note, no libzstd) yields None and guests boot the bzImage.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

from qemu_launcher.rootfs_python import run_rootfs_python

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XEN_ELFNOTE_PHYS32_ENTRY = 18

_SCRIPT = """
import ctypes, sys
lib, src, start, end, size, out = sys.argv[1:]
z = ctypes.CDLL(lib)
z.ZSTD_decompress.restype = ctypes.c_size_t
z.ZSTD_decompress.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p,
                              ctypes.c_size_t]
z.ZSTD_isError.argtypes = [ctypes.c_size_t]
with open(src, "rb") as f:
    data = f.read()[int(start):int(end)]
dst = ctypes.create_string_buffer(int(size))
n = z.ZSTD_decompress(dst, int(size), data, len(data))
if z.ZSTD_isError(n) or n != int(size):
    sys.exit(f"ZSTD_decompress: {n} of {size} bytes")
with open(out, "wb") as f:
    f.write(dst.raw)
"""


def zstd_payload(bzimage: bytes) -> tuple[int, int, int] | None:
    """(start, end, uncompressed size) of the zstd frame in a bzImage, or None."""
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        return None
    version, = struct.unpack_from("<H", bzimage, 0x206)
    if version < 0x208:
        return None
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    end = start + length
    if length < 8 or end > len(bzimage) or bzimage[start:start + 4] != ZSTD_MAGIC:
        return None
    size, = struct.unpack_from("<I", bzimage, end - 4)
    return start, end - 4, size


def has_pvh_entry(elf: bytes) -> bool:
    """A 64-bit little-endian ELF with a Xen PHYS32_ENTRY note (what QEMU's PVH loader
    looks for)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    try:
        return _xen_note(elf, XEN_ELFNOTE_PHYS32_ENTRY)
    except struct.error:  # truncated
        return False


def _xen_note(elf: bytes, wanted: int) -> bool:
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize)
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == wanted:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def ensure_pvh_kernel(bzimage: Path, rootfs: Path, cache_dir: Path,
                      timeout: float = 120.0) -> tuple[Path | None, str]:
    """The uncompressed kernel for a PVH boot (built once per kernel), or (None, why)."""
    st = bzimage.stat()
    key = hashlib.sha256(f"{bzimage}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    path = cache_dir / f"vmlinux-{key}"
    if path.exists():
        return path, ""
    data = bzimage.read_bytes()
    found = zstd_payload(data)
    if found is None:
        return None, f"{bzimage.name}: no zstd payload"
    libzstd = rootfs / "usr/lib/x86_64-linux-gnu/libzstd.so.1"
    if not libzstd.exists():
        return None, f"no {libzstd}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    start, end, size = found
    name, p = run_rootfs_python(rootfs, _SCRIPT, [str(libzstd), str(bzimage), str(start),
                                                  str(end), str(size), str(tmp)],
                                cache_dir, timeout)
    try:
        if isinstance(p, str) or p.returncode != 0:
            why = p if isinstance(p, str) else (p.stderr or p.stdout).strip()[-300:]
            return None, f"decompressing with {name or 'python3'}: {why}"
        if not has_pvh_entry(tmp.read_bytes()):
            return None, f"{bzimage.name}: the kernel has no PVH entry point"
        os.replace(tmp, path)
        return path, ""
    finally:
        tmp.unlink(missing_ok=True)

"""Config space: capabilities placed and chained into a 4 KiB layout, and its runtime.

`build_layout` turns a header and capability declarations into one `Layout`, generating
each capability header (ID and next pointer) so the chain can never disagree with the
declarations. `ConfigSpace` is a `RegisterFile` with the few hardware operations the model
needs: decode/bus-master state, BAR bases, and recording an AER error the way the spec's
error-logging flow does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from device_model.errors import LayoutError
from device_model.pci import ids
from device_model.pci.caps import Capability
from device_model.regs import Layout, Register, RegisterFile, const, reg, ro


def build_layout(name: str, header: Sequence[Register],
                 caps: Sequence[tuple[int, Capability]],
                 ext_caps: Sequence[tuple[int, Capability]]) -> Layout:
    """A config-space layout; the header's cap_ptr must name the first standard capability."""
    regs = list(header)
    _check_places(name, caps, 0x40, ids.EXT_CAP_START)
    _check_places(name, ext_caps, ids.EXT_CAP_START, ids.CONFIG_SIZE)
    for k, (off, cap) in enumerate(caps):
        if cap.extended:
            raise LayoutError(name, f"{cap.name} is an extended capability")
        nxt = caps[k + 1][0] if k + 1 < len(caps) else 0
        regs.append(const(f"{cap.name}.cap_id", off, 1, cap.cap_id))
        regs.append(const(f"{cap.name}.next", off + 1, 1, nxt))
        regs += [r.moved(off + r.offset, f"{cap.name}.") for r in cap.body]
    for k, (off, cap) in enumerate(ext_caps):
        if not cap.extended:
            raise LayoutError(name, f"{cap.name} is not an extended capability")
        nxt = ext_caps[k + 1][0] if k + 1 < len(ext_caps) else 0
        regs.append(reg(f"{cap.name}.header", off, 4, ro("id", 0, 16, cap.cap_id),
                        ro("version", 16, 4, cap.version), ro("next", 20, 12, nxt)))
        regs += [r.moved(off + r.offset, f"{cap.name}.") for r in cap.body]
    return Layout(name, ids.CONFIG_SIZE, regs)


def _check_places(name: str, caps: Sequence[tuple[int, Capability]], lo: int, hi: int) -> None:
    end = lo
    for off, cap in caps:
        if off % 4 or off < end or off + cap.size > hi:
            raise LayoutError(name, f"{cap.name} at 0x{off:x} misplaced (dword aligned, "
                                    f"in 0x{lo:x}-0x{hi:x}, no overlap, chained in order)")
        end = off + cap.size


@dataclass(frozen=True)
class AerRecord:
    """What recording one uncorrectable error did."""

    bit: int
    fatal: bool
    masked: bool
    first: bool  # it became the First Error Pointer (and its header was logged)


class ConfigSpace(RegisterFile):
    """One function's config space values."""

    @property
    def memory_enabled(self) -> bool:
        return bool(self.stored("command") & ids.CMD_MEMORY)

    @property
    def bus_master(self) -> bool:
        return bool(self.stored("command") & ids.CMD_BUS_MASTER)

    def bar_base(self, n: int) -> int:
        return self.stored(f"bar{n}") & ~0xF

    def record_uncorrectable(self, bit: int, header: Sequence[int] = (0, 0, 0, 0)) -> AerRecord:
        """Log one uncorrectable error as the AER flow does.

        Status bit set; Device Status fatal/non-fatal by the severity register (always,
        masked or not); First Error Pointer and Header Log only if unmasked and no earlier
        first error is still pending.
        """
        before = self.stored("aer.uncor_status")
        self.set_bits("aer.uncor_status", bit)
        fatal = bool(self.stored("aer.uncor_severity") & bit)
        self.set_bits("pcie.devsta", ids.DEVSTA_FED if fatal else ids.DEVSTA_NFED)
        if bit == ids.AerUncorrectable.UNSUPPORTED_REQUEST:
            self.set_bits("pcie.devsta", ids.DEVSTA_URD)
        masked = bool(self.stored("aer.uncor_mask") & bit)
        first = False
        if not masked:
            fep = self.field("aer.capctl", "first_error")
            if not before & (1 << fep):
                self.set_field("aer.capctl", "first_error", bit.bit_length() - 1)
                for n in range(4):
                    self.set(f"aer.header_log{n}", header[n] if n < len(header) else 0)
                first = True
        return AerRecord(bit, fatal, masked, first)

    def aer_snapshot(self) -> dict[str, int]:
        names = ("uncor_status", "uncor_mask", "uncor_severity", "cor_status", "capctl",
                 "header_log0", "header_log1", "header_log2", "header_log3")
        out = {n: self.stored(f"aer.{n}") for n in names}
        out["devsta"] = self.stored("pcie.devsta")
        out["status"] = self.stored("status")
        return out

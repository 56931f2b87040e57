"""How a driver reaches hardware: PCI functions, their BARs, DMA memory.

Inside a guest (VM mode) that is Linux sysfs (`sysfs`) and /proc/self/pagemap (`dma`).
Runs on the guest's python3 with the standard library only (pyudev is optional).
"""

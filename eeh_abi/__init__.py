"""The interfaces both sides agree on: standard library only, importable in a guest.

- `eeh_abi.papr`: PE state codes, RTAS call names and statuses, set-eeh-option and
  set-slot-reset functions, ibm,errinjct error functions, Linux's recovery results.
- `eeh_abi.hcall`: the platform-call wire protocol (versioned JSON lines) shared by the
  hypervisor shim (server) and the guest drivers (client).
- `eeh_abi.nic`: the adapter's IDs, register offsets, named bits and descriptor format.

Nothing here imports the device model, the shim or the drivers; they all import this.
"""

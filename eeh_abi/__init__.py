"""The interfaces both sides agree on: standard library only, importable in a guest.

- `eeh_abi.papr`: PE state codes, RTAS call names and statuses, set-eeh-option and
  set-slot-reset functions, ibm,errinjct error functions, Linux's recovery results.
- `eeh_abi.hcall`: the platform-call wire protocol (versioned JSON lines) shared by the
  hypervisor shim (server) and the guest drivers (client).
- `eeh_abi.schema`: every platform call (arguments, reply, statuses, the authorization
  action) and pushed event, declared once; the server, the client and
  docs/platform-calls.md are made from it.
- `eeh_abi.vocabulary`: the timeline's sources and kinds (`Source`, `Kind`: StrEnums,
  equal to their strings).
- `eeh_abi.strict_json`: the one strict JSON parser and compact writer.
- `eeh_abi.nic`: the adapter's IDs, register offsets, named bits and descriptor format.

Nothing here imports the device model, the shim or the drivers; they all import this.
"""

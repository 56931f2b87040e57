"""Helpers shared by the tests (not part of any product package; nothing outside tests/
imports them).

- `platform_rig`: the real platform (hypervisor_shim.platform.Platform) in harness mode
  for driver tests: drivers over vfio-user, books read from the platform's timeline;
  `hold_allow_unfreeze` / `holding_backend` make every VF driver meet the lockout.
- `channels.TapChannel`: a driver's channel with client-side hooks (hold a call, act
  between a reply and its return, lose an event); the platform behind it stays real.
- `scripted_platform`: the one platform fake (PE states by hand, for exact sequences),
  held to the real platform by tests/unit/drivers/test_platform_contract.py;
  `pe_subjects`: one VF PE on either platform, for the checks that run on both.
- `waiting`: `wait_for` (a bounded poll) and `short_tmp`; `dma.MmapPages`; `frames`
  (what a test frame carries); `qmpshell` (the stock qmp-shell as an operator).
"""

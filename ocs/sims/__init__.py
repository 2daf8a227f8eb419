"""Simulators of the outside world the OCS talks to, for the demo, tests and bench/: none of
the production packages imports them.

- :mod:`ocs.sims.traffic`: subscribers making calls, SMS and data through the native protocol
  (the demo's switch);
- :mod:`ocs.sims.switch`: a switch writing TS 32.297 CDR files for the mediation
  (``ocs switch-sim``);
- :mod:`ocs.sims.msc`: an MSC/gsmSSF placing CAMEL calls over SIGTRAN (``ocs msc-sim``);
- :mod:`ocs.sims.hlr`: an HLR/HSS the provisioning worker bars and unbars (``ocs hlr-sim``);
- :mod:`ocs.sims.feeds`: the order and trouble-ticket feeds of enterprise billing
  (``ocs billing feed-sim``).
"""

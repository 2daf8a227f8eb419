"""Locust scenarios for the OCS: network elements that charge calls, data sessions and SMS over
the native protocol or Diameter Gy, a customer-care desk that tops up and reads balances over
the admin API, and the checks that run after a load test (docs/load-testing.md).

* ``traffic``: the traffic model (Poisson arrivals, exponential holding times, data volumes,
  the mix) and the subscriber population; plain Python.
* ``clients``: blocking clients for gevent over the sans-IO codecs (one connection shared by
  every session of a network element).
* ``network``: a call, a data session and an SMS as a network element runs them, over either
  protocol, reported per message type with its result code.
* ``results``: latency histograms, result codes, the client's ledger; merged across Locust
  processes and written as JSON.
* ``locustfile``: the Locust users and options (``locust -f bench/locust/locustfile.py``).
* ``invariants``: the money and outbox checks against Redis after a run.
* ``summary``: the requests/s and percentiles per message type, the SLO gate, Markdown.

``bench/load.py`` (``make load``) starts Redis and the OCS, runs Locust, checks and reports.
"""

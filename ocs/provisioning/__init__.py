"""Barring in the network: the provisioning worker, its adapters, the HLR simulator, the
callbacks and the webhooks (docs/barring.md).

The balance scripts decide (a threshold crossed, an account suspended) and write a barring
notification in the same step; everything here carries the decision to the HLR, at least
once and in order per subscriber, and records what the HLR confirmed.
"""

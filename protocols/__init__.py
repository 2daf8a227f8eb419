"""Wire protocols of the OCS as sans-IO codecs plus their asyncio transports.

This is the lowest layer: nothing here imports from ``ocs``. Each protocol lives in its own
package (``protocols.native``, ...) with a ``codec`` that turns bytes into typed events and
back without doing any I/O, and a ``server`` (and where useful a ``client``) that moves those
bytes over asyncio.
"""

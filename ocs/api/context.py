"""What the API's handlers find on the app, set once by :func:`ocs.api.app.create_app`:
the store, metrics, clock, tariffs, provisioning and the body timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from aiohttp import web

from ocs.charging.tariffs import TariffRegistry
from ocs.metrics import Metrics
from ocs.provisioning.service import Provisioning
from ocs.store.store import Store

#: Unix milliseconds now; injected so that tests and replays control time.
Clock = Callable[[], int]

STORE: Final = web.AppKey("ocs.store", Store)
METRICS: Final = web.AppKey("ocs.metrics", Metrics)
CLOCK: Final = web.AppKey[Clock]("ocs.clock")
TARIFFS: Final = web.AppKey("ocs.tariffs", TariffRegistry)
PROVISIONING: Final = web.AppKey("ocs.provisioning", Provisioning)
#: Seconds a request body may take to arrive.
BODY_TIMEOUT: Final = web.AppKey("ocs.body_timeout", float)

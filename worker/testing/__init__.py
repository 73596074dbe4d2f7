"""Test tooling shipped with the tracker: the simulator of useapi.net, which the tests, the
benchmarks and ``pixverse-tracker demo`` share::

    from pixverse_tracker.testing import Simulator, make_id

    with Simulator(token="t") as sim:
        ...  # point USEAPI_BASE_URL at sim.base_url
"""

from pixverse_tracker.testing.routes import LoggedRequest, SchedulerRead
from pixverse_tracker.testing.scenarios import make_id
from pixverse_tracker.testing.simulator import Simulator

__all__ = ["LoggedRequest", "SchedulerRead", "Simulator", "make_id"]

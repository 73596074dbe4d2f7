"""Test tooling shipped with the tracker: the simulator of useapi.net, which the tests, the
benchmarks and ``pixverse-tracker demo`` share, and the harness that runs real tracker
processes against it (``processes``)::

    from pixverse_tracker.testing import Simulator, make_id

    with Simulator(token="t") as sim:
        ...  # point USEAPI_BASE_URL at sim.base_url
"""

from pixverse_tracker.testing.processes import CLI, Processes, base_env, queue_prefix, tracker_env
from pixverse_tracker.testing.routes import LoggedRequest, SchedulerRead
from pixverse_tracker.testing.scenarios import make_id
from pixverse_tracker.testing.simulator import Simulator

__all__ = [
    "CLI",
    "LoggedRequest",
    "Processes",
    "SchedulerRead",
    "Simulator",
    "base_env",
    "make_id",
    "queue_prefix",
    "tracker_env",
]

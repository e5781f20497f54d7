"""Python client for greenlight: humans approve or deny AI agents' code from Slack.

>>> from greenlight_client import Client
>>> decision = Client("http://127.0.0.1:8080", "token").request_approval("rm -rf build/", language="sh")
>>> decision.approved, decision.reason

For AutoGen (and MagenticOne), see :mod:`greenlight_client.autogen`; for agent
frameworks that stop and resume, :mod:`greenlight_client.agent_framework`,
:mod:`greenlight_client.openai_agents`, :mod:`greenlight_client.langgraph` and
:mod:`greenlight_client.pydantic_ai`.
"""

__version__ = "0.1.0"

from ._batch import Batch  # noqa: E402
from ._core import Decision  # noqa: E402
from ._manage import Grant, GreenlightError  # noqa: E402
from .client import AsyncClient, Client  # noqa: E402

__all__ = ["AsyncClient", "Batch", "Client", "Decision", "Grant", "GreenlightError", "__version__"]

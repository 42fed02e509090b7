"""A hostile web on loopback: servers that lie below the HTTP library (see ``routes`` for the table)."""

from .routes import CREME_BRULEE, NXDOMAIN_URL, SCRIPT_TITLE, Route
from .server import HostileWeb

__all__ = ["CREME_BRULEE", "NXDOMAIN_URL", "SCRIPT_TITLE", "HostileWeb", "Route"]

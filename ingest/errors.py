"""The errors a linklens user can meet. Each message says what failed and what to do."""


class LinklensError(Exception):
    """Base of every error that is meant to reach a user as one sentence.

    `http_status` lets the HTTP layer map it without knowing every subclass.
    """

    http_status = 500


class ConfigError(LinklensError):
    """A setting has a value linklens cannot use."""


class SourceError(LinklensError):
    """The list given to crawl cannot be read or holds no links."""

    http_status = 400


class StoreError(LinklensError):
    """The data folder or the page store cannot be used."""


class NotBuiltError(LinklensError):
    """Something was asked of an index that has not been built yet."""

    http_status = 503


class BuildLockedError(LinklensError):
    """Another build is writing a snapshot in the same data folder."""

    http_status = 409


class CrawlLockedError(LinklensError):
    """Another crawl is writing to the page store of the same data folder."""

    http_status = 409


class SnapshotMismatchError(LinklensError):
    """A snapshot was built with another model than the one configured."""

    http_status = 503


class BadQueryError(LinklensError):
    """A search request is malformed."""

    http_status = 400


class UnknownListError(BadQueryError):
    """A list name that the store or the index does not hold."""

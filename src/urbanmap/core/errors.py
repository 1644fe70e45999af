"""The one exception type the CLI turns into a one-line message and exit status 2."""


class InputError(Exception):
    """Bad input: a missing or unreadable file, a wrong CRS, an empty result, a bad config.

    The message names the file (or config key) and the problem, on one line.
    """

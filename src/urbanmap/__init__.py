"""urbanmap: urban areas from Landsat on a national grid, for national statistical offices."""

__version__ = "0.1.0"

"""Where the heavy stages run: tiles of a region, the local / Dask executor and its
typed settings, and `urbanmap plan` (a dry run with estimated costs)."""

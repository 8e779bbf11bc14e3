"""Built-in experiment trackers (``piebench run --log NAME``)."""

"""Built-in piebench plugins."""

"""``python -m piebench`` (also what torchrun launches)."""

from .cli import main

main()

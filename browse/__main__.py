"""`python -m browse` serves the app."""

from .cli import main

main()

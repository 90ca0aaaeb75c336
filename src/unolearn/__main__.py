"""``python -m unolearn`` runs the command line."""

from .cli import main

main()

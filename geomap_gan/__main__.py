"""``python -m geomap_gan`` runs the CLI."""

from .cli import main

main()

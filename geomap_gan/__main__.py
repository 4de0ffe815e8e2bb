"""``python -m geomap_gan`` runs the CLI."""

from geomap_gan.cli import main

main()

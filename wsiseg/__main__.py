"""``python -m wsiseg`` runs the command line."""

from wsiseg.cli import main

main()

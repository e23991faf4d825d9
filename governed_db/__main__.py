"""``python -m governed_db`` runs the ``governed-db`` command line."""

from .cli import main

main()

"""``python -m governed_db.cli`` runs the ``governed-db`` command line."""

from . import main

main()

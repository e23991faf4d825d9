# For type checkers: at run time governed_db.abc *is* psycopg.abc (see _aliases.py).
from psycopg.abc import *

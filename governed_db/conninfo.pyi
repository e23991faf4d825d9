# For type checkers: at run time governed_db.conninfo *is* psycopg.conninfo (see _aliases.py).
from psycopg.conninfo import *

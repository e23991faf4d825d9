# For type checkers: at run time governed_db.adapt *is* psycopg.adapt (see _aliases.py).
from psycopg.adapt import *

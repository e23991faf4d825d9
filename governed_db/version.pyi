# For type checkers: at run time governed_db.version *is* psycopg.version (see _aliases.py).
from psycopg.version import *

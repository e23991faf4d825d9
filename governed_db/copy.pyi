# For type checkers: at run time governed_db.copy *is* psycopg.copy (see _aliases.py).
from psycopg.copy import *

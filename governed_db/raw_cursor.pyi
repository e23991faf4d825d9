# For type checkers: at run time governed_db.raw_cursor *is* psycopg.raw_cursor (see _aliases.py).
from psycopg.raw_cursor import *

# For type checkers: at run time governed_db.cursor *is* psycopg.cursor (see _aliases.py).
from psycopg.cursor import *

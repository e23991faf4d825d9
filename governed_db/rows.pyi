# For type checkers: at run time governed_db.rows *is* psycopg.rows (see _aliases.py).
from psycopg.rows import *

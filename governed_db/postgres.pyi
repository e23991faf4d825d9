# For type checkers: at run time governed_db.postgres *is* psycopg.postgres (see _aliases.py).
from psycopg.postgres import *

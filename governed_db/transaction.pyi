# For type checkers: at run time governed_db.transaction *is* psycopg.transaction (see _aliases.py).
from psycopg.transaction import *

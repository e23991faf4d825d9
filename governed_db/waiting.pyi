# For type checkers: at run time governed_db.waiting *is* psycopg.waiting (see _aliases.py).
from psycopg.waiting import *

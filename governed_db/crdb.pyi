# For type checkers: at run time governed_db.crdb *is* psycopg.crdb (see _aliases.py).
from psycopg.crdb import *

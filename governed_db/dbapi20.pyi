# For type checkers: at run time governed_db.dbapi20 *is* psycopg.dbapi20 (see _aliases.py).
from psycopg.dbapi20 import *

# For type checkers: at run time governed_db.sql *is* psycopg.sql (see _aliases.py).
from psycopg.sql import *

# For type checkers: at run time governed_db.connection *is* psycopg.connection (see _aliases.py).
from psycopg.connection import *

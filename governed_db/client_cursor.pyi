# For type checkers: at run time governed_db.client_cursor *is* psycopg.client_cursor (see _aliases.py).
from psycopg.client_cursor import *

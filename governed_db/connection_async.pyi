# For type checkers: at run time governed_db.connection_async *is* psycopg.connection_async (see _aliases.py).
from psycopg.connection_async import *

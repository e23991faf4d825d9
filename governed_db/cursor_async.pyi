# For type checkers: at run time governed_db.cursor_async *is* psycopg.cursor_async (see _aliases.py).
from psycopg.cursor_async import *

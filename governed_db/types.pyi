# For type checkers: at run time governed_db.types *is* psycopg.types (see _aliases.py).
from psycopg.types import *

# For type checkers: at run time governed_db.generators *is* psycopg.generators (see _aliases.py).
from psycopg.generators import *

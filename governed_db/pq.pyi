# For type checkers: at run time governed_db.pq *is* psycopg.pq (see _aliases.py).
from psycopg.pq import *

"""Integrations with libraries that drive psycopg for you (SQLAlchemy, LangChain, LlamaIndex)."""

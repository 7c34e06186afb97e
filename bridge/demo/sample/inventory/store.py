"""Items kept in SQLite."""

import sqlite3


class Store:
    def __init__(self, path=":memory:"):
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS items (name TEXT, price REAL, quantity INTEGER)")

    def add(self, name, price, quantity=1):
        self.db.execute("INSERT INTO items VALUES (?, ?, ?)", (name, price, quantity))

    def find(self, name):
        # Seeded bug (security): the name is pasted into the SQL text.
        rows = self.db.execute(f"SELECT name, price, quantity FROM items WHERE name = '{name}'")
        return rows.fetchall()

    def total_value(self):
        # Seeded bug (correctness): quantities are ignored.
        return sum(price for _, price, _ in self.db.execute("SELECT * FROM items"))

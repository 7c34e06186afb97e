import unittest

from inventory.store import Store
from inventory.util import dedupe


class StoreTest(unittest.TestCase):
    def test_find(self):
        s = Store()
        s.add("apple", 0.5, 10)
        self.assertEqual(s.find("apple"), [("apple", 0.5, 10)])

    def test_find_does_not_inject(self):
        s = Store()
        s.add("apple", 0.5, 10)
        self.assertEqual(s.find("x' OR '1'='1"), [])

    def test_total_value_counts_quantity(self):
        s = Store()
        s.add("apple", 0.5, 10)
        s.add("pear", 2.0, 1)
        self.assertEqual(s.total_value(), 7.0)

    def test_dedupe_keeps_order(self):
        self.assertEqual(dedupe(["b", "a", "b", "c", "a"]), ["b", "a", "c"])

"""Benchmarks: what each resolver costs and what it buys. Each module runs alone."""

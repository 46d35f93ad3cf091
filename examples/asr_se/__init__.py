"""Flagship example: joint speech enhancement + recognition trained with gradient resolvers."""

"""Fakes of the outside protocols our adapters talk to (never mocks of our own code)."""

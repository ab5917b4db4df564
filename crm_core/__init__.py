"""The domain and the system of record: clients, leads, deals, calls, users.

Imports no other top-level package of this project and no transport library.
"""

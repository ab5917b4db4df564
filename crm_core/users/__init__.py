"""Users, roles, PBX extensions, password hashing and API/session tokens."""

"""Errors of the users slice."""

from __future__ import annotations

from crm_core.errors import Conflict, InvalidInput, NotAuthenticated


class InvalidCredentials(NotAuthenticated):
    error_id = "invalid-credentials"


class LoginTaken(Conflict):
    error_id = "login-taken"


class ExtensionTaken(Conflict):
    error_id = "extension-taken"


class InvalidUser(InvalidInput):
    error_id = "invalid-user"

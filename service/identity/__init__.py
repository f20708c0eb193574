"""Who is calling: API keys and client certificates naming tenants, and what a tenant may use."""

from service.identity.auth import ANONYMOUS, Authenticator, Caller, KeyRing
from service.identity.errors import BudgetExceeded, PermissionDenied, TooManyFailures, Unauthenticated
from service.identity.keys import KeyHasher, KeyRecord

__all__ = [
    "ANONYMOUS",
    "Authenticator",
    "BudgetExceeded",
    "Caller",
    "KeyHasher",
    "KeyRecord",
    "KeyRing",
    "PermissionDenied",
    "TooManyFailures",
    "Unauthenticated",
]

"""Request and response models of ``/api/auth``: the password policy and the age rule live here.

Password policy (NIST SP 800-63B style): 10 to 128 characters, at least 5 distinct ones, not a
well-known password, not the email address. Email addresses are normalised to lower case.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, model_validator

from common.models import GENDERS

MIN_AGE = 18
MAX_AGE = 120
PASSWORD_MIN, PASSWORD_MAX = 10, 128
_COMMON_PASSWORDS = frozenset(
    {
        "password123",
        "password1234",
        "1234567890",
        "12345678910",
        "qwertyuiop",
        "qwerty12345",
        "iloveyou123",
        "abcdefghij",
        "passw0rd123",
        "letmein1234",
        "welcome1234",
        "adminadmin",
        "0987654321",
        "1111111111",
        "aaaaaaaaaa",
        "mergemeet123",
    }
)

Gender = Literal["woman", "man", "nonbinary"]
assert set(GENDERS) == {"woman", "man", "nonbinary"}


def _check_password(value: str) -> str:
    if not value.strip():
        raise ValueError("password must not be blank")
    if len(set(value)) < 5:
        raise ValueError("password needs at least 5 different characters")
    if value.lower() in _COMMON_PASSWORDS:
        raise ValueError("password is too common")
    return value


def age_on(birth_date: dt.date, today: dt.date) -> int:
    """Whole years between ``birth_date`` and ``today``."""
    before_birthday = (today.month, today.day) < (birth_date.month, birth_date.day)
    return today.year - birth_date.year - int(before_birthday)


def _check_birth_date(value: dt.date) -> dt.date:
    age = age_on(value, dt.datetime.now(dt.UTC).date())
    if age < MIN_AGE:
        raise ValueError(f"you must be at least {MIN_AGE} years old")
    if age > MAX_AGE:
        raise ValueError("birth date is not plausible")
    return value


def _normalise_email(value: str) -> str:
    return value.strip().lower()


def _check_display_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("display name must not be blank")
    if any(ch.isprintable() is False for ch in value):
        raise ValueError("display name must not contain control characters")
    return value


Password = Annotated[
    str, Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX), AfterValidator(_check_password)
]
Email = Annotated[EmailStr, Field(max_length=254), AfterValidator(_normalise_email)]
DisplayName = Annotated[
    str, Field(min_length=1, max_length=50), AfterValidator(_check_display_name)
]
BirthDate = Annotated[dt.date, AfterValidator(_check_birth_date)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterIn(_Input):
    email: Email
    password: Password
    birth_date: BirthDate
    display_name: DisplayName
    gender: Gender

    @model_validator(mode="after")
    def _password_is_not_email(self) -> RegisterIn:
        if self.password.lower() in (self.email, self.email.partition("@")[0]):
            raise ValueError("password must not be the email address")
        return self


class LoginIn(_Input):
    # Not EmailStr: any string is "unknown credentials", never a hint about the address.
    email: Annotated[str, Field(min_length=1, max_length=254), AfterValidator(_normalise_email)]
    password: Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX)]


class RefreshIn(_Input):
    refresh_token: Annotated[str, Field(min_length=1, max_length=200)]


class PasswordChangeIn(_Input):
    current_password: Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX)]
    new_password: Password


class ResetRequestIn(_Input):
    email: Annotated[str, Field(min_length=1, max_length=254), AfterValidator(_normalise_email)]


class ResetConfirmIn(_Input):
    token: Annotated[str, Field(min_length=1, max_length=200)]
    new_password: Password


class VerifyEmailIn(_Input):
    code: Annotated[str, Field(pattern=r"^[0-9]{6}$")]


class DeleteAccountIn(_Input):
    password: Annotated[str, Field(min_length=1, max_length=PASSWORD_MAX)]


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth2 scheme name)
    expires_in: int


class Me(BaseModel):
    id: int
    email: str
    email_verified: bool
    is_admin: bool
    created_at: dt.datetime
    has_profile: bool
    profile_complete: bool


class Accepted(BaseModel):
    status: Literal["accepted"] = "accepted"

"""``/api/auth``: register, login, refresh, logout, email verification, passwords, deletion.

Thin handlers: validation in :mod:`api.schemas.auth`, logic in :mod:`api.services.accounts`
and :mod:`api.services.sessions`. Each handler commits its transaction and only then touches
Redis (token version, safety event) or queues mail, so nothing is announced that could still
roll back.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request, Response, status

from api.deps import CurrentUser, RedisDep, SessionDep, SettingsDep, StateDep
from api.errors import Conflict
from api.schemas.auth import (
    Accepted,
    DeleteAccountIn,
    LoginIn,
    Me,
    PasswordChangeIn,
    RefreshIn,
    RegisterIn,
    ResetConfirmIn,
    ResetRequestIn,
    TokenPair,
    VerifyEmailIn,
)
from api.services import accounts
from api.services import sessions as refresh
from api.services.mail import Mail, send_in_background
from api.services.passwords import PasswordPool, pool_for
from api.services.ratelimit import limit
from api.services.storage import delete_quietly, storage_for
from common.models import Profile, User
from common.settings import Settings

router = APIRouter(prefix="/api/auth", tags=["auth"])


async def get_pool(settings: SettingsDep) -> PasswordPool:
    return pool_for(threads=settings.password_hash_threads, wait_s=settings.password_hash_wait_s)


PoolDep = Annotated[PasswordPool, Depends(get_pool)]


def client_ip(request: Request) -> str:
    """The peer address (uvicorn has already applied trusted proxy headers)."""
    return request.client.host if request.client else "unknown"


def _code_mail(to: str, code: str, settings: Settings) -> Mail:
    minutes = settings.email_code_ttl_s // 60
    return Mail(
        to=to,
        subject="Your MergeMeet verification code",
        body=f"Your code is {code}. It expires in {minutes} minutes.",
        kind=accounts.VERIFY_EMAIL,
    )


async def _me(session: SessionDep, user: User) -> Me:
    profile = await session.get(Profile, user.id)
    return Me(
        id=user.id,
        email=user.email,
        email_verified=user.email_verified_at is not None,
        is_admin=user.is_admin,
        created_at=user.created_at,
        has_profile=profile is not None,
        profile_complete=bool(profile and profile.is_complete),
    )


@router.post("/register", response_model=TokenPair, status_code=status.HTTP_201_CREATED)
async def register(
    data: RegisterIn,
    request: Request,
    tasks: BackgroundTasks,
    session: SessionDep,
    redis: RedisDep,
    state: StateDep,
    pool: PoolDep,
) -> TokenPair:
    """Create an account and log it in; a verification code is mailed to the address."""
    settings = state.settings
    ip = client_ip(request)
    await limit(redis, f"register:ip:{ip}", max_hits=settings.register_ip_max, window_s=3600)
    user = await accounts.register(session, redis, data=data, pool=pool)
    code = await accounts.new_email_code(session, settings=settings, user=user)
    pair = await refresh.start_session(session, user=user, settings=settings, keys=state.keys)
    await session.commit()
    send_in_background(tasks, settings, _code_mail(user.email, code, settings))
    return pair


@router.post("/login", response_model=TokenPair)
async def login(
    data: LoginIn,
    request: Request,
    session: SessionDep,
    redis: RedisDep,
    state: StateDep,
    pool: PoolDep,
) -> TokenPair:
    """Exchange email and password for an access token and a refresh token."""
    user = await accounts.authenticate(
        session,
        redis,
        pool=pool,
        settings=state.settings,
        email=data.email,
        password=data.password,
        ip=client_ip(request),
    )
    pair = await refresh.start_session(session, user=user, settings=state.settings, keys=state.keys)
    await session.commit()
    return pair


@router.post("/refresh", response_model=TokenPair)
async def refresh_tokens(data: RefreshIn, session: SessionDep, state: StateDep) -> TokenPair:
    """Trade a refresh token for a new pair; reusing an old one ends that login everywhere."""
    return await refresh.rotate(
        session, token=data.refresh_token, settings=state.settings, keys=state.keys
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def logout(data: RefreshIn, user: CurrentUser, session: SessionDep) -> Response:
    """Log this device out: its refresh token and the ones before it stop working."""
    await refresh.revoke_family_of(session, user_id=user.id, token=data.refresh_token)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/logout-all", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def logout_all(user: CurrentUser, session: SessionDep, redis: RedisDep) -> Response:
    """Log out every device: all tokens issued so far stop working, open sockets close."""
    version = await accounts.bump_token_version(session, user)
    await session.commit()
    await accounts.announce_token_version(redis, user.id, version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=Me)
async def me(user: CurrentUser, session: SessionDep) -> Me:
    """The signed-in account."""
    return await _me(session, user)


@router.post("/email/verify", response_model=Me)
async def verify_email(
    data: VerifyEmailIn, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Me:
    """Confirm the email address with the 6-digit code that was mailed to it."""
    await accounts.verify_email(session, settings=settings, user=user, code=data.code)
    await session.commit()
    return await _me(session, user)


@router.post("/email/resend", response_model=Accepted, status_code=status.HTTP_202_ACCEPTED)
async def resend_code(
    user: CurrentUser,
    tasks: BackgroundTasks,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
) -> Accepted:
    """Mail a new verification code; earlier codes stop working."""
    await limit(redis, f"email-code:{user.id}", max_hits=5, window_s=3600)
    if user.email_verified_at is not None:
        raise Conflict("email already verified", code="already_verified")
    code = await accounts.new_email_code(session, settings=settings, user=user)
    await session.commit()
    send_in_background(tasks, settings, _code_mail(user.email, code, settings))
    return Accepted()


@router.post("/password", response_model=TokenPair)
async def change_password(
    data: PasswordChangeIn,
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
    state: StateDep,
    pool: PoolDep,
) -> TokenPair:
    """Change the password: every other session ends, this one gets fresh tokens."""
    settings = state.settings
    await accounts.check_password(
        redis, pool=pool, settings=settings, user=user, password=data.current_password
    )
    version = await accounts.change_password(
        session, pool=pool, user=user, password=data.new_password
    )
    pair = await refresh.start_session(session, user=user, settings=settings, keys=state.keys)
    await session.commit()
    await accounts.announce_token_version(redis, user.id, version)
    return pair


@router.post(
    "/password-reset/request", response_model=Accepted, status_code=status.HTTP_202_ACCEPTED
)
async def request_reset(
    data: ResetRequestIn,
    request: Request,
    tasks: BackgroundTasks,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
) -> Accepted:
    """Mail a single-use reset link if the address has an account (the answer is the same)."""
    await limit(redis, f"reset:ip:{client_ip(request)}", max_hits=20, window_s=3600)
    await limit(redis, f"reset:email:{accounts.email_key(data.email)}", max_hits=5, window_s=3600)
    token = await accounts.start_reset(session, settings=settings, email=data.email)
    await session.commit()
    if token is not None:
        minutes = settings.reset_token_ttl_s // 60
        mail = Mail(
            to=data.email,
            subject="Reset your MergeMeet password",
            body=f"Your reset token is {token} . It works once, within {minutes} minutes.",
            kind=accounts.RESET_PASSWORD,
        )
        send_in_background(tasks, settings, mail)
    return Accepted()


@router.post(
    "/password-reset/confirm", status_code=status.HTTP_204_NO_CONTENT, response_class=Response
)
async def confirm_reset(
    data: ResetConfirmIn,
    request: Request,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
    pool: PoolDep,
) -> Response:
    """Set a new password with a reset token; every existing session ends."""
    await limit(redis, f"reset-confirm:ip:{client_ip(request)}", max_hits=20, window_s=3600)
    user = await accounts.finish_reset(
        session, pool=pool, settings=settings, token=data.token, password=data.new_password
    )
    await session.commit()
    await accounts.announce_token_version(redis, user.id, user.token_version)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/me", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_me(
    data: DeleteAccountIn,
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
    pool: PoolDep,
) -> Response:
    """Delete the account: profile and photos go, messages stay shown as from a deleted user."""
    await accounts.check_password(
        redis, pool=pool, settings=settings, user=user, password=data.password
    )
    user_id = user.id
    keys = await accounts.delete_account(session, user=user)
    await session.commit()
    await accounts.announce_token_version(redis, user_id, user.token_version)
    await delete_quietly(storage_for(settings), keys)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

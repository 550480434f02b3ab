"""Pinterest's OAuth endpoints (API v5): exchanging an authorization code, refreshing, minting a
conversion token, and the sign-in URL. Plain calls; what to do with the answers is tokens.py's."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import httpx
import msgspec

SCOPES = "ads:read,ads:write"
DEFAULT_AUTHORIZE_URL = "https://www.pinterest.com/oauth/"


class TokenAnswer(msgspec.Struct):
    access_token: str
    expires_in: int
    refresh_token: str | None = None
    refresh_token_expires_in: int | None = None
    scope: str | None = None


class ConversionToken(msgspec.Struct):
    access_token: str


class Refused(Exception):
    """Pinterest refused the grant or the token (a 4xx): retrying will not help; connect again."""


class Unavailable(Exception):
    """No answer, or a 5xx or 429: try again later."""


def authorize_url(base: str, app_id: str, redirect_uri: str, state: str) -> str:
    return f"{base}?" + urlencode({"client_id": app_id, "redirect_uri": redirect_uri, "response_type": "code",
                                   "scope": SCOPES, "state": state})


def _basic(app_id: str, app_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{app_id}:{app_secret}".encode()).decode()


async def refresh(http: httpx.AsyncClient, api_base: str, app_id: str, app_secret: str,
                  refresh_token: str) -> TokenAnswer:
    """A new access token, and with continuous refresh a new refresh token replacing this one."""
    return await _token(http, api_base, app_id, app_secret, {
        "grant_type": "refresh_token", "refresh_token": refresh_token, "continuous_refresh": "true"})


async def exchange_code(http: httpx.AsyncClient, api_base: str, app_id: str, app_secret: str, code: str,
                        redirect_uri: str) -> TokenAnswer:
    return await _token(http, api_base, app_id, app_secret, {
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri})


async def conversion_token(http: httpx.AsyncClient, api_base: str, access_token: str) -> str:
    """A long-lived token for the Conversions API only, minted with an OAuth access token."""
    response = await _post(http, f"{api_base.rstrip('/')}/v5/oauth/conversion_token",
                           headers={"Authorization": f"Bearer {access_token}"})
    return _decoded(response, ConversionToken).access_token


async def _token(http, api_base: str, app_id: str, app_secret: str, form: dict[str, str]) -> TokenAnswer:
    response = await _post(http, f"{api_base.rstrip('/')}/v5/oauth/token", data=form,
                           headers={"Authorization": _basic(app_id, app_secret)})
    return _decoded(response, TokenAnswer)


async def _post(http: httpx.AsyncClient, url: str, **kwargs) -> httpx.Response:
    try:
        response = await http.post(url, **kwargs)
    except httpx.HTTPError as exc:
        raise Unavailable(f"could not reach Pinterest: {type(exc).__name__}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise Unavailable(f"Pinterest answered HTTP {response.status_code}")
    if response.status_code != 200:
        raise Refused(_message(response))
    return response


def _decoded(response: httpx.Response, kind):
    try:
        return msgspec.json.decode(response.content, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise Unavailable("Pinterest's answer could not be read") from None


def _message(response: httpx.Response) -> str:
    """Pinterest's own words ({"code", "message"}), never a token."""
    try:
        message = msgspec.json.decode(response.content).get("message")
    except (msgspec.DecodeError, AttributeError):
        message = None
    return f"HTTP {response.status_code}: {message or 'refused'}"

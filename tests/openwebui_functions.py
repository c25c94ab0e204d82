"""Open WebUI 0.12.4 calling a Function, in process: the one driver the Function unit tests use.

Read from the 0.12.4 wheel: ``utils/plugin.py`` (``replace_imports`` then ``exec`` into a fresh
module; the instance of ``Pipe`` or ``Filter`` is "the function module"), ``functions.py``
(``generate_function_chat_completion``: ``metadata`` popped from the body, arguments passed by name
when the signature asks for them, the event emitter only with session, chat and message ids, user
valves as ``__user__["valves"]``, a new ``Valves`` object every call) and ``utils/filter.py``
(``get_filter_params``: ``body`` plus the named extras and ``__id__``). Bodies come from
:class:`helix_pipeline.openwebui.OpenWebUIChat`, built from the real captures in ``fixtures/``.
"""

from __future__ import annotations

import inspect
import sys
import types
import uuid
from collections.abc import AsyncGenerator, Iterator
from typing import Any

IMPORT_REWRITES = {
    "from utils": "from open_webui.utils",
    "from apps": "from open_webui.apps",
    "from main": "from open_webui.main",
    "from config": "from open_webui.config",
}
"""What 0.12.4's ``replace_imports`` rewrites, as plain text, anywhere in a Function's file."""


def load_function(source: str, function_id: str) -> Any:
    """The Function instance Open WebUI makes from ``source`` (as pasted in Admin Panel > Functions)."""
    for old, new in IMPORT_REWRITES.items():
        source = source.replace(old, new)
    name = f"function_{function_id}_{uuid.uuid4().hex}"
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        exec(compile(source, f"<function {function_id}>", "exec"), module.__dict__)
    finally:
        sys.modules.pop(name, None)
    for kind in ("Pipe", "Filter"):
        if hasattr(module, kind):
            return getattr(module, kind)()
    raise AssertionError("no Pipe or Filter class in the Function")


def open_webui_user(user: dict[str, Any]) -> dict[str, Any]:
    """``UserModel.model_dump()``: what a Function gets as ``__user__`` (before its valves)."""
    return {
        "id": user["id"],
        "email": user.get("email", f"{user['id']}@example.com"),
        "username": None,
        "role": user.get("role", "user"),
        "name": user.get("name", user["id"]),
        "profile_image_url": "/user.png",
        "last_active_at": 1_795_647_989,
        "updated_at": 1_795_647_989,
        "created_at": 1_795_647_989,
    }


class Events:
    """An ``__event_emitter__`` that keeps what it was sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def __call__(self, event: dict[str, Any]) -> None:
        self.sent.append(event)

    @property
    def statuses(self) -> list[dict[str, Any]]:
        return [e["data"] for e in self.sent if e.get("type") == "status"]

    @property
    def descriptions(self) -> list[str]:
        return [s["description"] for s in self.statuses]


def _apply_valves(function: Any, valves: dict[str, Any] | None) -> None:
    if hasattr(function, "valves") and hasattr(function, "Valves"):
        saved = {k: v for k, v in (valves or {}).items() if v is not None}
        function.valves = function.Valves(**saved)


def _user_param(function: Any, user: dict[str, Any], user_valves: dict[str, Any] | None) -> Any:
    dumped = open_webui_user(user)
    if hasattr(function, "UserValves"):
        dumped["valves"] = function.UserValves(**(user_valves or {}))
    return dumped


async def call_pipe(
    function: Any,
    form_data: dict[str, Any],
    user: dict[str, Any],
    *,
    events: Events | None = None,
    valves: dict[str, Any] | None = None,
    user_valves: dict[str, Any] | None = None,
) -> list[Any] | str:
    """``generate_function_chat_completion``: a list of what was streamed, or the whole text."""
    form_data = dict(form_data)
    metadata = form_data.pop("metadata", {})
    emitter = None
    if metadata and all(k in metadata for k in ("session_id", "chat_id", "message_id")):
        emitter = events or Events()
    extra = {
        "__event_emitter__": emitter,
        "__event_call__": None,
        "__chat_id__": metadata.get("chat_id"),
        "__session_id__": metadata.get("session_id"),
        "__message_id__": metadata.get("message_id"),
        "__task__": metadata.get("task"),
        "__task_body__": metadata.get("task_body"),
        "__files__": metadata.get("files") or [],
        "__user__": _user_param(function, user, user_valves),
        "__metadata__": metadata,
        "__oauth_token__": None,
        "__request__": None,
        "__tools__": metadata.get("tools", {}),
    }
    _apply_valves(function, valves)
    pipe = function.pipe
    sig = inspect.signature(pipe)
    params = {"body": form_data} | {k: v for k, v in extra.items() if k in sig.parameters}
    res = await pipe(**params) if inspect.iscoroutinefunction(pipe) else pipe(**params)
    if form_data.get("stream", False):
        if isinstance(res, str):
            return [res]
        if isinstance(res, Iterator):
            return list(res)
        if isinstance(res, AsyncGenerator):
            return [line async for line in res]
        raise AssertionError(f"a pipe returned {type(res).__name__} to a stream request")
    if isinstance(res, str):
        return res
    if isinstance(res, Iterator):
        return "".join(map(str, res))
    if isinstance(res, AsyncGenerator):
        return "".join([str(line) async for line in res])
    raise AssertionError(f"a pipe returned {type(res).__name__}")


async def call_filter(
    function: Any,
    kind: str,
    form_data: dict[str, Any],
    user: dict[str, Any],
    *,
    events: Events | None = None,
    valves: dict[str, Any] | None = None,
    user_valves: dict[str, Any] | None = None,
    function_id: str = "helix_session_filter",
) -> Any:
    """``process_filter_function`` for ``inlet`` or ``outlet``; the body it returns."""
    metadata = form_data.get("metadata") or {}
    extra = {
        "__event_emitter__": events or Events(),
        "__event_call__": None,
        "__user__": open_webui_user(user),
        "__metadata__": metadata,
        "__request__": None,
        "__model__": {"id": form_data.get("model")},
        "__id__": function_id,
    }
    if kind == "inlet":
        extra |= {
            "__oauth_token__": None,
            "__chat_id__": metadata.get("chat_id"),
            "__message_id__": metadata.get("message_id"),
        }
    _apply_valves(function, valves)
    handler = getattr(function, kind)
    sig = inspect.signature(handler)
    params = {"body": form_data} | {k: v for k, v in extra.items() if k in sig.parameters}
    if "__user__" in params and hasattr(function, "UserValves"):
        params["__user__"]["valves"] = function.UserValves(**(user_valves or {}))
    if inspect.iscoroutinefunction(handler):
        return await handler(**params)
    return handler(**params)

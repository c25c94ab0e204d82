"""The captured runs of Open WebUI 0.6.43, 0.10.2 and 0.12.4, read into one shape.

Each release was run for real in front of the real Pipelines server (``tests/fixtures/``, see its
README), and each run was saved in its own layout: 0.12.4 as what a capturing filter received
(``filter.jsonl``: ``{ts, hook, body, user}``), 0.6.43 and 0.10.2 as every HTTP request the
Pipelines server got (``pipelines_http.jsonl``: ``{ts, path, headers, body}``, a filter's body
being ``{"body", "user"}``). :class:`Release` reads either into ``{ts, hook, body, user}`` records
of what Open WebUI sent to a filter's inlet and outlet, in order, so one replay
(:class:`tests.pipelines_server.OpenWebUI`) serves every release. Nothing here starts anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

__all__ = [
    "OPENWEBUI_0_6",
    "OPENWEBUI_0_10",
    "OPENWEBUI_0_12",
    "RELEASES",
    "Release",
    "as_edit",
    "chat_of",
    "chat_turns",
    "hook_records",
    "is_task",
    "message_text",
    "reply_text",
    "rewrite",
]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CAPTURE_FILTER = "helix_session_filter"
"""In the 0.6.43 and 0.10.2 runs, the filter every request passed first (``pipelines: ["*"]``,
ahead of the manifold): its records are what Open WebUI itself sent."""


@dataclass(frozen=True)
class Release:
    """One captured Open WebUI release: where its run is and the ids it used."""

    version: str
    user_id: str
    """The user of the captured run."""
    chat_a: str
    """Chat A: three streamed turns, then a regeneration of the third reply (and, in 0.12.4, an
    edit of the second message)."""
    model: str
    """The model chat A talked to in the run."""
    hooks_file: str
    """The records of filter inlets and outlets, relative to :attr:`folder`."""
    pipe_file: str
    """The records of ``pipe()`` bodies, relative to :attr:`folder`."""

    @property
    def folder(self) -> Path:
        return FIXTURES / f"openwebui-{self.version}"

    def __str__(self) -> str:
        return self.version

    @cached_property
    def hook_records(self) -> list[dict[str, Any]]:
        """Every filter inlet and outlet of the run, as ``{ts, hook, body, user}``, in order."""
        return hook_records(self.folder / self.hooks_file)

    def records(self, chat_id: str | None = None) -> list[dict[str, Any]]:
        """The inlets and outlets of one chat (chat A by default), tasks included, in order."""
        wanted = chat_id or self.chat_a
        return [r for r in self.hook_records if chat_of(r["body"]) == wanted]

    @cached_property
    def tools(self) -> list[dict[str, Any]] | None:
        """The tool specs the release adds to a chat turn's pipe body (0.6 adds none)."""
        for line in (self.folder / self.pipe_file).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            body = record.get("body")
            if isinstance(body, dict) and body.get("tools"):
                return list(body["tools"])
        return None


def hook_records(path: Path) -> list[dict[str, Any]]:
    """Filter inlet and outlet records from either capture layout, as ``{ts, hook, body, user}``."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "hook" in record:  # 0.12.4: what a capturing filter (or pipe) received
            if record["hook"] in ("inlet", "outlet"):
                records.append(record)
            continue
        owner, _, hook = record["path"].strip("/").partition("/filter/")
        if owner == CAPTURE_FILTER and hook in ("inlet", "outlet"):
            sent = record["body"]
            records.append(
                {"ts": record["ts"], "hook": hook, "body": sent["body"], "user": sent["user"]}
            )
    return records


def chat_of(body: Mapping[str, Any]) -> str | None:
    """The chat id of an inlet (``metadata.chat_id``) or an outlet (top-level ``chat_id``)."""
    metadata = body.get("metadata") or {}
    chat_id = metadata.get("chat_id") or body.get("chat_id")
    return str(chat_id) if chat_id else None


def is_task(record: Mapping[str, Any]) -> bool:
    return bool((record["body"].get("metadata") or {}).get("task"))


def chat_turns(records: Sequence[Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
    """The chat turns of a recorded chat, each its inlet and the outlet that followed (tasks left
    out; a turn whose outlet never came is its inlet alone)."""
    turns: list[list[dict[str, Any]]] = []
    for record in records:
        if record["hook"] == "inlet" and not is_task(record):
            turns.append([dict(record)])
        elif record["hook"] == "outlet" and turns and len(turns[-1]) == 1:
            turns[-1].append(dict(record))
    return turns


def rewrite(value: Any, replacements: Mapping[str, str]) -> Any:
    """A deep copy of ``value`` with every string equal to a key replaced by its value."""
    if isinstance(value, str):
        return replacements.get(value, value)
    if isinstance(value, list):
        return [rewrite(item, replacements) for item in value]
    if isinstance(value, dict):
        return {key: rewrite(item, replacements) for key, item in value.items()}
    return value


def as_edit(
    turn: Sequence[Mapping[str, Any]], text: str, question_id: str, reply_id: str
) -> list[dict[str, Any]]:
    """A recorded turn (its inlet and outlet) as Open WebUI sends an edit of its user message.

    The edited message is a new sibling of the old one: the turn as it was sent, with ``text`` in
    place of the old text and new ids for the message and its reply. (0.12.4's recorded edit of
    its second message differs from that turn in these and in times alone: see test_releases.)
    """
    outlet = next(r for r in turn if r["hook"] == "outlet")
    question, reply = outlet["body"]["messages"][-2:]
    swaps = {question["id"]: question_id, reply["id"]: reply_id, question["content"]: text}
    return [{**record, "body": rewrite(record["body"], swaps)} for record in turn]


def message_text(message: Mapping[str, Any]) -> str:
    """A recorded message's text as the capture holds it: ``content``, or for a 0.10 reply (whose
    ``content`` is empty) ``output[0].content[0].text``. Read from the captured shape, not by the
    package's rule, so that a test of that rule does not lean on it."""
    content = message.get("content")
    if content:
        return str(content)
    output = message.get("output") or [{}]
    parts = output[0].get("content") or [{}]
    return str(parts[0].get("text") or "")


def reply_text(outlet_body: Mapping[str, Any]) -> str:
    """The text of the reply an outlet reports (its last message)."""
    return message_text(outlet_body["messages"][-1])


OPENWEBUI_0_6 = Release(
    version="0.6.43",
    user_id="cd70eb00-0ceb-49f7-aded-6f53080e0071",
    chat_a="45a76fbd-1ad1-402d-95b3-a773554fc620",
    model="helix.helix-consultant",
    hooks_file="pipelines_http.jsonl",
    pipe_file="pipelines_http.jsonl",
)
OPENWEBUI_0_10 = Release(
    version="0.10.2",
    user_id="69546bff-70e7-43f4-8c47-0ce9bbc956bb",
    chat_a="4dfe38fe-92cd-4e51-bec7-ab689a1d7e35",
    model="helix.helix-consultant",
    hooks_file="pipelines_http.jsonl",
    pipe_file="pipelines_http.jsonl",
)
OPENWEBUI_0_12 = Release(
    version="0.12.4",
    user_id="55add4cf-2ad0-40f4-9334-c6eb6d9eacf1",
    chat_a="8854fe74-68d4-4c99-9c9d-c0d0c58e1887",
    model="helix-test",
    hooks_file="run1_forward_headers/filter.jsonl",
    pipe_file="run1_forward_headers/pipe.jsonl",
)
RELEASES = (OPENWEBUI_0_6, OPENWEBUI_0_10, OPENWEBUI_0_12)

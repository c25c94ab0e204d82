"""Listen to Open WebUI's socket as the browser does; run by Open WebUI's own Python (python-socketio).

    python openwebui_socket.py URL TOKEN

Connects to ``URL/ws/socket.io`` with the account's token (the browser's ``auth: {token}``), prints
``{"sid": ...}`` once connected, then every ``events`` message Open WebUI sends to that account as
one JSON line, until it is stopped. :class:`tests.openwebui_server.SocketListener` runs it.
"""

from __future__ import annotations

import asyncio
import json
import sys

import socketio  # type: ignore[import-not-found]  # Open WebUI's venv has it, ours need not


async def listen(url: str, token: str) -> None:
    client = socketio.AsyncClient(reconnection=False)

    @client.on("events")  # type: ignore[misc]
    async def on_event(data: object) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    await client.connect(
        url, socketio_path="/ws/socket.io", auth={"token": token}, transports=["websocket"]
    )
    sys.stdout.write(json.dumps({"sid": client.get_sid()}) + "\n")
    sys.stdout.flush()
    await client.wait()


if __name__ == "__main__":
    asyncio.run(listen(sys.argv[1], sys.argv[2]))

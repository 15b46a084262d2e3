"""WebSocket interop with a client no one here wrote: Python's `websockets`.

Run by tests/websocket.rs (`python_websockets_over_ws_and_wss`):

    python3 tests/ws/interop.py WS_URL WSS_URL CA_FILE

Over ws:// and then wss:// (trusting CA_FILE), as user py-ws / py-wss: logs
in, subscribes to group 1, waits for a PUBLISHED from the test's TCP client
`tcp` (which publishes once it sees this user in `WHO 0 1`), publishes back
`echo:` and that payload, and closes cleanly. Then checks that a handshake
offering only the subprotocol `chat` is refused with HTTP 400
(`InvalidStatus`). Prints `OK ...` lines; any failure raises (exit 1), and a
missing `websockets` package fails the import: never a skip.

The asyncio client, not `websockets.sync`: the sync client reads the
socket on a background thread while it writes the upgrade request, and
Python's `ssl` sockets are not safe for that; about one wss handshake in
600 lost its request when a TLS 1.3 session ticket arrived meanwhile (the
request never reached the wire: python-websockets issue 1648 is the same).
"""

import asyncio
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK, InvalidStatus

SUBPROTOCOL = "switchboard.v1"
TIMEOUT = 10
PUSHES = ("PUBLISHED", "MESSAGE", "JOINED", "PARTED", "PING")


def parse(message):
    """One switchboard frame, the whole of one WebSocket message."""
    data = message.encode() if isinstance(message, str) else message
    head, sep, payload = data.partition(b"\n")
    assert sep, f"no header line in {data!r}"
    parts = head.decode("ascii").split()
    kind, length, args = parts[0], int(parts[1]), parts[2:]
    assert len(payload) == length, f"one message, one frame: {data!r}"
    return kind, args, payload


async def recv(ws):
    return parse(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def reply(ws):
    """The next reply, and the pushed frames that came before it."""
    pushes = []
    while True:
        kind, args, payload = await recv(ws)
        if kind in PUSHES:
            pushes.append((kind, args, payload))
            continue
        return (kind, args, payload), pushes


async def expect_ack(ws, line):
    await ws.send(line)
    (kind, args, payload), pushes = await reply(ws)
    assert kind == "ACK", f"{line!r}: expected ACK, got {kind} {args} {payload!r}"
    return pushes


async def session(url, user, ctx):
    async with connect(
        url,
        subprotocols=[SUBPROTOCOL],
        ssl=ctx,
        proxy=None,
        compression=None,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        ping_interval=None,
    ) as ws:
        assert ws.subprotocol == SUBPROTOCOL, ws.subprotocol
        await expect_ack(ws, f"USER 0 {user}")
        await expect_ack(ws, "SUBSCRIBE 0 1")
        # The TCP client publishes once it sees us subscribed.
        kind, args, payload = await recv(ws)
        assert (kind, args) == ("PUBLISHED", ["tcp", "1"]), (kind, args, payload)
        assert payload == f"hello {user}".encode(), payload
        back = b"echo:" + payload
        # Bytes: a binary message.
        await ws.send(b"PUBLISH %d 1\n%s" % (len(back), back))
        (kind, args, got), pushes = await reply(ws)
        assert kind == "ACK", (kind, args, got)
        # We are subscribed too: our own publish came back (before the ACK).
        assert pushes == [("PUBLISHED", [user, "1"], back)], pushes
        await ws.close()
        try:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
            raise AssertionError("a message after the close")
        except ConnectionClosedOK:
            pass
        assert ws.close_code == 1000, ws.close_code
    print(f"OK {user}", flush=True)


async def refused_subprotocol(url):
    try:
        async with connect(
            url,
            subprotocols=["chat"],
            proxy=None,
            compression=None,
            open_timeout=TIMEOUT,
        ):
            raise AssertionError("a handshake offering only `chat` was accepted")
    except InvalidStatus as e:
        status = e.response.status_code
        assert status == 400, f"expected HTTP 400, got {status}"
    print("OK refused chat", flush=True)


async def main():
    ws_url, wss_url, ca = sys.argv[1:4]
    await session(ws_url, "py-ws", None)
    ctx = ssl.create_default_context(cafile=ca)
    await session(wss_url, "py-wss", ctx)
    await refused_subprotocol(ws_url)


if __name__ == "__main__":
    asyncio.run(main())

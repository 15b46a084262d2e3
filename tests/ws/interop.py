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
"""

import ssl
import sys

from websockets.exceptions import ConnectionClosedOK, InvalidStatus
from websockets.sync.client import connect

SUBPROTOCOL = "switchboard.v1"
TIMEOUT = 10


def parse(message):
    """One switchboard frame, the whole of one WebSocket message."""
    data = message.encode() if isinstance(message, str) else message
    head, sep, payload = data.partition(b"\n")
    assert sep, f"no header line in {data!r}"
    parts = head.decode("ascii").split()
    kind, length, args = parts[0], int(parts[1]), parts[2:]
    assert len(payload) == length, f"one message, one frame: {data!r}"
    return kind, args, payload


def reply(ws):
    """The next reply; pushed frames before it are returned too."""
    pushes = []
    while True:
        kind, args, payload = parse(ws.recv(timeout=TIMEOUT))
        if kind in ("PUBLISHED", "MESSAGE", "JOINED", "PARTED", "PING"):
            pushes.append((kind, args, payload))
            continue
        return (kind, args, payload), pushes


def expect_ack(ws, line):
    ws.send(line)
    (kind, args, payload), pushes = reply(ws)
    assert kind == "ACK", f"{line!r}: expected ACK, got {kind} {args} {payload!r}"
    return pushes


def session(url, user, ctx):
    with connect(
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
        expect_ack(ws, f"USER 0 {user}")
        expect_ack(ws, "SUBSCRIBE 0 1")
        # The TCP client publishes once it sees us subscribed.
        kind, args, payload = parse(ws.recv(timeout=TIMEOUT))
        assert (kind, args) == ("PUBLISHED", ["tcp", "1"]), (kind, args, payload)
        assert payload == f"hello {user}".encode(), payload
        back = b"echo:" + payload
        ws.send(b"PUBLISH %d 1\n%s" % (len(back), back))
        (kind, args, got), pushes = reply(ws)
        assert kind == "ACK", (kind, args, got)
        # We are subscribed too: our own publish came back (before the ACK).
        assert pushes == [("PUBLISHED", [user, "1"], back)], pushes
        ws.close()
        try:
            ws.recv(timeout=TIMEOUT)
            raise AssertionError("a message after the close")
        except ConnectionClosedOK:
            pass
        assert ws.close_code == 1000, ws.close_code
    print(f"OK {user}", flush=True)


def refused_subprotocol(url):
    try:
        with connect(
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


def main():
    ws_url, wss_url, ca = sys.argv[1:4]
    session(ws_url, "py-ws", None)
    ctx = ssl.create_default_context(cafile=ca)
    session(wss_url, "py-wss", ctx)
    refused_subprotocol(ws_url)


if __name__ == "__main__":
    main()

"""The ceiling for a Python server on uvloop: a protocol that answers every
request head with a fixed response and parses nothing.

Not a server anyone should run: it shows how far from the event loop's own
cost (and from wrk's limit) each real server is.  Any head that contains
"Connection: close" gets its answer and the connection closed.

    python bench/ceiling_uvloop.py PORT
"""

import asyncio
import sys

import uvloop

BODY = b"Hello, world!"
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"
            % (len(BODY), BODY))


class Ceiling(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        buf = self.buf + data
        heads = buf.count(b"\r\n\r\n")
        if not heads:
            self.buf = buf
            return
        self.buf = buf[buf.rfind(b"\r\n\r\n") + 4:]
        self.transport.write(RESPONSE * heads)
        if b"onnection: close" in buf:
            self.transport.close()


async def main(port):
    server = await asyncio.get_running_loop().create_server(
        Ceiling, "127.0.0.1", port, backlog=2048)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))

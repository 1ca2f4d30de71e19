"""An HTTP server written with Python's standard library alone, the way many are: it
takes its listening socket from LISTEN_FDS (fd 3) and serves it with ThreadingHTTPServer.
On SIGTERM it refuses new connections at once (a connection it accepts from then on is
closed unanswered), stops its serving loop, and exits 100 ms later with os._exit,
without serving what is still queued on its socket."""

import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SD_LISTEN_FDS_START = 3


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"generation {os.environ.get('ZD_GENERATION', '?')}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sock):
        # The socket is already bound and listening: skip bind and listen, and serve the
        # inherited one instead of the one the base class makes.
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_name, self.server_port = sock.getsockname()[:2]
        self.stopping = threading.Event()

    def verify_request(self, request, client_address):
        # False: socketserver closes the connection without reading it.
        return not self.stopping.is_set()


def listener():
    if os.environ.get("LISTEN_FDS") != "1" or os.environ.get("LISTEN_PID") != str(os.getpid()):
        sys.exit("expected one listener in LISTEN_FDS, for this pid")
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def main():
    server = Server(listener())
    # SIGTERM is blocked before any thread starts, so every thread inherits the mask and
    # only the main thread's sigwait takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    serving = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    serving.start()
    signal.sigwait({signal.SIGTERM})
    # Refuse new connections from now on, ask the serving loop to stop (another thread:
    # shutdown waits for the loop, which checks its flag between accepts), and exit
    # without waiting for anything queued or half served. Until the loop sees its flag,
    # it still accepts what the kernel gives this process, and closes it unanswered.
    server.stopping.set()
    threading.Thread(target=server.shutdown, daemon=True).start()
    time.sleep(0.1)
    os._exit(0)


if __name__ == "__main__":
    main()

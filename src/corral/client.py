"""A small synchronous LUXI client for the CLI and scripts.

Layer: client (imports ``luxi``, ``errors``, ``layout`` only, so the CLI
starts fast). Errors from the master arrive as the same typed exceptions
the master raised (:func:`corral.errors.from_wire`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from corral import errors, layout, luxi
from corral.errors import DaemonError

TYPE_CHECKING = False  # not typing's: see corral.errors
if TYPE_CHECKING:
    from typing import Any

    from corral.paths import Paths  # not at run time: pathlib (see corral.layout)

FINAL_STATUSES = ("success", "error", "canceled")


class Client:
    def __init__(self, paths: Paths | None = None, timeout: float = 120.0) -> None:
        self.socket_path = str(paths.master_socket) if paths else layout.master_socket()
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""

    def _connect(self) -> socket.socket:
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            try:
                s.connect(self.socket_path)
            except (FileNotFoundError, ConnectionRefusedError) as err:
                s.close()
                raise DaemonError(
                    f"cannot reach the master daemon at {self.socket_path} "
                    f"({err.strerror}); is the cluster initialised and corral-masterd running?"
                ) from None
            except OSError as err:
                s.close()
                raise DaemonError(f"cannot connect to the master daemon: {err}") from None
            self._sock = s
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(self, method: str, args: list[Any]) -> Any:
        sock = self._connect()
        try:
            sock.sendall(luxi.encode_request(method, args))
            while luxi.ETX not in self._buf:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise DaemonError("the master daemon closed the connection")
                self._buf += chunk
        except OSError as err:
            self.close()
            raise DaemonError(f"lost the connection to the master daemon: {err}") from None
        msg, _, self._buf = self._buf.partition(luxi.ETX)
        reply = luxi.decode_reply(msg)
        if not reply.success:
            raise errors.from_wire(reply.result)
        return reply.result

    # --- convenience wrappers ----------------------------------------------------------

    def submit_job(self, ops: list[dict[str, Any]]) -> int:
        return int(self.call("SubmitJob", [ops]))

    def query(
        self, what: str, fields: list[str], qfilter: Any = None, names: list[str] | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.call("Query", [what, fields, qfilter, names])
        return result

    def wait_for_job(
        self, job_id: int, on_log: Callable[[list[Any]], None] | None = None
    ) -> list[Any]:
        """Wait for a job to finish, streaming its log; returns its op results.

        Raises the job's error if it failed.
        """
        status: str | None = None
        serial = 0
        while True:
            res = self.call(
                "WaitForJobChange", [job_id, ["status"], [status] if status else None, serial, 30.0]
            )
            if res == "nochange":
                continue
            (status,), entries = res
            for e in entries:
                serial = max(serial, e[0])
                if on_log:
                    on_log(e)
            if status in FINAL_STATUSES:
                break
        (row,) = self.call("QueryJobs", [[job_id], ["status", "opresult", "opstatus"]])
        status, results, opstatus = row
        if status == "success":
            return list(results)
        for st, r in zip(opstatus, results, strict=False):
            if st in ("error", "canceled") and isinstance(r, dict):
                raise errors.from_wire(r)
        raise errors.JobError(f"job {job_id} ended with status {status}")


def poll_until(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()

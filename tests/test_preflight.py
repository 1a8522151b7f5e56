"""The start-up check of a worker (`orchestrator.preflight`): one warning per service that does
not answer, naming its variable; none when both answer; never longer than its timeouts."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from orchestrator.preflight import check_services, warn_unreachable
from orchestrator.settings import Settings
from tests.servers import free_port


@contextmanager
def ingest_answering(status: int, port: int = 0) -> Iterator[str]:
    """An HTTP server whose /readyz answers `status`: the ingest app as the check sees it."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(status if self.path == "/readyz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def settings(tmp_path, **env: str) -> Settings:
    return Settings.from_env({"ARTIFACT_DIR": str(tmp_path / "artifacts"), "SPOOL_DIR": str(tmp_path / "spool"), **env})


def test_no_warning_when_ingest_is_ready_and_artifact_dir_can_be_made(tmp_path):
    with ingest_answering(200) as url:
        assert check_services(settings(tmp_path, INGEST_URL=url)) == []


def test_ingest_not_listening_is_named_with_its_variable(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    [warning] = check_services(settings(tmp_path, INGEST_URL=url))
    assert f"ingest does not answer at INGEST_URL={url}" in warning and "Connection refused" in warning
    assert "spool" in warning and "STARTING" in warning


def test_ingest_up_without_its_database_says_so(tmp_path):
    with ingest_answering(503) as url:
        [warning] = check_services(settings(tmp_path, INGEST_URL=url))
    assert "answers, but not its database" in warning


def test_something_else_at_ingest_url_is_called_out(tmp_path):
    with ingest_answering(404) as url:
        [warning] = check_services(settings(tmp_path, INGEST_URL=url))
    assert "HTTP 404" in warning and "ingest app" in warning


def test_a_silent_listener_costs_at_most_the_timeout(tmp_path):
    """A socket that accepts connections and never answers (a hung service, a black hole)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        [warning] = check_services(settings(tmp_path, INGEST_URL=url), timeout_s=0.3)
    assert time.monotonic() - started < 2
    assert "no answer within 0.3 s" in warning


def test_minio_not_answering_is_named_with_its_variable(tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    with ingest_answering(200) as url:
        [warning] = check_services(settings(tmp_path, INGEST_URL=url, MINIO_ENDPOINT=endpoint, MINIO_ACCESS_KEY="ak",
                                            MINIO_SECRET_KEY="sk-secret"))
    assert f"the object store at MINIO_ENDPOINT={endpoint} does not answer" in warning
    assert "Connection refused" in warning and "sk-secret" not in warning


def test_an_artifact_dir_that_cannot_be_made_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with ingest_answering(200) as url:
        [warning] = check_services(settings(tmp_path, INGEST_URL=url, ARTIFACT_DIR=str(blocker / "artifacts")))
    assert warning.startswith(f"ARTIFACT_DIR={blocker / 'artifacts'}") and "not a directory" in warning


def test_warnings_are_logged_after_the_patience_and_a_late_ingest_is_not_one(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="orchestrator.preflight")
    url = f"http://127.0.0.1:{free_port()}"
    found = warn_unreachable(settings(tmp_path, INGEST_URL=url), patience_s=0.5, interval_s=0.1)
    assert len(found) == 1 and [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == found
    caplog.clear()
    with ingest_answering(200) as ready:
        assert warn_unreachable(settings(tmp_path, INGEST_URL=ready), patience_s=5) == []
    [info] = [r.getMessage() for r in caplog.records]
    assert info.startswith(f"ingest at {ready} is ready; artifacts go to {tmp_path / 'artifacts'}")


def test_an_ingest_that_comes_up_within_the_patience_draws_no_warning(tmp_path):
    """honcho starts the worker and the web process together: gunicorn may answer a moment later."""
    port = free_port()
    result: list[list[str]] = []
    checker = threading.Thread(target=lambda: result.append(
        warn_unreachable(settings(tmp_path, INGEST_URL=f"http://127.0.0.1:{port}"), patience_s=10, interval_s=0.1)))
    checker.start()
    time.sleep(0.4)
    with ingest_answering(200, port):
        checker.join(15)
    assert result == [[]]

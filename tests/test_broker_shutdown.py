"""A worker told to stop takes no more messages from the broker (`tasks/broker.py`): its poll ends
as an empty one does, and the message stays in MongoDB for another worker."""

from __future__ import annotations

import uuid

import pytest
from celery.worker import state
from kombu import Connection, Exchange, Queue
from kombu.transport import mongodb

from tasks import broker, embedded_broker


def test_a_worker_told_to_stop_takes_no_more_messages_and_leaves_them_queued(monkeypatch) -> None:
    embedded_broker.register()
    queue = Queue(f"gpu-{uuid.uuid4().hex[:6]}", Exchange("probe", type="direct"), routing_key="probe")
    received: list[dict] = []
    with Connection("mongomock://localhost/broker", transport_options={"polling_interval": 0.01}) as conn:
        conn.Producer().publish({"n": 1}, exchange=queue.exchange, routing_key="probe", declare=[queue])
        with conn.Consumer(queue, callbacks=[lambda body, message: received.append(body)]):
            monkeypatch.setattr(state, "should_stop", 0)  # a warm shutdown's flag holds the exit code, 0
            with pytest.raises(TimeoutError):  # socket.timeout, how an empty poll ends
                conn.drain_events(timeout=5)
            assert received == []
            monkeypatch.setattr(state, "should_stop", None)
            conn.drain_events(timeout=5)  # the message was left in MongoDB: taken now
    assert received == [{"n": 1}]


def test_the_flags_are_celerys_own(monkeypatch) -> None:
    assert not broker.shutdown_requested()
    monkeypatch.setattr(state, "should_terminate", 1)
    assert broker.shutdown_requested()


def test_the_worker_uses_the_stop_aware_transport_for_mongodb_urls() -> None:
    import celeryconfig

    assert issubclass(broker.Transport, mongodb.Transport)
    assert issubclass(embedded_broker.Transport, broker.StopPollingAtShutdown)
    expected = None if celeryconfig._settings.embedded else "tasks.broker:Transport"
    assert celeryconfig.broker_transport == expected

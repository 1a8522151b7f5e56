"""The wire-level proxy of devtools (used by the fault tests and the bench): it forwards and
counts commands by name, and cuts the line one of two ways while the server stays up."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pymongo
import pytest
from pymongo.database import Database
from pymongo.errors import PyMongoError

from devtools.proxy import WireProxy
from tests.servers import MongoServer


@pytest.fixture
def proxy(real_server: MongoServer) -> Iterator[WireProxy]:
    port = int(real_server.url("x").split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    wire = WireProxy(port)
    yield wire
    wire.close()


def _client(proxy: WireProxy, db: Database) -> pymongo.MongoClient:
    return pymongo.MongoClient(proxy.url(db.name), serverSelectionTimeoutMS=1000, socketTimeoutMS=1000,
                               connectTimeoutMS=1000)


def test_it_forwards_and_counts_commands_by_name(proxy: WireProxy, real_db: Database) -> None:
    client = _client(proxy, real_db)
    try:
        proxy.counts(reset=True)
        client[real_db.name].proxied.insert_one({"a": 1})
        assert client[real_db.name].proxied.find_one({"a": 1})["a"] == 1
        counts = proxy.counts()
        assert counts["insert"] == 1 and counts["find"] == 1
    finally:
        client.close()


@pytest.mark.parametrize("mode", ["blackhole", "refuse"])
def test_a_cut_line_fails_calls_through_it_and_a_restored_one_serves_again(
    proxy: WireProxy, real_db: Database, mode: str
) -> None:
    client = _client(proxy, real_db)
    try:
        client[real_db.name].proxied.insert_one({"m": mode})
        proxy.cut(mode)
        began = time.monotonic()
        with pytest.raises(PyMongoError):
            client[real_db.name].proxied.find_one({"m": mode})
        assert time.monotonic() - began < 5
        assert real_db.proxied.find_one({"m": mode}), "the server itself stays up for everyone else"
        proxy.restore()
        deadline = time.monotonic() + 10
        while True:
            try:
                assert client[real_db.name].proxied.find_one({"m": mode})["m"] == mode
                break
            except PyMongoError:
                assert time.monotonic() < deadline, "the restored line never served"
                time.sleep(0.2)
    finally:
        client.close()

"""The ceilings' HTTP apps: a bare FastAPI route, and the same route with one confirmed publish."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aio_pika
from fastapi import FastAPI
from pydantic import BaseModel

QUEUE = "bench.ceiling"


class Small(BaseModel):
    name: str
    ip: str
    cpu_quantity: int


bare = FastAPI()


@bare.post("/bench")
async def bare_route(body: Small) -> dict[str, str]:
    return {}


@asynccontextmanager
async def _connect(app: FastAPI) -> AsyncIterator[None]:
    connection = await aio_pika.connect_robust(os.environ["REHOST_AMQP_URL"])
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    app.state.channel = channel
    yield
    await connection.close()


publishing = FastAPI(lifespan=_connect)


@publishing.post("/bench")
async def publishing_route(body: Small) -> dict[str, str]:
    message = aio_pika.Message(body.model_dump_json().encode(), delivery_mode=2)
    await publishing.state.channel.default_exchange.publish(message, routing_key=QUEUE)
    return {}
